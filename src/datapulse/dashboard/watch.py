"""``GET /dashboard/api/watch?session_id=S``: every message of one session, both directions, as it happens.

The response is ``text/event-stream`` (``docs/dashboard.md``)::

    event: frame      data: {"t", "dir", "kind", "method", "id", "message", "elapsed_ms"}   (one per message)
    event: dropped    data: {"dropped": n}    this watcher missed frames (n: cumulative), just before the next one
    event: closed     data: {"session_id": S, "reason": "session closed" | "session moved"}   then the end
    : ping            keepalive

The stream is raced against the client's disconnect, the server's shutdown (it ends with a ``retry:`` hint)
and the session's end (``event: closed``). A slow watcher never slows the session: frames it cannot take
are dropped and counted (`datapulse.dashboard.tap`), and one that reads nothing for ``slow_client_timeout_s``
is disconnected. In cluster mode a watch reaching an instance that does not hold the session is forwarded to
the one that does (`datapulse.cluster.routing.SESSION_QUERY_PATHS`), as ``GET /events`` is.
"""

from __future__ import annotations

import logging

import anyio
import pydantic_core
from starlette.types import Receive, Scope, Send

from datapulse.auth.principal import principal_of
from datapulse.dashboard.access import sees
from datapulse.dashboard.tap import Watcher
from datapulse.errors import (
    InvalidRequest,
    MissingSessionId,
    NotAcceptable,
    SessionMoved,
    SessionNotFound,
    StreamClosed,
)
from datapulse.runtime import Runtime
from datapulse.sessions.live import LiveSession
from datapulse.sessions.streams import SseConnection
from datapulse.transports._http import header, query_param
from datapulse.transports._negotiation import accepts, is_valid_session_id
from datapulse.transports._sse_codec import PING_FRAME
from datapulse.transports._streaming import end_sse, hold_open, start_sse

log = logging.getLogger("datapulse.dashboard")

SHUTTING_DOWN = "server shutting down"
SESSION_CLOSED = "session closed"
SESSION_MOVED = "session moved"
"""The session went to another instance (drain hand-over): the stream ends with a ``retry:`` hint, and a
new watch reaches the new owner."""


async def handle_watch(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /dashboard/api/watch?session_id=S``: stream session S's messages until the client leaves, the
    server shuts down or the session ends.

    The caller sees the session if it is its own, or if it is an admin (`datapulse.dashboard.access.sees`);
    otherwise the answer is exactly that of an unknown session.

    Raises:
        MissingSessionId (400): no ``session_id``.
        InvalidRequest (400): ``session_id`` is not 1-128 visible ASCII characters.
        NotAcceptable (406): the Accept header refuses ``text/event-stream``.
        SessionNotFound (404): no open session S here, or one the caller may not see.
        SessionMoved (503, retry): S is being handed over to another instance.
    """
    session_id = query_param(scope, "session_id")
    if not session_id:
        raise MissingSessionId("Bad Request: the session_id query parameter is required")
    if not is_valid_session_id(session_id):
        raise InvalidRequest("Bad Request: session_id must be 1-128 visible ASCII characters")
    _, sse_ok = accepts(header(scope, b"accept"))
    if not sse_ok:
        raise NotAcceptable("Not Acceptable: the watch stream is text/event-stream; add it to the Accept header")
    settings = runtime.settings
    session = runtime.sessions.peek(session_id)
    if session is None or not sees(principal_of(scope), session.principal, settings.dashboard_admins):
        raise SessionNotFound()
    if session.moving:
        raise SessionMoved()
    if not session.is_open:
        raise SessionNotFound()
    cancel = anyio.CancelScope()
    connection = SseConnection(send, settings.slow_client_timeout_s, on_abort=cancel.cancel)
    reason = "client disconnected"
    async with runtime.taps.watch(session_id, settings.dashboard_watch_queue_max_frames) as watcher:
        try:
            await start_sse(send)
            await connection.write(PING_FRAME)  # at once: a forwarding instance relays the head with a first frame
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_relay, watcher, connection, session)
                tasks.start_soon(_end_when_gone, runtime, session, watcher)
                tasks.start_soon(_end_on_shutdown, runtime, connection)
                reason = await hold_open(receive, connection, cancel, settings.keepalive_interval_s)
                tasks.cancel_scope.cancel()
        except StreamClosed:
            reason = connection.close_reason or "stream closed"
        finally:
            retry = runtime.shutdown.is_set() or connection.close_reason == SESSION_MOVED
            connection.mark_closed()
            log.debug(
                "session %s: watch stream ended (%s; %d frames dropped)", session_id[:16], reason, watcher.dropped
            )
            await end_sse(send, retry_ms=settings.retry_ms if retry else None)


async def _relay(watcher: Watcher, connection: SseConnection, session: LiveSession) -> None:
    """Write the watcher's frames (and ``dropped`` notices where frames are missing) until the session ends,
    then ``event: closed``, and end the stream."""
    try:
        async for frame in watcher:
            dropped = watcher.dropped_news()
            if dropped is not None:
                await connection.write(dropped_event(dropped))
            await connection.write(event("frame", frame))
        dropped = watcher.dropped_news(final=True)
        if dropped is not None:
            await connection.write(dropped_event(dropped))
        reason = SESSION_MOVED if session.moving else SESSION_CLOSED
        await connection.write(event("closed", {"session_id": session.id, "reason": reason}))
        connection.abort(reason)
    except StreamClosed:
        pass


async def _end_when_gone(runtime: Runtime, session: LiveSession, watcher: Watcher) -> None:
    """End the watcher's input once ``session`` is no longer held here (closed, expired or handed over)."""
    sessions = runtime.sessions
    await sessions.wait_until(lambda: sessions.peek(session.id) is not session)
    watcher.end()


async def _end_on_shutdown(runtime: Runtime, connection: SseConnection) -> None:
    await runtime.shutdown.wait()
    connection.abort(SHUTTING_DOWN)


def event(name: str, data: object) -> bytes:
    """One SSE event ``event: <name>`` whose data is ``data`` as compact JSON (one line)."""
    text = pydantic_core.to_json(data, fallback=str).decode()
    return f"event: {name}\ndata: {text}\n\n".encode()


def dropped_event(dropped: int) -> bytes:
    """``event: dropped`` with ``{"dropped": n}``: frames this watcher has missed so far (cumulative)."""
    return event("dropped", {"dropped": dropped})
