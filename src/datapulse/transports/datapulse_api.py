"""The DataPulse API (from the seed project): ``GET /events?session_id=`` + ``POST /message?session_id=``.

Messages are ``{"type": "list_tools" | "call_tool", "request_id": "...", "data": {...}}``; each is
acknowledged ``202 {"status": "queued", "request_id": ...}`` and its result arrives on the session's
event stream as ``data: {"type": "list_tools" | "tool_result" | "error", "request_id": ..., ...}``.

The client names the session; the first GET or POST creates it for the calling principal. Results
wait (bounded by ``outbound_queue_max_messages``) until a stream is connected, every event carries
an ``id:``, and a reconnect with ``Last-Event-ID`` replays exactly the events after that id.

``POST /message`` without ``session_id`` and with a JSON-RPC body is the seed tutorial's stateless
endpoint: the JSON-RPC response is the HTTP response.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import anyio
import pydantic_core
from starlette.types import Receive, Scope, Send

from datapulse import _sdk
from datapulse.auth.principal import principal_of
from datapulse.errors import (
    InvalidRequest,
    MethodNotFound,
    MissingSessionId,
    NotAcceptable,
    StreamClosed,
    Unavailable,
)
from datapulse.runtime import Runtime
from datapulse.sessions.live import LiveSession
from datapulse.sessions.ordering import deliver_in_order
from datapulse.sessions.registry import SessionKind, SessionRecord
from datapulse.sessions.streams import EventStream, SseConnection
from datapulse.transports import _jsonrpc
from datapulse.transports._dispatch import dispatch, dispatch_context, refuse_while_draining
from datapulse.transports._http import (
    header,
    query_param,
    read_body,
    require_json_content_type,
    send_bytes,
    send_empty,
    send_json,
)
from datapulse.transports._negotiation import accepts, is_valid_datapulse_session_id, parse_last_event_id
from datapulse.transports._sse_codec import encode_data_frame, encode_event, encode_retry
from datapulse.transports._streaming import end_sse, hold_open, start_sse

log = logging.getLogger("datapulse.transport.api")

TRANSPORT_KIND = "datapulse-api"
EVENTS_STREAM_SUFFIX = "e"
MESSAGE_TYPES = {"list_tools": "tools/list", "call_tool": "tools/call"}
_CLIENT_INFO = {"name": "datapulse-api", "version": "1"}


class ApiSession(LiveSession):
    """A DataPulse API session: one resumable event stream, no server-to-client requests."""

    kind = SessionKind.DATAPULSE_API

    def __init__(self, session_id: str, principal: str, runtime: Runtime, *, epoch: str | None = None) -> None:
        super().__init__(
            session_id,
            principal,
            runtime.server,
            runtime.lifespan_state,
            runtime.settings.server_request_timeout_s,
            epoch,
        )
        self._seq = 0
        self.fast_path = runtime.fast_path
        self._taps = runtime.taps
        self.journal = runtime.journal(session_id)
        self.events = EventStream(
            self.epoch + EVENTS_STREAM_SUFFIX,
            runtime.settings.outbound_queue_max_messages,
            self._next_seq,
            self.journal,
            overflow_notice=overflow_event,
        )
        self._accepted = 0  # requests accepted whose result is not emitted yet

    def _make_connection(self) -> _sdk.Connection:
        # Born ready at the latest handshake-era version: the API has no initialize step.
        return _sdk.Connection(
            self,
            protocol_version=_sdk.LATEST_HANDSHAKE_VERSION,
            session_id=self.id,
            client_params=_sdk.InitializeRequestParams.model_validate(
                {"protocolVersion": _sdk.LATEST_HANDSHAKE_VERSION, "capabilities": {}, "clientInfo": _CLIENT_INFO}
            ),
        )

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    @property
    def has_open_stream(self) -> bool:
        return self.events.connection is not None and not self.events.connection.closed

    def end_streams(self, reason: str) -> None:
        if self.events.connection is not None:
            self.events.connection.abort(reason)

    def event_streams(self) -> Sequence[EventStream]:
        return (self.events,)

    def reserve(self, limit: int) -> None:
        """Claim room for one more result event, or refuse before accepting the message.

        Raises:
            Unavailable: ``limit`` results already wait for a stream (503; connect GET /events to drain).
        """
        if self.events.undelivered + self._accepted >= limit:
            raise Unavailable(
                f"Service Unavailable: {limit} results are waiting for this session's stream; "
                "connect GET /events?session_id=... to receive them, then retry",
                headers={"Retry-After": "1"},
            )
        self._accepted += 1

    async def emit_event(self, event: dict[str, Any]) -> None:
        """Append one result event (releasing the slot `reserve` claimed) and deliver it if a stream is open."""
        self._accepted = max(0, self._accepted - 1)
        if self._taps.watching(self.id):
            self._taps.record(self.id, "out", event)
        payload = pydantic_core.to_json(event)
        await self.events.emit(partial(encode_data_frame, payload))


async def _open_or_find(runtime: Runtime, scope: Scope, session_id: str) -> ApiSession:
    principal = principal_of(scope).key
    if runtime.sessions.peek(session_id) is None:
        try:
            return await runtime.sessions.open(ApiSession(session_id, principal, runtime))
        except ValueError:
            # Opened concurrently: by another request here (look it up), or on another instance.
            if runtime.cluster is not None and runtime.sessions.peek(session_id) is None:
                raise Unavailable(
                    "Service Unavailable: this session is being opened on another instance; retry",
                    headers={"Retry-After": "1"},
                ) from None
    return await runtime.sessions.lookup(session_id, principal, ApiSession)


def _session_id(scope: Scope) -> str | None:
    session_id = query_param(scope, "session_id")
    if session_id is None:
        return None
    if not is_valid_datapulse_session_id(session_id):
        raise InvalidRequest("Bad Request: session_id must be 1-128 characters of A-Z a-z 0-9 . _ ~ -")
    return session_id


async def handle_events(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /events?session_id=``: the session's event stream (creating the session if new);
    ``DELETE /events?session_id=`` ends the session (its stream, waiting results and history).

    A ``Last-Event-ID`` header replays every event after that id; without it, the stream starts
    with the results that were waiting for a connection. A newer stream for the same session
    replaces an older one.

    Raises:
        MissingSessionId (400), SessionNotFound (404: the id belongs to another principal),
        NotAcceptable (406), Unavailable / TooManySessions (session caps).
    """
    session_id = _session_id(scope)
    if session_id is None:
        raise MissingSessionId("Bad Request: the session_id query parameter is required")
    if scope["method"] == "DELETE":
        await runtime.sessions.lookup(session_id, principal_of(scope).key, ApiSession)
        await runtime.sessions.close(session_id, "client sent DELETE")
        await send_empty(send, 200)
        return
    _, sse_ok = accepts(header(scope, b"accept"))
    if not sse_ok:
        raise NotAcceptable("Not Acceptable: GET /events returns text/event-stream; add it to the Accept header")
    session = await _open_or_find(runtime, scope, session_id)
    settings = runtime.settings
    after_seq: int | None = None
    resume = parse_last_event_id(header(scope, b"last-event-id"))
    if resume is not None and resume[0] == session.events.key:
        after_seq = resume[1]
    cancel = anyio.CancelScope()
    connection = SseConnection(
        send,
        settings.slow_client_timeout_s,
        on_abort=cancel.cancel,
        observe_depth=runtime.metrics.outbound_queue_depth.observe,
    )
    runtime.sessions.stream_opened(SessionKind.DATAPULSE_API)
    reason = "client disconnected"
    try:
        await start_sse(send)
        await connection.write(encode_retry(settings.retry_ms))
        session.activate()
        await session.events.attach(connection, after_seq, own_counter=True)
        reason = await hold_open(
            receive, connection, cancel, settings.keepalive_interval_s, on_tick=session.events.flush_pending
        )
    except StreamClosed:
        reason = connection.close_reason or "stream closed"
    finally:
        runtime.sessions.stream_closed(SessionKind.DATAPULSE_API)
        session.events.detach(connection)
        server_ended = connection.close_reason is not None
        connection.mark_closed()
        log.debug("session %s: event stream ended (%s)", session_id[:16], reason)
        await runtime.sessions.registry.touch(session_id, runtime.sessions.clock())
        await end_sse(send, retry_ms=settings.retry_ms if server_ended else None)


