"""SSE streams: an open HTTP response (`SseConnection`) and a resumable logical stream (`EventStream`).

Ordering and backpressure rules (the transports rely on them). The server runs on uvicorn's asyncio loop;
this module uses asyncio's lock and timeout directly because they cost about half of anyio's on the
per-frame hot path.

* Writes to one `SseConnection` are serialised by a FIFO lock, so frames leave in the order their
  writers arrived; a frame is one ASGI ``send``, so frames never interleave.
* A writer waits while the client is slow (uvicorn parks ``send`` until the socket drains): that wait
  is the backpressure. A client that reads nothing for ``slow_client_timeout_s`` is disconnected, with
  the reason logged, and the write raises `StreamClosed`.
* An `EventStream` gives every frame an event id ``<stream key>.<seq>`` and keeps the last frames in
  a bounded history, so a reconnect with ``Last-Event-ID`` replays exactly what followed that id,
  and frames produced while no connection is attached wait for one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from starlette.types import Send

from datapulse.errors import StreamClosed, Unavailable

log = logging.getLogger("datapulse.streams")


class EventJournal(Protocol):
    """Durable storage of a session's events (cluster mode: `datapulse.cluster.journal.RedisEventJournal`)."""

    async def append(self, stream_key: str, seq: int, frame: bytes) -> None:
        """Store frame ``seq`` of ``stream_key``; raises `Unavailable` when the store is down."""
        ...

    async def read_all(self) -> list[tuple[str, int, bytes]]:
        """Every stored ``(stream key, seq, frame)``, oldest first; raises `Unavailable` when the store is down."""
        ...


