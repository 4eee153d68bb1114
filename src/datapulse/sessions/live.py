"""The live side of a session: its SDK connection, in-flight requests and server-to-client requests.

A `LiveSession` is what the owning process holds for one session of any kind. It drives the SDK's
per-connection kernel (`ServerRunner`) one message at a time, from the task of the HTTP request
that carried the message, so the handler runs in that request's context (``get_access_token()``
works) and no per-session task, queue or dispatcher stays alive between messages.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

import anyio
from anyio import CancelScope
from starlette.datastructures import Headers
from starlette.requests import Request as StarletteRequest
from starlette.types import Scope

from datapulse import _sdk
from datapulse.sessions.lifecycle import SessionEvent, SessionState, is_open, transition
from datapulse.sessions.ordering import Accepted, SessionOrder
from datapulse.sessions.registry import SessionKind
from datapulse.sessions.streams import EventStream
from datapulse.transports._jsonrpc import (
    RequestId,
    Response,
    dumps,
    error_object,
    notification_json,
    progress_params,
    response_object,
)

log = logging.getLogger("datapulse.sessions")

Emit = Callable[[str], Awaitable[None]]
"""Writes one compact JSON-RPC message text to wherever the current request's messages go."""

UNSUPPORTED_PROTOCOL_VERSION = -32022

REQUEST_CANCELLED = -32800
"""The code the SDK uses for a request cancelled by ``notifications/cancelled`` (LSP-compatible)."""


CURRENT_SESSION: contextvars.ContextVar[LiveSession | None] = contextvars.ContextVar(
    "datapulse_current_session", default=None
)
"""The session whose request is being handled (set by `LiveSession.handle_request`)."""


class HttpRequestViews:
    """The SDK's views of the HTTP request that carried a message (``transport``, ``message_metadata`` of a
    ``DispatchContext``), built on first use: the fast path (`datapulse.fastpath`) reads neither. A subclass sets
    ``_scope``, ``_kind``, ``_can_send`` and ``_transport = _metadata = None``."""

    __slots__ = ("_can_send", "_kind", "_metadata", "_scope", "_transport")
    _scope: Scope
    _kind: str
    _can_send: bool
    _transport: _sdk.TransportContext | None
    _metadata: _sdk.ServerMessageMetadata | None

    def header_items(self) -> Iterable[tuple[bytes, bytes]]:
        """The HTTP request's headers as the ASGI scope holds them (lower-case names, raw values; not a copy)."""
        headers: Iterable[tuple[bytes, bytes]] = self._scope["headers"]
        return headers

    @property
    def transport(self) -> _sdk.TransportContext:
        """The handler's view of the HTTP request: transport kind, whether it may send requests, headers."""
        if self._transport is None:
            self._transport = _sdk.TransportContext(
                kind=self._kind, can_send_request=self._can_send, headers=Headers(scope=self._scope)
            )
        return self._transport

    @property
    def message_metadata(self) -> _sdk.ServerMessageMetadata:
        """The HTTP request as ``ctx.request`` (a Starlette `Request`), as with the SDK's own transports."""
        if self._metadata is None:
            self._metadata = _sdk.ServerMessageMetadata(request_context=StarletteRequest(self._scope))
        return self._metadata


class LegacyDispatchContext(HttpRequestViews):
    """The SDK `DispatchContext` for one inbound request on a session (2024-11-05 … 2025-11-25 eras).

    Request-scoped notifications, progress and server-to-client requests go to ``emit`` (the POST's
    own SSE response on Streamable HTTP, the session stream on HTTP+SSE). Structurally satisfies
    ``mcp.shared.dispatcher.DispatchContext``.
    """

    __slots__ = ("_cancel", "_emit", "_params", "_session", "request_id")

    def __init__(
        self,
        session: LiveSession,
        request_id: RequestId | None,
        emit: Emit | None,
        scope: Scope,
        params: Mapping[str, Any] | None,
        *,
        transport_kind: str,
        can_send_request: bool,
    ) -> None:
        self._session = session
        self._emit = emit
        self._scope = scope
        self._params = params
        self._kind = transport_kind
        self._can_send = can_send_request
        self._cancel: anyio.Event | None = None
        self._transport: _sdk.TransportContext | None = None
        self._metadata: _sdk.ServerMessageMetadata | None = None
        self.request_id = request_id

    @property
    def can_send_request(self) -> bool:
        return self._emit is not None and self._can_send

    def refuse_server_requests(self) -> None:
        """Serve this request under 2026-07-28 rules: no server-to-client requests (MRTR embeds them in results)."""
        self._can_send = False
        self._transport = None

    @property
    def cancel_requested(self) -> anyio.Event:
        if self._cancel is None:
            self._cancel = anyio.Event()
        return self._cancel

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: _sdk.CallOptions | None = None
    ) -> dict[str, Any]:
        if self._emit is None or not self._can_send:
            raise _sdk.NoBackChannelError(method)
        timeout = (opts or {}).get("timeout")
        return await self._session.send_request(method, params, self._emit, timeout)

    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: _sdk.CallOptions | None = None) -> None:
        if self._emit is not None:
            await self._emit(notification_json(method, params))

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        token = _sdk.progress_token_from_params(self._params)
        if token is not None:
            await self.notify("notifications/progress", progress_params(token, progress, total, message))


