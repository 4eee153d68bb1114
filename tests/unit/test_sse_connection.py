"""`SseConnection.write`: frames in order, a bound on a client that reads nothing, and a ``send`` driven exactly as
``await`` drives it, whether it completes at once (no timer) or waits (its rest runs under the timer).

The ``send`` here is a real coroutine function that waits on an `asyncio.Event` when told to: the waits are the
ones uvicorn's ``send`` makes while the socket's buffer is full.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable

import anyio
import pytest
from starlette.types import Message

from datapulse.errors import StreamClosed
from datapulse.sessions.streams import SseConnection

pytestmark = pytest.mark.anyio

ASKED: contextvars.ContextVar[str] = contextvars.ContextVar("asked", default="")


class Socket:
    """An ASGI ``send`` whose writes wait on ``drained`` while ``full``; records what it wrote and saw."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.full = False
        self.drained = asyncio.Event()
        self.cancelled = 0
        self.fail: Exception | None = None
        self.fail_after_wait: Exception | None = None
        self.contexts: list[str] = []
        self.entered = asyncio.Event()

    async def send(self, message: Message) -> None:
        self.contexts.append(ASKED.get())
        self.entered.set()
        if self.fail is not None:
            raise self.fail
        if self.full:
            try:
                await self.drained.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            if self.fail_after_wait is not None:
                raise self.fail_after_wait
        self.written.append(message["body"])


def stalled(observe_depth: Callable[[float], None] | None = None) -> tuple[Socket, SseConnection]:
    """A connection whose socket is full: every send waits until ``socket.drained`` is set."""
    socket = Socket()
    socket.full = True
    return socket, SseConnection(socket.send, slow_client_timeout_s=30, observe_depth=observe_depth)


async def test_a_frame_the_socket_takes_at_once_is_written_in_the_writers_context() -> None:
    socket = Socket()
    connection = SseConnection(socket.send, slow_client_timeout_s=30)
    ASKED.set("writer")
    with anyio.fail_after(5):
        await connection.write(b"data: 1\n\n")
    assert socket.written == [b"data: 1\n\n"]
    assert socket.contexts == ["writer"]
    assert not connection.closed


async def test_a_send_that_waits_for_the_socket_finishes_when_it_drains_and_frames_keep_their_order() -> None:
    third_queued = asyncio.Event()  # a writer that finds two before it has queued for the lock

    def observe_depth(waiting: float) -> None:
        if waiting == 2:
            third_queued.set()

    socket, connection = stalled(observe_depth)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(connection.write, b"a")
            await socket.entered.wait()
            tg.start_soon(connection.write, b"b")  # queued behind the waiting one (FIFO lock)
            tg.start_soon(connection.write, b"c")
            await third_queued.wait()
            assert socket.written == []
            socket.full = False
            socket.drained.set()
    assert socket.written == [b"a", b"b", b"c"]
    assert not connection.closed


async def test_a_client_that_reads_nothing_in_time_is_aborted_and_every_queued_writer_sees_the_stream_closed() -> None:
    socket = Socket()
    aborted: list[bool] = []
    connection = SseConnection(socket.send, slow_client_timeout_s=0.05, on_abort=lambda: aborted.append(True))
    socket.full = True
    outcomes: list[str] = []

    async def write(frame: bytes) -> None:
        try:
            await connection.write(frame)
            outcomes.append("written")
        except StreamClosed:
            outcomes.append("closed")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for frame in (b"a", b"b", b"c"):
                tg.start_soon(write, frame)
    assert outcomes == ["closed", "closed", "closed"]
    assert socket.cancelled == 1  # the timer's cancellation reached the send where it waited
    assert socket.written == []
    assert aborted == [True]
    assert connection.close_reason is not None
    assert "read nothing for 0.05 s" in connection.close_reason


async def test_a_writer_cancelled_while_its_send_waits_cancels_the_send_and_leaves_the_stream_usable() -> None:
    socket, connection = stalled()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(connection.write, b"a")
            await socket.entered.wait()
            tg.cancel_scope.cancel()
    assert socket.cancelled == 1
    assert not connection.closed
    socket.full = False
    with anyio.fail_after(5):
        await connection.write(b"b")
    assert socket.written == [b"b"]


REFUSALS = {
    "uvicorn-after-the-response-ended": RuntimeError("Unexpected ASGI message 'http.response.body' sent"),
    "socket-error": ConnectionResetError("Connection reset by peer"),
    "socket-timeout": TimeoutError("the send's own timeout, not the slow-client one"),
}


@pytest.mark.parametrize("refusal", list(REFUSALS.values()), ids=list(REFUSALS))
@pytest.mark.parametrize("after_wait", [False, True], ids=["at-once", "after-waiting"])
async def test_a_send_refused_by_the_server_closes_the_stream_for_the_writer_without_an_abort(
    after_wait: bool, refusal: Exception
) -> None:
    socket = Socket()
    aborted: list[bool] = []
    connection = SseConnection(socket.send, slow_client_timeout_s=30, on_abort=lambda: aborted.append(True))
    if after_wait:
        socket.full = True
        socket.fail_after_wait = refusal
    else:
        socket.fail = refusal
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def write() -> None:
                with pytest.raises(StreamClosed):
                    await connection.write(b"a")

            tg.start_soon(write)
            if after_wait:
                await socket.entered.wait()
                socket.drained.set()
    assert connection.closed
    assert connection.close_reason is None  # closed as gone, not abandoned by us
    assert aborted == []
    with pytest.raises(StreamClosed):
        await connection.write(b"b")


async def test_a_send_that_returns_another_awaitable_is_awaited_under_the_timer() -> None:
    loop = asyncio.get_running_loop()
    written: list[bytes] = []
    pending: list[asyncio.Future[None]] = []
    sent = asyncio.Event()

    def send(message: Message) -> Awaitable[None]:
        written.append(message["body"])
        future: asyncio.Future[None] = loop.create_future()
        pending.append(future)
        sent.set()
        return future

    connection = SseConnection(send, slow_client_timeout_s=0.05)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(connection.write, b"a")
            await sent.wait()
            pending[0].set_result(None)
        with pytest.raises(StreamClosed):  # the second one never completes: bounded by the timer
            await connection.write(b"b")
    assert written == [b"a", b"b"]
    assert connection.closed


async def test_only_a_send_that_waits_arms_the_slow_client_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    armed: list[float | None] = []
    real_timeout = asyncio.timeout

    def counting_timeout(delay: float | None) -> asyncio.Timeout:
        armed.append(delay)
        return real_timeout(delay)

    monkeypatch.setattr(asyncio, "timeout", counting_timeout)
    socket = Socket()
    connection = SseConnection(socket.send, slow_client_timeout_s=30)
    with anyio.fail_after(5):
        for frame in (b"a", b"b", b"c"):
            await connection.write(frame)
        assert armed == []
        socket.full = True
        socket.entered.clear()
        async with anyio.create_task_group() as tg:
            tg.start_soon(connection.write, b"d")
            await socket.entered.wait()
            socket.drained.set()
    assert armed == [30]
    assert socket.written == [b"a", b"b", b"c", b"d"]
