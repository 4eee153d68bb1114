"""The 2026-07-28 Streamable HTTP path: one stateless POST, one JSON-RPC exchange.

Spec 2026-07-28 basic/transports/streamable-http. Each POST carries one request whose ``params._meta``
names the protocol version and client capabilities; headers mirror ``method`` and ``name``
(``Mcp-Method``/``Mcp-Name``/``Mcp-Param-*``) and must match the body (400 ``HeaderMismatch``).
The response is ``application/json`` unless the handler emits a request-scoped notification
(progress, log) first, or stays silent for a keepalive interval: then it becomes
``text/event-stream`` with ``: ping`` comments. Closing the response stream cancels the request.

The handler runs inline in the HTTP request's task, with no per-request task group, memory
stream or disconnect-watcher task; a watcher task is started only for a request that outlives
``WATCH_AFTER_S`` or turns into a stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import anyio
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from datapulse import _sdk
from datapulse.errors import (
    DataPulseError,
    InvalidRequest,
    MethodNotFound,
    NotAcceptable,
    StreamClosed,
    Unavailable,
)
from datapulse.runtime import Runtime
from datapulse.sessions.live import HttpRequestViews
from datapulse.sessions.streams import SseConnection
from datapulse.transports import _jsonrpc
from datapulse.transports._http import SSE_HEADERS, header, read_body, require_json_content_type, send_bytes, send_empty
from datapulse.transports._negotiation import accepts, resolve_method
from datapulse.transports._sse_codec import PING_FRAME, encode_message_event, encode_retry

log = logging.getLogger("datapulse.transport.modern")

WATCH_AFTER_S = 1.0
"""A request still running after this long gets a disconnect watcher (so a closed stream cancels it)."""


class ModernExchange(HttpRequestViews):
    """The SDK `DispatchContext` of one 2026-07-28 request, and its HTTP response.

    Notifications commit the response to SSE; server-to-client requests are refused (the era embeds
    them in results as MRTR input requests).
    """

    __slots__ = (
        "_cancel",
        "_keepalive_s",
        "_params",
        "_receive",
        "_runtime",
        "_send",
        "_sse_ok",
        "_timer",
        "_watcher",
        "cancel_scope",
        "connection",
        "request_id",
    )

    def __init__(
        self,
        runtime: Runtime,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str | int,
        params: Mapping[str, Any] | None,
        sse_ok: bool,
    ) -> None:
        self._runtime = runtime
        self._scope = scope
        self._kind = "streamable-http"
        self._can_send = False
        self._params = params
        self._receive = receive
        self._send = send
        self._sse_ok = sse_ok
        self._keepalive_s = runtime.settings.keepalive_interval_s
        self._cancel: anyio.Event | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.request_id = request_id
        self._transport: _sdk.TransportContext | None = None
        self._metadata: _sdk.ServerMessageMetadata | None = None
        self.connection: SseConnection | None = None
        self.cancel_scope = anyio.CancelScope()

    # --- DispatchContext ------------------------------------------------------------------------------------
    @property
    def progress_token(self) -> str | int | None:
        return _sdk.progress_token_from_params(self._params)

    @property
    def can_send_request(self) -> bool:
        return False

    @property
    def cancel_requested(self) -> anyio.Event:
        if self._cancel is None:
            self._cancel = anyio.Event()
        return self._cancel

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: _sdk.CallOptions | None = None
    ) -> dict[str, Any]:
        raise _sdk.NoBackChannelError(method)

    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: _sdk.CallOptions | None = None) -> None:
        if not self._sse_ok:
            log.debug("dropped %s: the client does not accept text/event-stream", method)
            return
        frame = encode_message_event(_jsonrpc.notification_json(method, params))
        try:
            await (await self._commit()).write(frame)
        except StreamClosed:
            log.debug("dropped %s: response stream closed", method)

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        if self.progress_token is not None:
            params = _jsonrpc.progress_params(self.progress_token, progress, total, message)
            await self.notify("notifications/progress", params)

    # --- response -------------------------------------------------------------------------------------------
    async def _commit(self) -> SseConnection:
        """Turn the response into an SSE stream (once) and make sure a watcher runs."""
        connection = self.connection
        if connection is None:
            connection = self.connection = SseConnection(
                self._send,
                self._runtime.settings.slow_client_timeout_s,
                observe_depth=self._runtime.metrics.outbound_queue_depth.observe,
            )
            self._runtime.modern_streams.add(self.cancel_scope)
            await self._send({"type": "http.response.start", "status": 200, "headers": list(SSE_HEADERS)})
            self._start_watcher()
        return connection

    def arm(self) -> None:
        """Schedule the watcher for a request that runs longer than `WATCH_AFTER_S`."""
        self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start_watcher)

    def _start_watcher(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        """Cancel the request when the client disconnects; keep a silent stream alive with pings."""
        try:
            while True:
                with anyio.move_on_after(self._keepalive_s):
                    message = await self._receive()
                    if message["type"] == "http.disconnect":
                        if self.connection is not None:
                            self.connection.mark_closed()
                        self.cancel_scope.cancel()
                        return
                    continue
                if not self._sse_ok:
                    continue
                connection = await self._commit()
                if connection.offer():
                    await connection.write(PING_FRAME)
        except StreamClosed:
            return

    async def finish(self, response_text: str, status: int) -> None:
        """Send the final response: plain JSON with ``status``, or the last SSE frame of the stream."""
        self.disarm()
        connection = self.connection
        if connection is None:
            await send_bytes(self._send, status, response_text.encode())
            return
        self._runtime.modern_streams.discard(self.cancel_scope)
        try:
            await connection.write(encode_message_event(response_text))
        except StreamClosed:
            return
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def finish_cancelled(self) -> None:
        """End the response of a request cancelled by disconnect or shutdown (no JSON-RPC response)."""
        self.disarm()
        self._runtime.modern_streams.discard(self.cancel_scope)
        if self.connection is None:
            return
        with anyio.move_on_after(1, shield=True):
            retry = encode_retry(self._runtime.settings.retry_ms) if not self.connection.closed else b""
            await self._send({"type": "http.response.body", "body": retry, "more_body": False})

    def disarm(self) -> None:
        """Cancel the pending watcher timer and the watcher task (the exchange is over)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        watcher = self._watcher
        if watcher is not None and not watcher.done():
            watcher.cancel()