async def handle_message(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /message``: a DataPulse API message for a session, or (without ``session_id``) a
    JSON-RPC request answered in the HTTP response.

    Raises:
        UnsupportedMediaType (415), PayloadTooLarge (413), ParseError / InvalidRequest (400),
        MethodNotFound (404: unknown ``type``), SessionNotFound (404), Unavailable (503: results
        are waiting and no stream takes them).
    """
    session_id = _session_id(scope)
    require_json_content_type(scope)
    body = await read_body(scope, receive, runtime.settings.max_body_bytes)
    obj = _jsonrpc.loads(body)
    if session_id is None:
        if isinstance(obj, dict) and "jsonrpc" in obj:
            await _stateless_jsonrpc(runtime, scope, send, _jsonrpc.classify(obj))
            return
        raise MissingSessionId(
            "Bad Request: the session_id query parameter is required for {type, request_id, data} messages "
            "(JSON-RPC bodies are answered directly without it)"
        )
    if isinstance(obj, dict) and "jsonrpc" in obj:
        raise InvalidRequest(
            'Bad Request: with session_id, send {"type", "request_id", "data"}; JSON-RPC bodies are answered '
            "directly on POST /message without session_id"
        )
    request_id, method, params = parse_api_message(obj)
    session = await _open_or_find(runtime, scope, session_id)
    refuse_while_draining(runtime)
    session.reserve(runtime.settings.outbound_queue_max_messages)
    accepted = session.accept()  # before the 202: the client may send its next message as soon as it has it
    try:
        await send_json(send, 202, {"status": "queued", "request_id": request_id})
    except BaseException:
        accepted.end()
        raise
    if runtime.taps.watching(session_id):
        runtime.taps.record(session_id, "in", obj)
    message_type = obj["type"]
    dctx = dispatch_context(
        session, scope, request_id, params, None, transport_kind=TRANSPORT_KIND, can_send_request=False
    )
    session.activate()

    async def deliver(response: dict[str, Any] | None) -> None:
        await session.emit_event(api_result_event(message_type, request_id, response))

    # Handlers begin in acceptance order; results leave in the order they finished (sessions/ordering.py).
    await deliver_in_order(accepted, lambda: session.answer(dctx, method, params), deliver)


async def restore(runtime: Runtime, record: SessionRecord) -> ApiSession:
    """Rebuild a DataPulse API session taken over from a dead instance: its event stream continues
    with the same event ids, and every stored result can be replayed with ``Last-Event-ID``."""
    session = ApiSession(record.session_id, record.principal, runtime, epoch=record.epoch)
    if session.journal is not None:
        for entry in await session.journal.read_all():
            session._seq = max(session._seq, entry.seq)
            if entry.stream_key == session.events.key:
                session.events.restore(entry.seq, entry.frame, entry.delivered_seq)
    return session


def parse_api_message(obj: Any) -> tuple[str | int, str, dict[str, Any]]:
    """Validate a DataPulse API message and translate it to ``(request_id, MCP method, params)``.

    ``call_tool`` takes the tool name from ``data.name`` and its arguments from ``data.arguments``
    when present, else from the other members of ``data`` (the seed's flat form).

    Raises:
        InvalidRequest: not an object, missing/ill-typed ``request_id`` or ``data``, no tool name.
        MethodNotFound: an unknown ``type`` (the message lists the known ones).
    """
    if not isinstance(obj, dict):
        raise InvalidRequest('Bad Request: send an object {"type", "request_id", "data"}')
    request_id = obj.get("request_id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int) or request_id == "":
        raise InvalidRequest('Bad Request: "request_id" must be a non-empty string or an integer')
    message_type = obj.get("type")
    if not isinstance(message_type, str) or message_type not in MESSAGE_TYPES:  # a dict or list is unhashable
        raise MethodNotFound(
            f"Unknown message type {message_type!r}; use one of: {', '.join(MESSAGE_TYPES)}", data=message_type
        )
    data = obj.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidRequest('Bad Request: "data" must be an object')
    method = MESSAGE_TYPES[message_type]
    if method == "tools/list":
        return request_id, method, {}
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest('Bad Request: call_tool needs "data.name", the tool to call')
    arguments = data.get("arguments")
    if arguments is None:
        arguments = {k: v for k, v in data.items() if k != "name"}
    if not isinstance(arguments, dict):
        raise InvalidRequest('Bad Request: "data.arguments" must be an object')
    return request_id, method, {"name": name, "arguments": arguments}


def overflow_event(dropped: int) -> bytes:
    """The error event (no event id) that tells a client its stream's cap dropped ``dropped`` undelivered
    events: ``{"type": "error", "request_id": null, "error": "...", "dropped": N}``."""
    text = _jsonrpc.dumps(
        {
            "type": "error",
            "request_id": None,
            "error": f"{dropped} events were dropped: more than the session's cap waited for a stream "
            "(outbound_queue_max_messages); keep GET /events connected",
            "dropped": dropped,
        }
    )
    return encode_event(text)


def api_result_event(message_type: str, request_id: str | int, response: Mapping[str, Any] | None) -> dict[str, Any]:
    """Shape an MCP response (a JSON-RPC response object, or None for a cancelled request) as the seed's stream
    event.

    ``list_tools`` → ``{"type": "list_tools", "request_id", "data": {"tools": [...]}}``; a tool result
    → ``{"type": "tool_result", "request_id", "data": <structuredContent, or {"content": [...]}>}``;
    a JSON-RPC error or a tool error (``isError``) → ``{"type": "error", "request_id", "error": "..."}``.
    """
    if response is None:
        return {"type": "error", "request_id": request_id, "error": "request cancelled"}
    if "error" in response:
        return {"type": "error", "request_id": request_id, "error": response["error"].get("message", "error")}
    result: dict[str, Any] = response.get("result", {})
    if message_type == "list_tools":
        return {"type": "list_tools", "request_id": request_id, "data": {"tools": result.get("tools", [])}}
    content = result.get("content", [])
    if result.get("isError"):
        text = " ".join(block.get("text", "") for block in content if isinstance(block, dict)).strip()
        return {"type": "error", "request_id": request_id, "error": text or "tool failed"}
    structured = result.get("structuredContent")
    data = structured if isinstance(structured, dict) else {"content": content}
    return {"type": "tool_result", "request_id": request_id, "data": data}


async def _stateless_jsonrpc(runtime: Runtime, scope: Scope, send: Send, message: _jsonrpc.Message) -> None:
    """Answer a JSON-RPC request on ``POST /message`` (no session) in the HTTP response itself."""
    if isinstance(message, _jsonrpc.Response):
        raise InvalidRequest(
            "Invalid Request: a JSON-RPC response was POSTed to /message without session_id, where no request of "
            "the server waits for it; send responses to the session that asked (POST /messages?session_id=...)"
        )
    if not isinstance(message, _jsonrpc.Request):
        await send_bytes(send, 202, b"", headers=())  # a notification: acknowledged, nothing to answer
        return
    session = _StatelessSession(runtime)
    response = await dispatch(
        session, scope, message, _drop, transport_kind=TRANSPORT_KIND, allow_aliases=True, can_send_request=False
    )
    try:
        assert response is not None
        await send_bytes(send, 200, response.encode())
    finally:
        await session.finish_close()


class _StatelessSession(LiveSession):
    """A throwaway born-ready connection for one stateless JSON-RPC exchange (no back-channel)."""

    kind = SessionKind.DATAPULSE_API

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(
            "stateless", "stateless", runtime.server, runtime.lifespan_state, runtime.settings.server_request_timeout_s
        )
        self.fast_path = runtime.fast_path

    def _make_connection(self) -> _sdk.Connection:
        connection = _sdk.Connection(self, protocol_version=_sdk.LATEST_HANDSHAKE_VERSION)
        connection.initialized.set()
        return connection


async def _drop(_message_json: str) -> None:
    """Request-scoped notifications have nowhere to go on a stateless exchange."""