class SseConnection:
    """One open ``text/event-stream`` HTTP response.

    Args:
        send: the ASGI ``send`` of the response, after ``http.response.start`` was sent.
        slow_client_timeout_s: how long one frame may wait for the client to read before the
            connection is abandoned.
        on_abort: called once (synchronously) when the connection is abandoned by us, to wake the
            task that owns the response (it then ends it).
        observe_depth: called with the number of frames already waiting to be written each time one more
            is written (the ``datapulse_outbound_queue_depth`` histogram).
    """

    __slots__ = ("_lock", "_observe_depth", "_on_abort", "_send", "_timeout_s", "_waiting", "close_reason", "closed")

    def __init__(
        self,
        send: Send,
        slow_client_timeout_s: float,
        on_abort: Callable[[], None] | None = None,
        *,
        observe_depth: Callable[[float], None] | None = None,
    ) -> None:
        self._send = send
        self._lock = asyncio.Lock()  # asyncio's creates its waiter queue lazily: nothing allocated while idle
        self._timeout_s = slow_client_timeout_s
        self._on_abort = on_abort
        self._observe_depth = observe_depth
        self._waiting = 0
        self.closed = False
        self.close_reason: str | None = None

    async def write(self, frame: bytes) -> None:
        """Write one complete SSE frame.

        Raises:
            StreamClosed: the connection was closed before or while writing (the frame may not have
                been delivered; resumable streams keep it in their history).
        """
        if self.closed:
            raise StreamClosed
        if self._observe_depth is not None:
            self._observe_depth(self._waiting)
        self._waiting += 1
        try:
            async with asyncio.timeout(self._timeout_s), self._lock:
                if self.closed:
                    raise StreamClosed
                await self._send({"type": "http.response.body", "body": frame, "more_body": True})
        except TimeoutError:
            self.abort(f"client read nothing for {self._timeout_s:g} s; outbound stream backpressure limit reached")
            raise StreamClosed from None
        finally:
            self._waiting -= 1

    def offer(self) -> bool:
        """Whether a non-urgent frame (a keepalive) may be written now without queueing behind others."""
        return not self.closed and not self._lock.locked()

    def abort(self, reason: str) -> None:
        """Mark the connection closed by the server and wake its owner; idempotent."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        log.info("closing SSE stream: %s", reason)
        if self._on_abort is not None:
            self._on_abort()

    def mark_closed(self) -> None:
        """Mark the connection closed because the client went away (no log, no callback)."""
        self.closed = True


class EventStream:
    """A logical SSE stream whose frames carry event ids and can be replayed after a reconnect.

    Args:
        key: the stream's key, unique within its session (the event-id prefix).
        history_max_events: frames kept for ``Last-Event-ID`` replay.
        next_seq: the session's shared sequence counter (event ids are unique across a session's
            streams, as spec 2025-11-25 basic/transports "Resumability and Redelivery" requires).
        journal: where frames are stored durably before they are written (cluster mode), or None.
    """

    __slots__ = ("_history", "_journal", "_next_seq", "connection", "delivered_seq", "finished", "key")

    def __init__(
        self, key: str, history_max_events: int, next_seq: Callable[[], int], journal: EventJournal | None = None
    ) -> None:
        self.key = key
        self._history: deque[tuple[int, bytes]] = deque(maxlen=history_max_events)
        self._next_seq = next_seq
        self._journal = journal
        self.connection: SseConnection | None = None
        self.delivered_seq = 0
        self.finished = False

    def event_id(self, seq: int) -> str:
        """The wire event id of frame ``seq`` of this stream."""
        return f"{self.key}.{seq}"

    @property
    def undelivered(self) -> int:
        """Frames in the history that no connection has taken yet."""
        return sum(1 for seq, _ in self._history if seq > self.delivered_seq)

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest frame, or 0."""
        return self._history[-1][0] if self._history else 0

    async def emit(self, build: Callable[[str], bytes]) -> None:
        """Append a frame and write it to the attached connection, if any.

        Args:
            build: makes the frame bytes from the assigned event id.

        A connection that fails is detached; the frame stays in the history for replay.
        """
        seq = self._next_seq()
        frame = build(self.event_id(seq))
        history = self._history
        if len(history) == history.maxlen and history and history[0][0] > self.delivered_seq:
            log.warning("stream %s: history full, dropping an undelivered event", self.key)
        history.append((seq, frame))
        if self._journal is not None:
            try:
                await self._journal.append(self.key, seq, frame)
            except Unavailable as exc:
                log.warning("stream %s: event not stored for failover replay (%s)", self.key, exc.message)
        connection = self.connection
        if connection is None:
            return
        try:
            await connection.write(frame)
        except StreamClosed:
            if self.connection is connection:
                self.connection = None
            return
        self.delivered_seq = max(self.delivered_seq, seq)

    def restore(self, seq: int, frame: bytes) -> None:
        """Put a frame read back from the journal into the history (taking over a session); it counts
        as delivered, so only a reconnect with ``Last-Event-ID`` replays it."""
        self._history.append((seq, frame))
        self.delivered_seq = max(self.delivered_seq, seq)

    def knows(self, seq: int) -> bool:
        """Whether ``seq`` can be resumed from: it is in the history, or is the last frame's predecessor."""
        if not self._history:
            return seq <= self.delivered_seq
        return self._history[0][0] - 1 <= seq <= self._history[-1][0]

    async def attach(self, connection: SseConnection, after_seq: int | None) -> None:
        """Replay frames after ``after_seq`` (None: after the last delivered one) onto ``connection``, then
        make it the live connection. Frames emitted during the replay are sent too, in order, and no
        frame is sent twice on ``connection``.

        Raises:
            StreamClosed: the connection closed during the replay.
        """
        cursor = self.delivered_seq if after_seq is None else after_seq
        previous = self.connection
        if previous is not None and previous is not connection:
            previous.abort("superseded by a reconnect with the same stream")
            self.connection = None
        while True:
            pending = [(seq, frame) for seq, frame in self._history if seq > cursor]
            if not pending:
                break
            for seq, frame in pending:
                await connection.write(frame)
                cursor = seq
                self.delivered_seq = max(self.delivered_seq, seq)
        self.connection = connection

    def detach(self, connection: SseConnection) -> None:
        """Forget ``connection`` if it is the live one."""
        if self.connection is connection:
            self.connection = None
