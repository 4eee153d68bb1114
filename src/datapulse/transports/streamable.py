"""``/mcp``: Streamable HTTP for every era on one endpoint.

Era routing (spec 2026-07-28 basic/transports/streamable-http "Protocol Version Header" and
"Backward Compatibility"): ``MCP-Protocol-Version: 2026-07-28`` → the stateless path
(`datapulse.transports.modern`); a handshake-era version or no header → the session path below
(spec 2025-11-25 basic/transports "Streamable HTTP"); any other version → 400 listing the supported
ones.

Session path: ``initialize`` without ``Mcp-Session-Id`` opens a session and returns its id; every
later request carries it. A POSTed request is answered with JSON, or with an SSE stream when the
handler sends messages before its result (progress, logs, sampling/elicitation requests). Every
SSE event has an id ``<stream>.<seq>``; ``GET`` with ``Last-Event-ID`` replays the rest of that
stream. ``GET`` without it opens the session's standalone stream; ``DELETE`` ends the session.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
from starlette.types import Receive, Scope, Send

from datapulse import _sdk
from datapulse.auth.principal import principal_of
from datapulse.errors import (
    BadRequest,
    Conflict,
    InvalidRequest,
    MethodNotAllowed,
    MissingSessionId,
    NotAcceptable,
    StreamClosed,
)
from datapulse.runtime import Runtime
from datapulse.sessions.live import REQUEST_CANCELLED, LiveSession
from datapulse.sessions.registry import SessionKind, SessionRecord
from datapulse.sessions.streams import EventJournal, EventStream, JournalEntry, SseConnection
from datapulse.transports import _jsonrpc, modern
from datapulse.transports._dispatch import dispatch
from datapulse.transports._http import (
    Header,
    header,
    read_body,
    require_json_content_type,
    send_bytes,
    send_empty,
)
from datapulse.transports._jsonrpc import notification_json
from datapulse.transports._negotiation import accepts, classify_era, is_valid_session_id, parse_last_event_id
from datapulse.transports._sse_codec import encode_event, encode_message_event
from datapulse.transports._streaming import end_sse, hold_open, start_sse

log = logging.getLogger("datapulse.transport.streamable")

TRANSPORT_KIND = "streamable-http"
STANDALONE_SUFFIX = "g"
REQUEST_STREAM_MARK = "r"
RECENT_REQUEST_STREAMS = 32
"""Finished request streams kept per session so a client can still resume them."""
ALLOWED_METHODS = ("GET", "POST", "DELETE")
PRIMING_SINCE = "2025-11-25"
"""Priming events (an id with empty data) are sent to clients speaking this version or later."""


class StreamableSession(LiveSession):
    """A 2025-era Streamable HTTP session: a standalone stream plus one stream per streamed request."""

    kind = SessionKind.STREAMABLE_HTTP

    def __init__(
        self,
        session_id: str,
        principal: str,
        runtime: Runtime,
        *,
        epoch: str | None = None,
        handshake: tuple[str, _sdk.InitializeRequestParams] | None = None,
    ) -> None:
        self._handshake = handshake
        super().__init__(
            session_id,
            principal,
            runtime.server,
            runtime.lifespan_state,
            runtime.settings.server_request_timeout_s,
            epoch,
        )
        self._taps = runtime.taps
        self.fast_path = runtime.fast_path
        self._history_max = runtime.settings.outbound_queue_max_messages
        self.journal = runtime.journal(session_id)
        self._seq = 0
        self._stream_no = 0
        self.standalone = self._stream(self.epoch + STANDALONE_SUFFIX, self.journal)
        self.request_streams: OrderedDict[str, EventStream] = OrderedDict()

    def _make_connection(self) -> _sdk.Connection:
        if self._handshake is None:
            return super()._make_connection()
        protocol_version, client_params = self._handshake
        connection = _sdk.Connection(
            self, protocol_version=protocol_version, session_id=self.id, client_params=client_params
        )
        connection.initialized.set()
        return connection

    def restore_events(self, events: list[JournalEntry]) -> None:
        """Rebuild the stream histories from journal entries after a takeover: the standalone stream continues
        (what it had not delivered waits for the next GET), request streams come back finished (their
        handlers died)."""
        request_prefix = self.epoch + REQUEST_STREAM_MARK
        for key, seq, frame, delivered_seq in events:
            self._seq = max(self._seq, seq)
            if key == self.standalone.key:
                self.standalone.restore(seq, frame, delivered_seq)
                continue
            number = key[len(request_prefix) :]
            if not key.startswith(request_prefix) or not number.isdigit():
                continue
            self._stream_no = max(self._stream_no, int(number))
            stream = self.request_streams.get(key)
            if stream is None:
                stream = self.request_streams[key] = self._stream(key, None)
                stream.finished = True
            stream.restore(seq, frame, seq)

    def _stream(self, key: str, journal: EventJournal | None) -> EventStream:
        return EventStream(key, self._history_max, self._next_seq, journal, overflow_notice=overflow_notification)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def new_request_stream(self) -> EventStream:
        """A new resumable stream for one POSTed request (the last `RECENT_REQUEST_STREAMS` are kept)."""
        self._stream_no += 1
        key = f"{self.epoch}{REQUEST_STREAM_MARK}{self._stream_no}"
        stream = self._stream(key, self.journal)
        self.request_streams[stream.key] = stream
        while len(self.request_streams) > RECENT_REQUEST_STREAMS:
            self.request_streams.popitem(last=False)
        return stream

    def find_stream(self, key: str) -> EventStream | None:
        """The standalone or request stream named by an event-id prefix, or None if it is gone."""
        return self.standalone if key == self.standalone.key else self.request_streams.get(key)

    def event_streams(self) -> Sequence[EventStream]:
        return (self.standalone, *self.request_streams.values())

    @property
    def primes(self) -> bool:
        """Whether SSE streams start with a priming event (client speaks 2025-11-25 or later)."""
        return self.connection.protocol_version >= PRIMING_SINCE

    @property
    def has_open_stream(self) -> bool:
        return any(
            stream.connection is not None and not stream.connection.closed
            for stream in (self.standalone, *self.request_streams.values())
        )

    def end_streams(self, reason: str) -> None:
        for stream in (self.standalone, *self.request_streams.values()):
            if stream.connection is not None:
                stream.connection.abort(reason)

    async def emit_standalone(self, message_json: str) -> None:
        """Send a message not tied to a request on the GET stream (kept for replay while none is open)."""
        if self._taps.watching(self.id):
            self._taps.record(self.id, "out", message_json)
        await self.standalone.emit(lambda event_id: encode_message_event(message_json, event_id=event_id))

    # Standalone channel for the SDK Connection: the GET stream (buffered while none is connected).
    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: _sdk.CallOptions | None = None) -> None:
        await self.emit_standalone(notification_json(method, params))

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: _sdk.CallOptions | None = None
    ) -> dict[str, Any]:
        return await self.send_request(method, params, self.emit_standalone, (opts or {}).get("timeout"))


class PostExchange:
    """The HTTP response of one POSTed request: JSON if the result comes first, else an SSE stream."""

    __slots__ = ("_own", "_runtime", "_send", "_session", "_sse_ok", "stream")

    def __init__(self, runtime: Runtime, session: StreamableSession, send: Send, sse_ok: bool) -> None:
        self._runtime = runtime
        self._session = session
        self._send = send
        self._sse_ok = sse_ok
        self.stream: EventStream | None = None
        self._own: SseConnection | None = None

    async def emit(self, message_json: str) -> None:
        """Send a message that precedes the result (notification or server-to-client request)."""
        if not self._sse_ok:
            log.debug("session %s: dropped a message; the client does not accept SSE", self._session.id[:16])
            return
        taps = self._runtime.taps
        if taps.watching(self._session.id):
            taps.record(self._session.id, "out", message_json)
        stream = self.stream if self.stream is not None else await self._commit()
        await stream.emit(lambda event_id: encode_message_event(message_json, event_id=event_id))

    async def _commit(self) -> EventStream:
        session = self._session
        stream = self.stream = session.new_request_stream()
        connection = self._own = SseConnection(
            self._send,
            self._runtime.settings.slow_client_timeout_s,
            observe_depth=self._runtime.metrics.outbound_queue_depth.observe,
        )
        stream.connection = connection
        await start_sse(self._send, _session_header(session.id))
        if session.primes:
            retry_ms = self._runtime.settings.retry_ms
            await stream.emit(lambda event_id: encode_event("", event_id=event_id, retry_ms=retry_ms))
        return stream

    async def finish(self, response_text: str | None, request_id: str | int) -> None:
        """Send the result and end the response (``None``: the client cancelled the request with
        ``notifications/cancelled``; the HTTP exchange still needs an end, so it gets -32800)."""
        session = self._session
        if response_text is None:
            response_text = _jsonrpc.error_json(request_id, REQUEST_CANCELLED, "Request cancelled")
        taps = self._runtime.taps
        if taps.watching(session.id):
            taps.record(session.id, "out", response_text)
        stream = self.stream
        if stream is None:
            await send_bytes(self._send, 200, response_text.encode(), extra=_session_header(session.id))
            return
        await stream.emit(lambda event_id: encode_message_event(response_text, event_id=event_id))
        stream.finished = True
        current = stream.connection
        if current is not None and current is not self._own:
            current.abort("request stream complete")  # a resumed GET carried the tail; end it too
        with anyio.move_on_after(1, shield=True):
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})


def _session_header(session_id: str) -> tuple[Header, ...]:
    return ((b"mcp-session-id", session_id.encode()),)


async def handle(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """Route one ``/mcp`` request to its era and HTTP method."""
    version = header(scope, b"mcp-protocol-version")
    era = classify_era(version)
    method = scope["method"]
    if era == "unsupported":
        assert version is not None
        await modern.reject_unsupported_version(runtime, scope, receive, send, version)
        return
    if era == "modern":
        if method != "POST":
            raise MethodNotAllowed(method, ("POST",))
        await modern.handle_post(runtime, scope, receive, send)
        return
    if method == "POST":
        await _post(runtime, scope, receive, send)
    elif method == "GET":
        await _get(runtime, scope, receive, send)
    elif method == "DELETE":
        await _delete(runtime, scope, send)
    else:
        raise MethodNotAllowed(method, ALLOWED_METHODS)


def _require_session_id(scope: Scope) -> str:
    session_id = header(scope, b"mcp-session-id")
    if session_id is None:
        raise MissingSessionId(
            "Bad Request: the Mcp-Session-Id header is required; send initialize without it to open a session"
        )
    if not is_valid_session_id(session_id):
        raise InvalidRequest("Bad Request: Mcp-Session-Id must be 1-128 visible ASCII characters")
    return session_id


async def _post(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    json_ok, sse_ok = accepts(header(scope, b"accept"))
    if not json_ok:
        raise NotAcceptable("Not Acceptable: the Accept header must include application/json and text/event-stream")
    require_json_content_type(scope)
    body = await read_body(scope, receive, runtime.settings.max_body_bytes)
    message = _jsonrpc.classify(_jsonrpc.loads(body))
    principal = principal_of(scope).key
    if header(scope, b"mcp-session-id") is None:
        if not (isinstance(message, _jsonrpc.Request) and message.method == "initialize"):
            _require_session_id(scope)
        await _initialize(runtime, scope, send, principal, message, sse_ok)
        return
    session = await runtime.sessions.lookup(_require_session_id(scope), principal, StreamableSession)
    if runtime.taps.watching(session.id):
        runtime.taps.record(session.id, "in", body)
    if not isinstance(message, _jsonrpc.Request):
        if isinstance(message, _jsonrpc.Response):
            session.resolve(message)
        await send_empty(send, 202, _session_header(session.id))
        if isinstance(message, _jsonrpc.Notification):
            await dispatch(session, scope, message, _never, transport_kind=TRANSPORT_KIND, allow_aliases=False)
        return
    exchange = PostExchange(runtime, session, send, sse_ok)
    response = await dispatch(
        session,
        scope,
        message,
        exchange.emit,
        transport_kind=TRANSPORT_KIND,
        allow_aliases=False,
        can_send_request=sse_ok,
    )
    await exchange.finish(response, message.id)


async def _initialize(
    runtime: Runtime, scope: Scope, send: Send, principal: str, message: _jsonrpc.Message, sse_ok: bool
) -> None:
    """Open a session for an ``initialize`` request; keep it only if initialization succeeds."""
    assert isinstance(message, _jsonrpc.Request)
    session = await runtime.sessions.open(StreamableSession(runtime.new_session_id(), principal, runtime))
    response = await dispatch(
        session, scope, message, _never, transport_kind=TRANSPORT_KIND, allow_aliases=False, can_send_request=False
    )
    assert response is not None
    client_params = session.connection.client_params
    if client_params is None:
        await runtime.sessions.close(session.id, "initialize failed")
        await send_bytes(send, 200, response.encode())
        return
    await runtime.sessions.registry.annotate(
        session.id,
        protocol_version=session.connection.protocol_version,
        initialize_params=client_params.model_dump_json(by_alias=True, exclude_none=True),
    )
    await send_bytes(send, 200, response.encode(), extra=_session_header(session.id))


async def _get(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    _, sse_ok = accepts(header(scope, b"accept"))
    if not sse_ok:
        raise NotAcceptable("Not Acceptable: GET /mcp returns text/event-stream; add it to the Accept header")
    session = await runtime.sessions.lookup(_require_session_id(scope), principal_of(scope).key, StreamableSession)
    stream, after_seq = _resume_target(session, header(scope, b"last-event-id"))
    if after_seq is None and stream.connection is not None and not stream.connection.closed:
        raise Conflict("Conflict: this session already has an open GET stream; close it or resume with Last-Event-ID")
    settings = runtime.settings
    cancel = anyio.CancelScope()
    connection = SseConnection(
        send,
        settings.slow_client_timeout_s,
        on_abort=cancel.cancel,
        observe_depth=runtime.metrics.outbound_queue_depth.observe,
    )
    runtime.sessions.stream_opened(SessionKind.STREAMABLE_HTTP)
    reason = "client disconnected"
    try:
        await start_sse(send, _session_header(session.id))
        session.activate()
        await stream.attach(connection, after_seq)
        if stream is session.standalone and after_seq is None and session.primes:
            retry_ms = settings.retry_ms
            await stream.emit(lambda event_id: encode_event("", event_id=event_id, retry_ms=retry_ms))
        if not stream.finished:
            reason = await hold_open(
                receive, connection, cancel, settings.keepalive_interval_s, on_tick=stream.flush_pending
            )
    except StreamClosed:
        reason = connection.close_reason or "stream closed"
    finally:
        runtime.sessions.stream_closed(SessionKind.STREAMABLE_HTTP)
        stream.detach(connection)
        server_ended = connection.close_reason is not None and not stream.finished
        connection.mark_closed()
        log.debug("session %s: GET stream %s ended (%s)", session.id[:16], stream.key, reason)
        await end_sse(send, retry_ms=settings.retry_ms if server_ended else None)


def _resume_target(session: StreamableSession, last_event_id: str | None) -> tuple[EventStream, int | None]:
    """The stream a GET attaches to and the sequence number to replay after (None: a fresh standalone GET).

    Raises:
        BadRequest: ``Last-Event-ID`` names a stream or event this session no longer has (400; the
            client should re-issue its request).
    """
    if last_event_id is None:
        return session.standalone, None
    parsed = parse_last_event_id(last_event_id)
    stream = session.find_stream(parsed[0]) if parsed is not None else None
    if parsed is None or stream is None or not stream.knows(parsed[1]):
        raise BadRequest("Bad Request: Last-Event-ID is unknown or too old to resume; re-send the request instead")
    return stream, parsed[1]


async def _delete(runtime: Runtime, scope: Scope, send: Send) -> None:
    session = await runtime.sessions.lookup(_require_session_id(scope), principal_of(scope).key, StreamableSession)
    await runtime.sessions.close(session.id, "client sent DELETE")
    await send_empty(send, 200)


def overflow_notification(dropped: int) -> bytes:
    """The SSE frame (no event id) that tells a client its stream's cap dropped ``dropped`` undelivered
    messages: a ``notifications/message`` at level ``error`` from logger ``datapulse`` (spec 2025-11-25
    server/utilities/logging), data ``{"error": "...", "dropped": N}``."""
    params = {
        "level": "error",
        "logger": "datapulse",
        "data": {
            "error": f"{dropped} messages were dropped: more than the stream's cap waited for a client "
            "(outbound_queue_max_messages); keep the GET stream open",
            "dropped": dropped,
        },
    }
    return encode_message_event(notification_json("notifications/message", params))


async def _never(_message_json: str) -> None:
    """Notifications and initialize have no request-scoped stream to write to."""


async def restore(runtime: Runtime, record: SessionRecord) -> StreamableSession | None:
    """Rebuild a session taken over from a dead instance: the stored ``initialize`` params stand in
    for a new handshake, and the journal restores the streams for ``Last-Event-ID`` replay. Requests
    that were in flight on the dead instance are lost; clients re-send them (spec 2025-11-25
    basic/transports "Resumability and Redelivery"). None if the session never finished initializing.
    """
    if record.protocol_version is None or record.initialize_params is None:
        return None
    client_params = _sdk.InitializeRequestParams.model_validate_json(record.initialize_params)
    session = StreamableSession(
        record.session_id,
        record.principal,
        runtime,
        epoch=record.epoch,
        handshake=(record.protocol_version, client_params),
    )
    session.era = "legacy"
    journal = session.journal
    if journal is not None:
        session.restore_events(await journal.read_all())
    return session
