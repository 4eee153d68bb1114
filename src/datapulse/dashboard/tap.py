"""Frame taps: who watches which session, and the frames each watcher is offered (``GET /dashboard/api/watch``).

A session transport calls ``taps.record(session_id, "in" | "out", message)`` for every message it reads from
or writes to the client, behind ``if taps.watching(session_id):``, so a session nobody watches pays one dict
membership test per message and nothing else (no allocation, no JSON work). A watched message becomes one
frame dict (the shape of ``docs/dashboard.md``), built once and offered to every watcher of the session::

    {"t": float, "dir": "in" | "out", "kind": "request" | "response" | "notification" | "error",
     "method": str | None, "id": str | int | None, "message": object, "elapsed_ms": float | None}

Each watcher has a bounded queue: a frame that finds it full is dropped and counted, so a slow watcher never
slows the session (`record` is synchronous, never waits, never raises). ``elapsed_ms`` of a response or error
is the time since the request with the same id came in (or, for a server-to-client request, went out), known
for requests seen while the session was watched.

Messages are JSON-RPC 2.0 objects, or DataPulse API messages (``{"type", "request_id", "data"}`` in,
``{"type": "list_tools" | "tool_result" | "error", "request_id", ...}`` out), classified as requests and
responses/errors keyed by ``request_id``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any, Literal, TypedDict

import anyio
import pydantic_core
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

log = logging.getLogger("datapulse.dashboard")

Direction = Literal["in", "out"]
Kind = Literal["request", "response", "notification", "error"]

PENDING_MAX_REQUESTS = 256
"""Request ids remembered per watched session for ``elapsed_ms`` (the oldest is forgotten beyond it)."""


class Frame(TypedDict):
    """One message of a watched session, as a watcher receives it (``docs/dashboard.md``, ``event: frame``)."""

    t: float
    """When it was recorded, Unix seconds."""
    dir: Direction
    """``in``: from the client; ``out``: to the client."""
    kind: Kind
    method: str | None
    """The JSON-RPC method of a request or notification (a DataPulse API message's ``type``); None otherwise."""
    id: str | int | None
    """The JSON-RPC id (a DataPulse API message's ``request_id``); None for a notification."""
    message: Any
    """The message itself (the parsed JSON object)."""
    elapsed_ms: float | None
    """On a response or error: milliseconds since its request was recorded (None when not seen)."""


def classify(direction: Direction, message: Any) -> tuple[Kind, str | None, str | int | None]:
    """The ``(kind, method, id)`` of a decoded message (pure).

    JSON-RPC 2.0: ``method`` with an ``id`` member is a request, without one a notification; ``error`` is an
    error, ``result`` a response. A DataPulse API message (an object with ``type`` and no ``jsonrpc``) is a
    request when it comes in (method: its ``type``) and a response going out (an error when ``type`` is
    ``"error"``), its id being ``request_id``. Anything else is a notification with no method and no id.
    """
    if not isinstance(message, Mapping):
        return "notification", None, None
    message_type = message.get("type") if "jsonrpc" not in message else None
    raw_id = message.get("request_id") if isinstance(message_type, str) else message.get("id")
    message_id = raw_id if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None
    if isinstance(message_type, str):
        if direction == "in":
            return "request", message_type, message_id
        return ("error" if message_type == "error" else "response"), None, message_id
    method = message.get("method")
    if isinstance(method, str):
        return ("request" if "id" in message else "notification"), method, message_id
    if "error" in message:
        return "error", None, message_id
    if "result" in message:
        return "response", None, message_id
    return "notification", None, message_id


class _Tapped:
    """The watchers of one session and the ids of its requests waiting for an answer (only while watched)."""

    __slots__ = ("pending", "watchers")

    def __init__(self) -> None:
        self.watchers: list[Watcher] = []
        self.pending: dict[tuple[Direction, str | int], float] = {}


class FrameTaps:
    """This process's watchers of session traffic, by session id (`datapulse.runtime.Runtime.taps`).

    Args:
        clock: Unix seconds (``t`` of a frame and the base of ``elapsed_ms``); injectable for tests.
    """

    __slots__ = ("_clock", "_sessions")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._sessions: dict[str, _Tapped] = {}

    def watching(self, session_id: str) -> bool:
        """Whether anyone watches ``session_id`` (one dict membership test: check it before building a message
        to `record`)."""
        return session_id in self._sessions

    def watched_sessions(self) -> int:
        """How many sessions have at least one watcher."""
        return len(self._sessions)

    def watchers(self, session_id: str) -> tuple[Watcher, ...]:
        """The current watchers of ``session_id`` (none when nobody watches)."""
        tapped = self._sessions.get(session_id)
        return () if tapped is None else tuple(tapped.watchers)

    def record(self, session_id: str, direction: Direction, message: Mapping[str, Any] | bytes | str) -> None:
        """Offer one message of ``session_id`` to its watchers; a no-op when nobody watches.

        Args:
            session_id: the session the message belongs to.
            direction: ``"in"`` (from the client) or ``"out"`` (to the client).
            message: the decoded JSON object, or its JSON text (bytes or str; decoded here, only when watched).

        Never waits and never raises: a message that cannot be decoded is logged and skipped, and a watcher
        whose queue is full misses the frame (counted in its ``dropped``).
        """
        tapped = self._sessions.get(session_id)
        if tapped is None:
            return
        try:
            frame = self._frame(tapped, direction, message)
        except Exception:
            log.warning("session %s: a %s message could not be shown to its watchers", session_id[:16], direction)
            return
        for watcher in tapped.watchers:
            watcher._offer(frame)

    def _frame(self, tapped: _Tapped, direction: Direction, message: Mapping[str, Any] | bytes | str) -> Frame:
        decoded: Any = pydantic_core.from_json(message) if isinstance(message, bytes | str) else message
        kind, method, message_id = classify(direction, decoded)
        now = self._clock()
        elapsed_ms: float | None = None
        if message_id is not None:
            pending = tapped.pending
            if kind == "request":
                pending.pop((direction, message_id), None)  # a reused id: the newest request counts
                if len(pending) >= PENDING_MAX_REQUESTS:
                    del pending[next(iter(pending))]
                pending[(direction, message_id)] = now
            elif kind in ("response", "error"):
                asked = pending.pop(("out" if direction == "in" else "in", message_id), None)
                if asked is not None:
                    elapsed_ms = round((now - asked) * 1000.0, 3)
        return {
            "t": now,
            "dir": direction,
            "kind": kind,
            "method": method,
            "id": message_id,
            "message": decoded,
            "elapsed_ms": elapsed_ms,
        }

    def watch(self, session_id: str, max_queued: int) -> Watcher:
        """A watcher of ``session_id``'s frames, registered while its ``async with`` block runs.

        Args:
            session_id: the session to watch (whether the caller may see it is checked by the caller).
            max_queued: frames queued for this watcher before further ones are dropped and counted (≥ 1;
                the setting ``dashboard_watch_queue_max_frames``).

        Raises:
            ValueError: ``max_queued`` is below 1.
        """
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        return Watcher(self, session_id, max_queued)

    def _add(self, watcher: Watcher) -> None:
        tapped = self._sessions.get(watcher.session_id)
        if tapped is None:
            tapped = self._sessions[watcher.session_id] = _Tapped()
        tapped.watchers.append(watcher)

    def _remove(self, watcher: Watcher) -> None:
        tapped = self._sessions.get(watcher.session_id)
        if tapped is None or watcher not in tapped.watchers:
            return
        tapped.watchers.remove(watcher)
        if not tapped.watchers:
            del self._sessions[watcher.session_id]


class Watcher:
    """One watcher of one session: an async context manager (registered inside the block) and an async
    iterator of frames (`receive`), oldest first.

    Frames that found the queue full are counted in `dropped`; `dropped_news` tells where in the stream
    of received frames the count grew (call it after each `receive`).
    """

    __slots__ = ("_in", "_out", "_reported", "_seen", "_taps", "dropped", "session_id")

    def __init__(self, taps: FrameTaps, session_id: str, max_queued: int) -> None:
        self._taps = taps
        self.session_id = session_id
        self._in: MemoryObjectSendStream[tuple[int, Frame]]
        self._out: MemoryObjectReceiveStream[tuple[int, Frame]]
        self._in, self._out = anyio.create_memory_object_stream[tuple[int, Frame]](max_queued)
        self.dropped = 0
        """Frames this watcher missed because its queue was full (cumulative)."""
        self._seen = 0  # `dropped` as it was when the frame last received was queued
        self._reported = 0  # what `dropped_news` last returned

    async def __aenter__(self) -> Watcher:
        self._taps._add(self)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._taps._remove(self)
        self._in.close()
        self._out.close()

    def _offer(self, frame: Frame) -> None:
        try:
            self._in.send_nowait((self.dropped, frame))
        except anyio.WouldBlock:
            self.dropped += 1
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # ended (`end`) or leaving: nothing more is shown

    def end(self) -> None:
        """Stop taking frames (the session closed): `receive` returns what is queued, then ends."""
        self._in.close()

    async def receive(self) -> Frame:
        """The next frame, waiting for one.

        Raises:
            anyio.EndOfStream: `end` was called and every queued frame was received.
        """
        dropped_before, frame = await self._out.receive()
        self._seen = dropped_before
        return frame

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[Frame]:
        while True:
            try:
                yield await self.receive()
            except anyio.EndOfStream:
                return

    def dropped_news(self, *, final: bool = False) -> int | None:
        """The cumulative `dropped` count if it grew since this last returned one, else None.

        Counts only the frames missed before the frame last received (so a ``dropped`` notice written just
        before that frame sits where the gap is); ``final`` counts every frame missed so far (at the end).
        """
        current = self.dropped if final else self._seen
        if current <= self._reported:
            return None
        self._reported = current
        return current