async def handle_post(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one 2026-07-28 POST to ``/mcp``.

    Raises (before any response byte):
        NotAcceptable (406), UnsupportedMediaType (415), PayloadTooLarge (413),
        ParseError / InvalidRequest (400).
    Protocol-level rejections (unsupported version, header mismatch, missing envelope, unknown
    method) are written directly as JSON-RPC errors with the spec's HTTP status.
    """
    json_ok, sse_ok = accepts(header(scope, b"accept"))
    if not json_ok:
        raise NotAcceptable("Not Acceptable: the Accept header must include application/json")
    require_json_content_type(scope)
    body = await read_body(scope, receive, runtime.settings.max_body_bytes)
    decoded = _jsonrpc.loads(body)
    if isinstance(decoded, dict) and "id" not in decoded and isinstance(decoded.get("method"), str):
        await send_empty(send, 202)  # spec: a notification POST is acknowledged; none is defined on this wire
        return
    message = _jsonrpc.classify(decoded)
    if not isinstance(message, _jsonrpc.Request):
        raise InvalidRequest("Invalid Request: send one JSON-RPC request per POST; responses are not accepted here")
    listen = message.method == "subscriptions/listen"
    if listen and not sse_ok:
        raise NotAcceptable("Not Acceptable: subscriptions/listen streams text/event-stream; accept it")
    if listen and runtime.cluster_bus is not None and not runtime.cluster_bus.connected:
        raise Unavailable(
            "Service Unavailable: this instance's change bus (Redis pub/sub) is reconnecting, so a listen stream "
            "here would miss other instances' events; listen again shortly",
            headers={"Retry-After": "1"},
        )
    rejection = _ladder(runtime, scope, decoded, message)
    if rejection is not None:
        await _reject(send, message.id, rejection)
        return
    meta = (message.params or {})["_meta"]
    version: str = meta["io.modelcontextprotocol/protocolVersion"]
    fast = runtime.fast_path
    plan = None if fast is None else fast.plan(message.method, message.params, version, True)

    def connection() -> _sdk.Connection:
        return _sdk.LeanConnection.from_envelope(
            version, meta.get("io.modelcontextprotocol/clientInfo"), meta["io.modelcontextprotocol/clientCapabilities"]
        )

    exchange = ModernExchange(runtime, scope, receive, send, message.id, message.params, sse_ok)
    exchange.arm()
    response_text: str | None = None
    status = 200
    counted = not listen  # a listen stream never ends on its own: not waited for
    if counted:
        runtime.modern_in_flight += 1
    else:
        runtime.listen_streams.add(exchange.cancel_scope)
    try:
        with exchange.cancel_scope:
            try:
                if plan is not None:
                    assert fast is not None
                    result = await fast.serve(plan, exchange, connection, runtime.lifespan_state)
                else:
                    result = await _sdk.serve_one(
                        runtime.server,
                        exchange,
                        message.method,
                        message.params,
                        connection=connection(),
                        lifespan_state=runtime.lifespan_state,
                    )
                response_text = _jsonrpc.response_json(message.id, result)
            except Exception as exc:
                error = _sdk.error_data_for(exc)
                status = _sdk.ERROR_CODE_HTTP_STATUS.get(error.code, 200)
                response_text = _jsonrpc.error_json(message.id, error.code, error.message, error.data)
    finally:
        exchange.disarm()
        if counted:
            runtime.modern_in_flight -= 1
        else:
            runtime.listen_streams.discard(exchange.cancel_scope)
    try:
        if response_text is None:
            await exchange.finish_cancelled()
        else:
            await exchange.finish(response_text, status)
    finally:
        if counted and runtime.draining:
            runtime.sessions.signal_change()  # the drain waits for in-flight requests to end


def _ladder(
    runtime: Runtime, scope: Scope, decoded: dict[str, Any], message: _jsonrpc.Request
) -> _sdk.InboundLadderRejection | None:
    """The spec's request validation, in order: duplicated routing headers, the ``_meta`` envelope and
    header/body agreement (SDK classifier), then ``Mcp-Param-*`` headers against the tool's schema."""
    try:
        resolve_method(message.method, allow_aliases=False)
    except MethodNotFound as exc:  # a seed alias (callTool): name the MCP method to use instead
        return _sdk.InboundLadderRejection(code=exc.jsonrpc_code, message=exc.message, data=message.method)
    routing: dict[bytes, bytes] = {}
    duplicated = param_headers = False
    for key, value in scope["headers"]:  # names are lowercase (ASGI)
        if key in _ROUTING_HEADERS:
            duplicated = duplicated or key in routing
            routing[key] = value
        elif key.startswith(b"mcp-param-"):
            param_headers = True
    if duplicated:  # the SDK names which one, from the raw header lines
        pairs = [(key.decode("latin-1"), value.decode("latin-1")) for key, value in scope["headers"]]
        which = _sdk.find_duplicated_routing_header(pairs)
        if which is not None:
            return _sdk.InboundLadderRejection(code=-32020, message=f"{which} header appears more than once")
    # the ladder reads only the routing headers (so a mapping of those is the whole header rung's input)
    headers = {key.decode("latin-1"): value.strip(b" \t").decode("latin-1") for key, value in routing.items()}
    verdict = _sdk.classify_inbound_request(decoded, headers=headers)
    if isinstance(verdict, _sdk.InboundLadderRejection):
        return verdict
    if message.method != "tools/call":
        return None
    params = message.params or {}
    name, arguments = params.get("name"), params.get("arguments") or {}
    if not isinstance(name, str) or not isinstance(arguments, Mapping):
        return None
    if not arguments and not param_headers:
        return None
    lookup = runtime.server.get_tool_input_schema
    if lookup is None:
        return None
    try:
        schema = lookup(name)
    except Exception:
        log.exception("Mcp-Param header validation skipped: get_tool_input_schema raised")
        return None
    if schema is None or not declares_param_headers(schema):
        return None
    return _sdk.validate_mcp_param_headers(schema, arguments, Headers(raw=_trimmed_headers(scope)))


_ROUTING_HEADERS = frozenset(
    name.encode() for name in (_sdk.MCP_PROTOCOL_VERSION_HEADER, _sdk.MCP_METHOD_HEADER, _sdk.MCP_NAME_HEADER)
)
"""The headers the SDK's ladder compares with the body (``classify_inbound_request``), and whose duplicates it
refuses (``find_duplicated_routing_header``)."""


def _trimmed_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The request headers with optional whitespace around values removed (RFC 9110 §5.5: OWS is not part
    of a field value; httptools keeps trailing whitespace, h11 strips it)."""
    return [(key, value.strip(b" \t")) for key, value in scope["headers"]]


_DECLARES: dict[int, tuple[object, bool]] = {}
_DECLARES_MAX = 1024


def declares_param_headers(schema: object) -> bool:
    """Whether a tool's input schema has an ``x-mcp-header`` annotation anywhere (spec 2026-07-28
    basic/transports/streamable-http "Mcp-Param headers"). Without one, ``validate_mcp_param_headers`` checks
    nothing: it compares only annotated properties. Remembered per schema object."""
    known = _DECLARES.get(id(schema))
    if known is not None and known[0] is schema:
        return known[1]
    if len(_DECLARES) >= _DECLARES_MAX:
        _DECLARES.clear()
    found = _mentions_header_annotation(schema)
    _DECLARES[id(schema)] = (schema, found)
    return found


def _mentions_header_annotation(node: object) -> bool:
    if isinstance(node, Mapping):
        return "x-mcp-header" in node or any(_mentions_header_annotation(value) for value in node.values())
    if isinstance(node, list | tuple):
        return any(_mentions_header_annotation(item) for item in node)
    return False


async def _reject(send: Send, request_id: str | int | None, rejection: _sdk.InboundLadderRejection) -> None:
    status = _sdk.ERROR_CODE_HTTP_STATUS.get(rejection.code, 400)
    body = _jsonrpc.error_json(request_id, rejection.code, rejection.message, rejection.data)
    await send_bytes(send, status, body.encode())


async def reject_unsupported_version(
    runtime: Runtime, scope: Scope, receive: Receive, send: Send, version: str
) -> None:
    """Answer a request whose ``MCP-Protocol-Version`` this server does not speak: 400 with
    ``UnsupportedProtocolVersion`` (-32022) naming the supported versions, echoing the request's id
    when the body has one (spec 2026-07-28 basic/versioning "Protocol Version Negotiation")."""
    request_id: str | int | None = None
    if scope["method"] == "POST":
        try:
            decoded = _jsonrpc.loads(await read_body(scope, receive, runtime.settings.max_body_bytes))
            if isinstance(decoded, dict):
                candidate = decoded.get("id")
                if isinstance(candidate, str | int) and not isinstance(candidate, bool):
                    request_id = candidate
        except DataPulseError:
            pass
    rejection = _sdk.unsupported_protocol_version_rejection(version)
    assert rejection is not None
    await _reject(send, request_id, rejection)
