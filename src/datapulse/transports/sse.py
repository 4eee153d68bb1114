"""The 2024-11-05 HTTP+SSE transport: ``GET /sse`` and ``POST /messages?session_id=``.

Spec 2024-11-05 basic/transports "HTTP with SSE": the client opens an SSE stream; the server's
first event is ``endpoint``, whose data is the URI for POSTing messages; every server message then
arrives as an ``event: message`` frame. A POST is acknowledged ``202 Accepted`` at once and its
result is written to the stream. The session lives exactly as long as its stream.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import anyio
from starlette.types import Receive, Scope, Send

from datapulse import _sdk
from datapulse.auth.principal import principal_of
from datapulse.errors import InvalidRequest, MissingSessionId, NotAcceptable, StreamClosed
from datapulse.runtime import Runtime
from datapulse.sessions.live import LiveSession
from datapulse.sessions.ordering import deliver_in_order
from datapulse.sessions.registry import SessionKind
from datapulse.sessions.streams import SseConnection
from datapulse.transports import _jsonrpc
from datapulse.transports._dispatch import dispatch, refuse_while_draining
from datapulse.transports._http import header, query_param, read_body, require_json_content_type, send_bytes
from datapulse.transports._jsonrpc import notification_json
from datapulse.transports._negotiation import accepts, is_valid_session_id
from datapulse.transports._sse_codec import encode_event, encode_message_event
from datapulse.transports._streaming import end_sse, hold_open, start_sse

log = logging.getLogger("datapulse.transport.sse")

TRANSPORT_KIND = "sse"


class SseSession(LiveSession):
    """A 2024-11-05 session: one SSE stream carries every server message, request-scoped or not."""

    kind = SessionKind.SSE
    dual_era = True

    def __init__(self, session_id: str, principal: str, runtime: Runtime) -> None:
        super().__init__(
            session_id, principal, runtime.server, runtime.lifespan_state, runtime.settings.server_request_timeout_s
        )
        self.stream: SseConnection | None = None
        self.fast_path = runtime.fast_path
        self._taps = runtime.taps

    async def emit(self, message_json: str) -> None:
        """Write one JSON-RPC message to the session's stream (dropped if the stream has ended)."""
        stream = self.stream
        if stream is None:
            return
        if self._taps.watching(self.id):
            self._taps.record(self.id, "out", message_json)
        try:
            await stream.write(encode_message_event(message_json))
        except StreamClosed:
            log.debug("session %s: stream ended; dropped an outbound message", self.id[:16])

    @property
    def has_open_stream(self) -> bool:
        return self.stream is not None and not self.stream.closed

    def end_streams(self, reason: str) -> None:
        if self.stream is not None:
            self.stream.abort(reason)

    # The SDK Connection's standalone channel is the same stream.
    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: _sdk.CallOptions | None = None) -> None:
        await self.emit(notification_json(method, params))

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: _sdk.CallOptions | None = None
    ) -> dict[str, Any]:
        timeout = (opts or {}).get("timeout")
        return await self.send_request(method, params, self.emit, timeout)


async def handle_get(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /sse``: open a session and hold its stream until the client or the server ends it.

    Raises:
        NotAcceptable: the client's Accept header refuses ``text/event-stream`` (406).
        Unavailable / TooManySessions: a session cap is reached (503 / 429).
    """
    _, sse_ok = accepts(header(scope, b"accept"))
    if not sse_ok:
        raise NotAcceptable("Not Acceptable: GET /sse returns text/event-stream; add it to the Accept header")
    settings = runtime.settings
    session = await runtime.sessions.open(SseSession(runtime.new_session_id(), principal_of(scope).key, runtime))
    cancel = anyio.CancelScope()
    connection = SseConnection(
        send,
        settings.slow_client_timeout_s,
        on_abort=cancel.cancel,
        observe_depth=runtime.metrics.outbound_queue_depth.observe,
    )
    session.stream = connection
    runtime.sessions.stream_opened(SessionKind.SSE)
    reason = "client disconnected"
    try:
        await start_sse(send)
        endpoint = f"{scope.get('root_path', '')}/messages?session_id={session.id}"
        await connection.write(encode_event(endpoint, event="endpoint"))
        reason = await hold_open(receive, connection, cancel, settings.keepalive_interval_s)
    except StreamClosed:
        reason = connection.close_reason or "stream closed"
    finally:
        runtime.sessions.stream_closed(SessionKind.SSE)
        server_ended = connection.close_reason is not None
        connection.mark_closed()
        with anyio.CancelScope(shield=True):
            await runtime.sessions.close(session.id, reason)
        await end_sse(send, retry_ms=settings.retry_ms if server_ended else None)


async def handle_post(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /messages?session_id=``: accept one JSON-RPC message for a session's stream.

    Answers ``202 Accepted`` once the message is parsed and the session found, then handles it; a
    request's response (or error) arrives on the session's stream as ``event: message``. The seed
    tutorials' ``listTools``/``callTool`` are accepted as ``tools/list``/``tools/call``.

    Raises:
        MissingSessionId (400), SessionNotFound (404), UnsupportedMediaType (415),
        PayloadTooLarge (413), ParseError / InvalidRequest (400).
    """
    session_id = query_param(scope, "session_id")
    if not session_id:
        raise MissingSessionId("Bad Request: the session_id query parameter is required (from the endpoint event)")
    if not is_valid_session_id(session_id):
        raise InvalidRequest("Bad Request: session_id is malformed")
    session = await runtime.sessions.lookup(session_id, principal_of(scope).key, SseSession)
    require_json_content_type(scope)
    body = await read_body(scope, receive, runtime.settings.max_body_bytes)
    message = _jsonrpc.classify(_jsonrpc.loads(body))
    if isinstance(message, _jsonrpc.Request):  # answers and notifications still reach a draining session
        refuse_while_draining(runtime)
    accepted = session.accept()  # before the 202: the client may send its next message as soon as it has it
    try:
        await send_bytes(send, 202, b"Accepted", headers=((b"content-type", b"text/plain; charset=utf-8"),))
    except BaseException:
        accepted.end()
        raise
    if runtime.taps.watching(session.id):
        runtime.taps.record(session.id, "in", body)

    async def deliver(response: str | None) -> None:
        if response is not None:
            await session.emit(response)

    # Handlers begin in acceptance order; responses leave in the order they finished (sessions/ordering.py).
    await deliver_in_order(
        accepted,
        lambda: dispatch(session, scope, message, session.emit, transport_kind=TRANSPORT_KIND, allow_aliases=True),
        deliver,
    )
