"""SSE streams: an open HTTP response (`SseConnection`) and a resumable logical stream (`EventStream`).

Ordering and backpressure rules (the transports rely on them). The server runs on uvicorn's asyncio loop;
this module uses asyncio's lock and timeout directly because they cost about half of anyio's on the
per-frame hot path.

* Writes to one `SseConnection` are serialised by a FIFO lock, so frames leave in the order their
  writers arrived; a frame is one ASGI ``send``, so frames never interleave.
* A writer waits while the client is slow (uvicorn parks ``send`` until the socket drains): that wait
  is the backpressure. A client that reads nothing for ``slow_client_timeout_s`` is disconnected, with
  the reason logged, and the write raises `StreamClosed`. The timer is armed only once a ``send`` waits:
  a frame the socket takes at once costs none.
* An `EventStream` gives every frame an event id ``<stream key>.<seq>`` and keeps the last frames in
  a bounded history, so a reconnect with ``Last-Event-ID`` replays exactly what followed that id,
  and frames produced while no connection is attached wait for one.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections import deque
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any, NamedTuple, Protocol

from starlette.types import Message, Send

from datapulse.errors import SessionMoved, StreamClosed, Unavailable

log = logging.getLogger("datapulse.streams")


class EventJournal(Protocol):
    """Durable storage of a session's events (cluster mode: `datapulse.cluster.journal.RedisEventJournal`)."""

    async def append(self, stream_key: str, events: Sequence[tuple[int, bytes]], delivered_seq: int) -> None:
        """Store ``events`` (``(seq, frame)``, ascending) of ``stream_key`` in one round trip, with the stream's
        delivered watermark (every frame at or below it was delivered, or dropped by the cap and announced);
        raises `Unavailable` when the store is down."""
        ...

    async def read_all(self) -> list[JournalEntry]:
        """Every stored entry, oldest first; raises `Unavailable` when the store is down."""
        ...


class JournalEntry(NamedTuple):
    """One stored event: its stream, sequence number, frame bytes, and the highest sequence number of that
    stream known to have been written to a client when it was stored (0: none)."""

    stream_key: str
    seq: int
    frame: bytes
    delivered_seq: int = 0


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
                been delivered: resumable streams keep it in their history and count it as undelivered).
                Also when the server's ``send`` refuses the write, as uvicorn does (``RuntimeError``) once
                the response has ended: the task that owns the response may end it while a writer elsewhere
                (a flush after a Redis outage) waits for a slow client to read.
        """
        if self.closed:
            raise StreamClosed
        if self._observe_depth is not None:
            self._observe_depth(self._waiting)
        self._waiting += 1
        try:
            # FIFO; no timer of its own: whoever holds the lock is bounded below, and aborts the connection
            # (which every writer queued behind then sees) when its client reads nothing in time
            async with self._lock:
                if self.closed:
                    raise StreamClosed
                try:
                    await self._send_bounded({"type": "http.response.body", "body": frame, "more_body": True})
                except (RuntimeError, OSError) as exc:
                    self.mark_closed()
                    log.info("SSE stream already ended: a late write was not sent (%s)", exc)
                    raise StreamClosed from None
                if self.closed:  # the client went away meanwhile: uvicorn drops such writes silently
                    raise StreamClosed
        finally:
            self._waiting -= 1

    async def _send_bounded(self, message: Message) -> None:
        """``await send(message)`` within ``slow_client_timeout_s``, with no timer armed unless ``send`` waits (a
        client reading behind): its first step runs at once, and only a ``send`` that then waits continues under
        ``asyncio.timeout``.

        Raises:
            StreamClosed: ``send`` waited longer than ``slow_client_timeout_s``; the connection is aborted.
            Exception: whatever ``send`` raises.
        """
        sending = self._send(message)
        if isinstance(sending, types.CoroutineType):  # a native coroutine (others are awaited as they are)
            try:
                waiting_on = sending.send(None)
            except StopIteration:
                return  # written without waiting: the usual case
            sending = _resumed(sending, waiting_on)
        timer = asyncio.timeout(self._timeout_s)
        try:
            async with timer:
                await sending
        except TimeoutError:
            if not timer.expired():  # raised by send itself
                raise
            self.abort(f"client read nothing for {self._timeout_s:g} s; outbound stream backpressure limit reached")
            raise StreamClosed from None

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


@types.coroutine
def _resumed(coroutine: Coroutine[Any, Any, Any], waiting_on: Any) -> Generator[Any, Any, Any]:
    """Await the rest of ``coroutine``, whose first step (``send(None)``) already ran and yielded ``waiting_on``
    to the event loop: what ``await`` would have done from there (PEP 380's ``yield from``, resumed after its
    first step). Returns its result; raises what it raises; a cancellation is thrown into it."""
    while True:
        try:
            sent = yield waiting_on
        except GeneratorExit:
            coroutine.close()
            raise
        except BaseException as exc:  # a cancellation (or the timeout's): delivered where the coroutine waits
            try:
                waiting_on = coroutine.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                waiting_on = coroutine.send(sent)
            except StopIteration as stop:
                return stop.value


OverflowNotice = Callable[[int], bytes]
"""Builds the frame that tells a client how many undelivered events a stream's cap dropped (no event id)."""


