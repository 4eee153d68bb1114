"""The uvicorn adapter (``datapulse._uvicorn``): its seams in uvicorn, the write coalescing, and real responses
through it.

The coalescing itself is checked on a transport that records the writes it is handed (a system call cannot be
observed otherwise); the protocol is checked under real uvicorn with a raw socket client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from datapulse._uvicorn import CoalescedWrites, CoalescingHttpToolsProtocol, check_seams, http_protocol
from datapulse.config import Settings
from datapulse.server import uvicorn_config
from tests.support.asgi_serving import WAIT_S, serving

pytestmark = pytest.mark.anyio


def test_the_uvicorn_internals_the_coalescing_protocol_relies_on_still_hold() -> None:
    assert check_seams() == [], "uvicorn changed under datapulse._uvicorn: " + "; ".join(check_seams())


def test_datapulse_serves_with_the_coalescing_protocol() -> None:
    assert http_protocol() is CoalescingHttpToolsProtocol
    assert uvicorn_config(None, Settings()).http is CoalescingHttpToolsProtocol


class RecordingTransport(asyncio.Transport):
    """Records what reaches the real transport's place: each call, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[bytes]]] = []

    def write(self, data: Any) -> None:
        self.calls.append(("write", [bytes(data)]))

    def writelines(self, list_of_data: Any) -> None:
        self.calls.append(("writelines", [bytes(data) for data in list_of_data]))

    def close(self) -> None:
        self.calls.append(("close", []))

    def abort(self) -> None:
        self.calls.append(("abort", []))

    def write_eof(self) -> None:
        self.calls.append(("write_eof", []))

    def get_write_buffer_size(self) -> int:
        return 7

    def is_closing(self) -> bool:
        return self.peer_closed

    peer_closed = False


async def next_iteration() -> None:
    """Let the event loop run the callbacks scheduled so far (the flush is one of them)."""
    await asyncio.sleep(0)


async def test_writes_made_in_one_loop_iteration_reach_the_transport_as_one_call_at_its_end() -> None:
    inner = RecordingTransport()
    writes = CoalescedWrites(inner, asyncio.get_running_loop())
    writes.write(b"HTTP/1.1 200 OK\r\n\r\n")
    writes.write(b'{"ok":true}')
    assert inner.calls == []
    assert writes.get_write_buffer_size() == 7 + 19 + 11
    await next_iteration()
    assert inner.calls == [("writelines", [b"HTTP/1.1 200 OK\r\n\r\n", b'{"ok":true}'])]


async def test_a_lone_write_is_passed_on_as_it_is_and_a_later_write_goes_out_on_its_own() -> None:
    inner = RecordingTransport()
    writes = CoalescedWrites(inner, asyncio.get_running_loop())
    writes.write(b"head")
    await next_iteration()
    writes.writelines([b"frame 1", b"frame 2"])
    await next_iteration()
    await next_iteration()  # nothing left: no empty write
    assert inner.calls == [("write", [b"head"]), ("writelines", [b"frame 1", b"frame 2"])]


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        ("close", [("writelines", [b"a", b"b"]), ("close", [])]),
        ("write_eof", [("writelines", [b"a", b"b"]), ("write_eof", [])]),
        ("abort", [("abort", [])]),
    ],
)
async def test_close_and_write_eof_send_what_is_pending_first_and_abort_drops_it(
    end: str, expected: list[tuple[str, list[bytes]]]
) -> None:
    inner = RecordingTransport()
    writes = CoalescedWrites(inner, asyncio.get_running_loop())
    writes.write(b"a")
    writes.write(b"b")
    getattr(writes, end)()
    await next_iteration()  # the scheduled flush finds nothing left
    assert inner.calls == expected


async def test_writes_pending_when_the_peer_ends_the_connection_are_dropped_without_an_error() -> None:
    inner = RecordingTransport()
    writes = CoalescedWrites(inner, asyncio.get_running_loop())
    writes.write(b"too late")
    inner.peer_closed = True  # the connection was lost within the same loop iteration
    await next_iteration()
    assert inner.calls == []


async def json_answer(request: Request) -> JSONResponse:
    return JSONResponse({"echo": (await request.body()).decode()})


async def counted_stream(request: Request) -> StreamingResponse:
    async def frames() -> AsyncIterator[bytes]:
        for number in range(3):
            yield f"data: {number}\n\n".encode()

    return StreamingResponse(frames(), media_type="text/event-stream")


async def exchange(port: int, requests: bytes, until: bytes) -> bytes:
    """Send raw HTTP/1.1 ``requests`` on one connection and read until ``until`` has arrived."""
    received = b""
    with anyio.fail_after(WAIT_S):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(requests)
            while not received.endswith(until):
                received += await stream.receive()
    return received


async def test_responses_through_the_coalescing_protocol_are_whole_and_in_order_on_one_connection() -> None:
    app = Starlette(routes=[Route("/json", json_answer, methods=["POST"]), Route("/stream", counted_stream)])
    async with serving(app, http=CoalescingHttpToolsProtocol) as url:
        port = int(url.rsplit(":", 1)[1])
        post = b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
        pipelined = post % (3, b"one") + post % (3, b"two")
        answers = await exchange(port, pipelined, b'{"echo":"two"}')
        streamed = await exchange(port, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n", b"0\r\n\r\n")

    responses = [
        (head.split(b"\r\n")[0], body)
        for head, _, body in (part.partition(b"\r\n\r\n") for part in answers.split(b"HTTP/1.1 ")[1:])
    ]
    assert responses == [(b"200 OK", b'{"echo":"one"}'), (b"200 OK", b'{"echo":"two"}')]
    head, _, body = streamed.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    assert body == b"9\r\ndata: 0\n\n\r\n9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n"