class _NotifyOnly:
    """The standalone channel of a 2026-07-28 exchange on a duplex session: notifications ride the session's
    stream, except change notifications (those belong to ``subscriptions/listen``); requests are refused."""

    __slots__ = ("_session",)

    def __init__(self, session: LiveSession) -> None:
        self._session = session

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: _sdk.CallOptions | None = None
    ) -> dict[str, Any]:
        raise _sdk.NoBackChannelError(method)

    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: _sdk.CallOptions | None = None) -> None:
        if method in _sdk.LISTEN_STREAM_METHODS:
            return
        await self._session.notify(method, params, opts)


class FastLane(Protocol):
    """What a session uses of `datapulse.fastpath.FastPath` (named here so sessions do not import it)."""

    served: int
    """Requests served on the fast path so far."""

    def plan(self, method: str, params: Mapping[str, Any] | None, protocol_version: str, initialized: bool) -> Any:
        """The plan to serve one request on the fast path, or None for the full path."""
        ...

    async def serve(
        self, plan: Any, dctx: Any, connection: Callable[[], _sdk.Connection], lifespan_state: Any
    ) -> dict[str, Any]:
        """Serve a plan; the result in the SDK kernel's wire form."""
        ...


class LiveSession:
    """One session's live state, shared by every transport kind.

    Subclasses provide the standalone channel (`notify` / `send_raw_request`, the SDK ``Outbound``
    the `Connection` uses for messages not tied to a request) and the transport wiring.
    """

    kind: SessionKind
    fast_path: FastLane | None = None
    """Serves the hot methods with the least work (`datapulse.fastpath`); set by the transports from the runtime."""
    dual_era: bool = False
    """Whether requests carrying the 2026-07-28 envelope are served on this session kind."""

    def __init__(
        self,
        session_id: str,
        principal: str,
        server: _sdk.Server[Any],
        lifespan_state: Any,
        server_request_timeout_s: float,
        epoch: str | None = None,
    ) -> None:
        self.id = session_id
        self.principal = principal
        self.opened_at = time.time()
        """When this process opened or took over the session (Unix seconds; the dashboard's age)."""
        self.epoch = epoch if epoch is not None else secrets.token_urlsafe(6)
        """Random prefix of this session's stream keys: event ids cannot be guessed from the session id."""
        self.state = SessionState.NEW
        self.moving = False
        """Set when this process lets the session go to another instance (drain hand-over, or fencing): requests
        that still find it here get `SessionMoved` (503, retry), not the 404 of a closed session."""
        self._server_request_timeout_s = server_request_timeout_s
        self._in_flight: dict[RequestId, CancelScope] | None = None
        self._pending: dict[str, anyio.Event] | None = None
        self._answers: dict[str, Response] | None = None
        self._ids = itertools.count(1)
        self.era: Literal["legacy", "modern"] | None = None
        self.on_idle: Callable[[], None] | None = None
        """Called when the last in-flight request ends (the session manager wakes its waiters: drain)."""
        self.resource_subscriptions: set[str] = set()
        """URIs this session subscribed to with ``resources/subscribe`` (handshake eras)."""
        self._order: SessionOrder | None = None
        self.connection = self._make_connection()
        self.runner: _sdk.ServerRunner[Any] = _sdk.ServerRunner(server, self.connection, lifespan_state)

    def _make_connection(self) -> _sdk.Connection:
        return _sdk.LeanConnection.for_loop(self, session_id=self.id)

    def accept(self) -> Accepted:
        """Place one request in this session's order (before acknowledging it): its handler begins after those
        of the requests accepted before it, and its result leaves in the order handlers finished (see
        `datapulse.sessions.ordering`; the order is made on first use and dropped when no request holds a ticket of
        it, so an idle session holds nothing)."""
        if self._order is None:
            self._order = SessionOrder()
        return Accepted(self._order, self._drop_order)

    def _drop_order(self, order: SessionOrder) -> None:
        """Forget an order nobody holds a ticket of (an idle session keeps none; the next request makes one)."""
        if self._order is order:
            self._order = None

    # --- lifecycle ----------------------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """Whether the session accepts messages (NEW or ACTIVE)."""
        return is_open(self.state)

    def activate(self) -> None:
        """Mark first use (NEW → ACTIVE); a no-op afterwards."""
        if self.state is SessionState.NEW:
            self.state = transition(self.state, SessionEvent.ACTIVATE)

    def begin_close(self, event: SessionEvent = SessionEvent.CLOSE) -> bool:
        """Move to CLOSING (or EXPIRED); False if the session was already closing or closed."""
        if not self.is_open:
            return False
        self.state = transition(self.state, event)
        return True

    async def finish_close(self) -> None:
        """End everything the session still runs: in-flight handlers, waiting server-to-client requests,
        and the SDK connection's exit stack (bounded, shielded)."""
        for scope in list((self._in_flight or {}).values()):
            scope.cancel()
        for event in list((self._pending or {}).values()):
            event.set()
        if self.state in (SessionState.CLOSING, SessionState.EXPIRED):
            self.state = transition(self.state, SessionEvent.FINISH)
        with anyio.move_on_after(5, shield=True):
            try:
                await self.connection.exit_stack.aclose()
            except Exception:
                log.exception("session %s: connection cleanup raised", self.id)

    @property
    def has_open_stream(self) -> bool:
        """Whether an SSE stream of this session is connected (an open stream keeps a session alive)."""
        return False

    def end_streams(self, reason: str) -> None:
        """Ask every open stream of the session to end (the owning tasks finish the responses)."""

    def event_streams(self) -> Sequence[EventStream]:
        """The session's resumable event streams (none for a 2024-11-05 session)."""
        return ()

    @property
    def busy(self) -> bool:
        """Whether a request is being handled (the session is not idle)."""
        return bool(self._in_flight)

    # --- inbound ------------------------------------------------------------------------------------------------
    async def handle_request(
        self, dctx: LegacyDispatchContext, method: str, params: dict[str, Any] | None
    ) -> str | None:
        """Run one request through the SDK kernel and return the JSON-RPC response text (`answer`, as compact
        JSON), or None when the client cancelled the request with ``notifications/cancelled``."""
        response = await self.answer(dctx, method, params)
        return None if response is None else dumps(response)

    async def answer(
        self, dctx: LegacyDispatchContext, method: str, params: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """Run one request through the SDK kernel and return the JSON-RPC response object.

        A session serves one protocol era, decided by its first request: the ``initialize`` handshake
        (2024-11-05 … 2025-11-25), or — where `dual_era` allows — requests carrying the 2026-07-28
        ``_meta`` envelope, each served as its own stateless exchange (as the SDK's duplex transports do).

        Returns:
            The response (success or error, JSON-RPC 2.0 §5), or None when the client cancelled the
            request with ``notifications/cancelled`` (spec: no response is sent for it).
        """
        request_id = dctx.request_id
        assert request_id is not None
        enveloped = method != "initialize" and _has_modern_envelope(params)
        if enveloped or (method == "initialize" and self.era == "modern"):
            if not self.dual_era or self.era == "legacy" or method == "initialize":
                return self._wrong_era(request_id, method)
            self.era = "modern"
        elif method == "initialize":
            self.era = "legacy"
        in_flight = self._in_flight
        if in_flight is None:
            in_flight = self._in_flight = {}
        scope = anyio.CancelScope()
        in_flight[request_id] = scope
        current = CURRENT_SESSION.set(self)
        try:
            with scope:
                if enveloped:
                    result = await self._serve_modern(dctx, method, params)
                else:
                    result = await self._serve(dctx, method, params)
                return response_object(request_id, result)
            return None
        except Exception as exc:
            error = _sdk.error_data_for(exc)
            return error_object(request_id, error.code, error.message, error.data)
        finally:
            CURRENT_SESSION.reset(current)
            if in_flight.get(request_id) is scope:
                del in_flight[request_id]
            if not in_flight and self.on_idle is not None:
                self.on_idle()

    def _wrong_era(self, request_id: RequestId, method: str) -> dict[str, Any]:
        if method == "initialize":
            return error_object(
                request_id,
                UNSUPPORTED_PROTOCOL_VERSION,
                "This connection serves the 2026-07-28 protocol; the initialize handshake is not accepted on it",
                {"supported": list(_sdk.MODERN_PROTOCOL_VERSIONS)},
            )
        return error_object(
            request_id,
            -32600,
            "This session speaks a handshake-era protocol version; requests carrying the 2026-07-28 _meta "
            "envelope must be sent without Mcp-Session-Id and with MCP-Protocol-Version: 2026-07-28",
        )

    async def _serve(self, dctx: LegacyDispatchContext, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        """A handshake-era request: on the fast path when it can take it (`datapulse.fastpath`), else through the
        session's SDK kernel."""
        fast = self.fast_path
        connection = self.connection
        if fast is not None:
            plan = fast.plan(method, params, connection.protocol_version, connection.initialize_accepted)
            if plan is not None:
                return await fast.serve(plan, dctx, self._connection, self.runner.lifespan_state)
        return await self.runner.on_request(dctx, method, params)

    def _connection(self) -> _sdk.Connection:
        return self.connection

    async def _serve_modern(
        self, dctx: LegacyDispatchContext, method: str, params: dict[str, Any] | None
    ) -> dict[str, Any]:
        route = _sdk.classify_inbound_request({"method": method, "params": params})
        if isinstance(route, _sdk.InboundLadderRejection):
            raise _sdk.MCPError(code=route.code, message=route.message, data=route.data)
        connection = _sdk.LeanConnection.from_envelope(
            route.protocol_version, route.client_info, route.client_capabilities, outbound=_NotifyOnly(self)
        )
        dctx.refuse_server_requests()
        return await _sdk.serve_one(
            self.runner.server, dctx, method, params, connection=connection, lifespan_state=self.runner.lifespan_state
        )

    async def handle_notification(
        self, dctx: LegacyDispatchContext, method: str, params: dict[str, Any] | None
    ) -> None:
        """Handle a client notification: ``notifications/cancelled`` cancels the named in-flight request;
        anything else goes to the SDK kernel (which logs and drops what it does not know)."""
        if method == "notifications/cancelled":
            request_id = (params or {}).get("requestId")
            scope = (self._in_flight or {}).get(request_id) if isinstance(request_id, str | int) else None
            if scope is not None:
                scope.cancel()
            return
        await self.runner.on_notify(dctx, method, params)

    def resolve(self, response: Response) -> bool:
        """Deliver the client's answer to one of our server-to-client requests; False if none was waiting."""
        key = str(response.id)
        pending = self._pending
        if pending is None or key not in pending:
            log.info("session %s: dropped a response to unknown request id %r", self.id, response.id)
            return False
        if self._answers is None:
            self._answers = {}
        self._answers[key] = response
        pending[key].set()
        return True

    # --- outbound -----------------------------------------------------------------------------------------------
    async def send_request(
        self, method: str, params: Mapping[str, Any] | None, emit: Emit, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Send a server-to-client JSON-RPC request via ``emit`` and wait for the client's answer POST.

        Raises:
            MCPError: the client answered with an error, the wait timed out (-32001), or the session
                closed first (-32000).
        """
        request_id = f"dp-{next(self._ids)}"
        if self._pending is None:
            self._pending = {}
        arrived = self._pending[request_id] = anyio.Event()
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        try:
            await emit(dumps(message))
            with anyio.move_on_after(timeout_s or self._server_request_timeout_s):
                await arrived.wait()
            answer = (self._answers or {}).pop(request_id, None)
        finally:
            self._pending.pop(request_id, None)
        if answer is None:
            if not self.is_open:
                raise _sdk.MCPError(code=-32000, message="Session closed before the client answered")
            raise _sdk.MCPError(code=-32001, message=f"Client did not answer {method} in time")
        if answer.error is not None:
            raise _sdk.MCPError.from_error_data(_sdk.ErrorData.model_validate(answer.error))
        return answer.result or {}

    # Outbound protocol for the SDK Connection (the standalone channel); subclasses override.
    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: _sdk.CallOptions | None = None
    ) -> dict[str, Any]:
        raise _sdk.NoBackChannelError(method)

    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: _sdk.CallOptions | None = None) -> None:
        log.debug("session %s: dropped %s (no standalone channel)", self.id, method)


def _has_modern_envelope(params: Mapping[str, Any] | None) -> bool:
    meta = params.get("_meta") if params else None
    return isinstance(meta, Mapping) and "io.modelcontextprotocol/protocolVersion" in meta