class EventStream:
    """A logical SSE stream whose frames carry event ids and can be replayed after a reconnect.

    Args:
        key: the stream's key, unique within its session (the event-id prefix).
        history_max_events: frames kept for ``Last-Event-ID`` replay (and for delivery while no connection is
            attached): the cap.
        next_seq: the session's shared sequence counter (event ids are unique across a session's
            streams, as spec 2025-11-25 basic/transports "Resumability and Redelivery" requires).
        journal: where frames are stored durably before they are written (cluster mode), or None.
        overflow_notice: builds the frame written before the next delivered one when the cap dropped
            undelivered frames (None: the drop is only logged).

    Guarantees (checked by ``tests/unit/test_event_stream_model.py`` and the history checker):

    * Sequence numbers are assigned in `emit` call order, and frames reach the journal and the connection in
      sequence order: one flush at a time runs under a FIFO lock, and each flush first journals every frame
      not yet journaled (one round trip for all of them), then writes every frame the connection has not had.
      A frame is therefore journaled before it is written, and so is every frame before it. While the journal
      does not answer, frames are held (in order) and `flush_pending` retries; when the journal refuses because
      another instance owns the session now (`SessionMoved`), they are never written.
    * `attach` replays exactly the frames after the resume point, then the live tail, with no gap and no
      duplicate: it runs as a flush of its own, so frames emitted meanwhile queue behind it.
    """

    __slots__ = (
        "_announced_through",
        "_dropped_through",
        "_gone_on_restore",
        "_history",
        "_journal",
        "_journaled_seq",
        "_next_seq",
        "_order",
        "_overflow_notice",
        "_taken_seq",
        "_unjournaled",
        "connection",
        "delivered_seq",
        "dropped",
        "finished",
        "key",
    )

    def __init__(
        self,
        key: str,
        history_max_events: int,
        next_seq: Callable[[], int],
        journal: EventJournal | None = None,
        *,
        overflow_notice: OverflowNotice | None = None,
    ) -> None:
        self.key = key
        self._history: deque[tuple[int, bytes]] = deque(maxlen=history_max_events)
        self._next_seq = next_seq
        self._journal = journal
        self._journaled_seq = 0
        self._unjournaled: list[tuple[int, bytes]] = []  # appended, not yet handed to the journal
        self._taken_seq = 0  # the newest frame a flush in progress has taken to write (0: none)
        self._dropped_through = 0  # the newest frame the cap dropped undelivered
        self._announced_through = 0  # the newest dropped frame a written overflow notice accounted for
        self._gone_on_restore: deque[int] = deque()  # frames `restore` saw the cap push out, not accounted for
        self._order = asyncio.Lock()  # FIFO: flushes run in the order their emits were called
        self._overflow_notice = overflow_notice
        self.connection: SseConnection | None = None
        self.delivered_seq = 0
        """The highest sequence number written to a connection (or the resume point of the attached one)."""
        self.dropped = 0
        """Undelivered frames the cap pushed out that no connection has been told about yet."""
        self.finished = False

    def event_id(self, seq: int) -> str:
        """The wire event id of frame ``seq`` of this stream."""
        return f"{self.key}.{seq}"

    @property
    def undelivered(self) -> int:
        """Frames in the history that no connection has taken yet."""
        return len(self._after(self.delivered_seq))

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest frame, or 0."""
        return self._history[-1][0] if self._history else 0

    def _after(self, seq: int) -> list[tuple[int, bytes]]:
        """The frames of the history after ``seq``, oldest first (walks back from the newest)."""
        later: list[tuple[int, bytes]] = []
        for item in reversed(self._history):
            if item[0] <= seq:
                break
            later.append(item)
        later.reverse()
        return later

    def _append(self, seq: int, frame: bytes) -> None:
        history = self._history
        if len(history) == history.maxlen and history[0][0] > max(self.delivered_seq, self._taken_seq):
            self.dropped += 1
            self._dropped_through = history[0][0]
            log.warning(
                "stream %s: %d events waiting for a client; the oldest undelivered one was dropped (cap %d)",
                self.key,
                len(history),
                history.maxlen,
            )
        history.append((seq, frame))
        if self._journal is not None:
            self._unjournaled.append((seq, frame))  # journaled even if the cap pushes it out first

    async def emit(self, build: Callable[[str], bytes]) -> None:
        """Append a frame and deliver it (journal first, in cluster mode) to the attached connection, if any.

        Args:
            build: makes the frame bytes from the assigned event id.

        A connection that fails is detached; the frame stays in the history for replay.
        """
        seq = self._next_seq()
        self._append(seq, build(self.event_id(seq)))
        async with self._order:
            await self._flush()

    async def _flush(self) -> None:
        """Journal every frame not yet journaled, then write every journaled frame the connection has not had,
        in order. Runs under ``_order``; frames appended meanwhile are left to the flush of their own emit."""
        journal = self._journal
        if journal is not None and self._unjournaled:
            pending, self._unjournaled = self._unjournaled, []
            journaled_before, self._journaled_seq = self._journaled_seq, pending[-1][0]
            try:
                await journal.append(self.key, pending, max(self.delivered_seq, self._announced_through))
            except SessionMoved:
                # Another instance owns the session now and gives out these ids itself: never write them.
                self._journaled_seq = journaled_before
                log.warning(
                    "stream %s: %d events not delivered: the session moved to another instance", self.key, len(pending)
                )
                return
            except Unavailable as exc:
                # Held, not written: an event a client has seen is always in the journal, so an instance that
                # takes the session over never gives its id out again. `flush_pending` retries.
                self._unjournaled = pending + self._unjournaled
                self._journaled_seq = journaled_before
                log.warning(
                    "stream %s: %d events wait for the cluster store before delivery (%s)",
                    self.key,
                    len(self._unjournaled),
                    exc.message,
                )
        connection = self.connection
        if connection is None:
            return
        frames = self._after(self.delivered_seq)
        if journal is not None:
            frames = [item for item in frames if item[0] <= self._journaled_seq]
        if frames:
            self._taken_seq = frames[-1][0]  # held here: the cap no longer counts them as undelivered
        try:
            dropped = self.dropped
            if dropped and self._overflow_notice is not None:
                self.dropped = 0
                through = self._dropped_through
                try:
                    await connection.write(self._overflow_notice(dropped))
                except StreamClosed:
                    self.dropped += dropped
                    raise
                self._announced_through = max(self._announced_through, through)
            for seq, frame in frames:
                await connection.write(frame)
                self.delivered_seq = seq
        except StreamClosed:
            if self.connection is connection:
                self.connection = None
            oldest = self._history[0][0] if self._history else self._taken_seq + 1
            trimmed = [seq for seq, _ in frames if self.delivered_seq < seq < oldest]  # taken, then trimmed
            if trimmed:
                self.dropped += len(trimmed)
                self._dropped_through = max(self._dropped_through, trimmed[-1])
        finally:
            self._taken_seq = 0

    async def flush_pending(self) -> None:
        """Retry storing and delivering the events held because the journal did not answer (called on stream
        keepalives and when the cluster store answers again); nothing to do when none are held."""
        if self._unjournaled:
            async with self._order:
                await self._flush()

    def restore(self, seq: int, frame: bytes, delivered_seq: int = 0) -> None:
        """Put a frame read back from the journal into the history (taking over a session). Frames at or below
        the journal's delivered watermark (``delivered_seq``) count as delivered: only a reconnect with
        ``Last-Event-ID`` replays them; later ones wait for the next connection. Out-of-order or repeated
        entries are ignored."""
        if seq <= self.last_seq:
            return
        self.delivered_seq = max(self.delivered_seq, min(delivered_seq, seq))
        self._announced_through = max(self._announced_through, delivered_seq)  # delivered, or dropped and announced
        history = self._history
        if len(history) == history.maxlen:
            self._gone_on_restore.append(history[0][0])
        history.append((seq, frame))
        # A frame the cap pushes out here counts as dropped unless a later entry's watermark says the old owner
        # delivered or announced it (the watermark only rises, so the count is settled entry by entry).
        gone = self._gone_on_restore
        while gone and gone[0] <= self._announced_through:
            gone.popleft()
        self.dropped = len(gone)
        if gone:
            self._dropped_through = gone[-1]
        self._unjournaled.clear()  # it came from the journal
        self._journaled_seq = seq

    def _resume_point(self, seq: int) -> int | None:
        """Where a reconnect with ``Last-Event-ID`` naming ``seq`` resumes on a stream whose sequence numbers
        are its own (runs under ``_order``).

        ``seq`` itself when it can be resumed exactly; the oldest kept frame's predecessor when ``seq`` is
        older than the history (the frames in between were trimmed by the cap: `dropped` becomes their count,
        so the connection is told); None when ``seq`` is newer than anything this stream has (after a takeover
        from a journal that lost its tail): the stream then continues after its last delivered frame.
        """
        if self.knows(seq):
            self.dropped = 0  # whatever the cap dropped came before seq: the client saw it
            return seq
        if self._history and seq < self._history[0][0]:
            oldest = self._history[0][0]
            # Frames in (seq, oldest) are gone; those up to _announced_through were announced already.
            self.dropped = max(0, oldest - 1 - max(seq, self._announced_through))
            self._dropped_through = oldest - 1
            log.warning(
                "stream %s: resume point %d is older than the history: %d events are gone", self.key, seq, self.dropped
            )
            return oldest - 1
        return None

    def knows(self, seq: int) -> bool:
        """Whether ``seq`` can be resumed from: it is in the history, or is the oldest frame's predecessor."""
        if not self._history:
            return seq <= self.delivered_seq
        return self._history[0][0] - 1 <= seq <= self._history[-1][0]

    async def attach(self, connection: SseConnection, after_seq: int | None, *, own_counter: bool = False) -> None:
        """Make ``connection`` the live connection, replaying the frames after ``after_seq`` (None: after the
        last delivered one) first. Frames emitted during the replay follow it, in order, and no frame is sent
        twice on ``connection``. A previous connection is ended ("superseded").

        With ``own_counter`` (a stream whose sequence numbers no other stream shares: the DataPulse API's),
        ``after_seq`` is the client's ``Last-Event-ID`` as it is: one older than the history resumes at the
        oldest frame kept and the connection is first told how many events are gone; one newer than the
        stream continues after the last delivered frame.

        Raises:
            StreamClosed: the connection closed during the replay.
        """
        async with self._order:
            previous = self.connection
            if previous is not None and previous is not connection:
                previous.abort("superseded by a reconnect with the same stream")
            if after_seq is not None and own_counter:
                after_seq = self._resume_point(after_seq)
            if after_seq is not None:
                self.delivered_seq = after_seq
            self.connection = connection
            await self._flush()
            if self.connection is not connection:
                raise StreamClosed

    def detach(self, connection: SseConnection) -> None:
        """Forget ``connection`` if it is the live one."""
        if self.connection is connection:
            self.connection = None
