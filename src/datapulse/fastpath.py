"""The fast path: the hot methods of an SDK `MCPServer`, served with the least work and the same bytes.

For ``tools/call``, ``tools/list``, ``resources/read``, ``prompts/get`` and ``ping``, the SDK kernel
(``ServerRunner._on_request``, driven by ``serve_one`` on the 2026-07-28 path) builds a per-request
``ServerSession`` and ``ServerRequestContext``, validates the request's ``_meta``, runs the server's middleware
chain (DataPulse's observation and authorization, the SDK's OpenTelemetry span and ``requestState`` boundary,
DataPulse's ordering), calls the registered handler, shapes the result and, on the modern path, unwinds the
per-request connection's exit stack. When an item never reads its request context (a tool with no `Context`
or ``Resolve(...)`` parameter, a prompt with no `Context` parameter, a concrete resource), most of that does
nothing for the request at hand. `FastPath` then does only what does something:

1. the SDK's request validation (``validate_client_request`` and the handler's params model), first, so a
   request that fails it takes the full path and gets the SDK's own error;
2. DataPulse's observation (metrics, audit) and authorization (scopes, rate limits), the same code as their
   middleware (`ObservationMiddleware.around`, `AuthorizationMiddleware.around`), in the same order;
3. the session's acceptance order (`datapulse.sessions.ordering.in_turn`) around the handler;
4. the registered handler itself (``MCPServer._handle_call_tool`` and its kin), with no request context,
   and the kernel's own result shaping (``_sdk.result_serializer``);
5. the ``requestState`` boundary's sealing, in the rare case the result asks for input, through the SDK's
   `RequestStateBoundary` with a full request context built then.

Anything else takes the full SDK path: other methods, items that read their context, a ``requestState`` to
unseal, an OpenTelemetry tracer provider installed (the SDK's spans stay exactly as they are), middleware
DataPulse does not know on the server's chain, handlers replaced on the low-level server, a connection
not yet initialized, a request that fails validation. ``DATAPULSE_FAST_PATH=false`` turns it off.

``tests/test_fastpath_differential.py`` sends generated requests through both paths and compares the bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from datapulse import _sdk
from datapulse.auth.authorization import AuthorizationMiddleware
from datapulse.observe import ObservationMiddleware
from datapulse.sessions.ordering import OrderingMiddleware, in_turn
from datapulse.tracing import tracing_active

HOT_METHODS = frozenset({"tools/call", "tools/list", "resources/read", "prompts/get", "ping"})
"""The methods the fast path may serve."""

HandlerResult = Any


@dataclass(frozen=True, slots=True)
class Plan:
    """One request the fast path will serve: its method, raw params, validated params and handler."""

    method: str
    params: Mapping[str, Any] | None
    typed_params: Any
    """The handler's params model (for ``tools/call``: `_sdk.ToolCall`, all the fast path reads of it)."""
    handler: Callable[[Any, Any], Awaitable[HandlerResult]]
    protocol_version: str


@dataclass(frozen=True, slots=True)
class Layers:
    """What a server's middleware chain holds, when the fast path knows every member of it."""

    observation: ObservationMiddleware | None
    authorization: AuthorizationMiddleware | None
    boundary: _sdk.RequestStateBoundary | None
    traced: bool

    def around(
        self, method: str, params: Mapping[str, Any] | None, call: Callable[[], Awaitable[dict[str, Any]]]
    ) -> Awaitable[dict[str, Any]]:
        """``call()`` inside the chain's observation and authorization, in the chain's order (what those
        middlewares do for one request, without an SDK request context): the awaitable to await, with no
        coroutine of this method's own around it.

        Raises (when awaited):
            MCPError: a refusal (scope, rate limit), or whatever ``call()`` raises.
        """
        inner: Callable[[], Awaitable[HandlerResult]] = call
        if self.authorization is not None:
            inner = partial(self.authorization.around, method, params, inner)
        if self.observation is not None:
            return cast("Awaitable[dict[str, Any]]", self.observation.around(method, params, inner))
        return inner()

    def seals(self, result: dict[str, Any]) -> bool:
        """Whether the chain's ``requestState`` boundary changes ``result`` (`sealed`): an input-required result
        with a ``requestState``, when the chain has a boundary."""
        return self.boundary is not None and _sdk.is_input_required(result) and result.get("requestState") is not None

    async def sealed(self, result: dict[str, Any], server: _sdk.Server[Any], request: RequestView) -> dict[str, Any]:
        """``result`` as the chain's ``requestState`` boundary leaves it: an input-required result's
        ``requestState`` sealed (with a full SDK request context built for it), anything else as it is."""
        boundary = self.boundary
        if boundary is None or not self.seals(result):
            return result
        context = _sdk.request_context(
            server, request.connection, request.lifespan_state, request.dctx, request.method, request.params
        )
        return cast("dict[str, Any]", await boundary(context, partial(_returning, result)))


@dataclass(frozen=True, slots=True)
class RequestView:
    """What building a full SDK request context for one request takes (see `Layers.sealed`)."""

    method: str
    params: Mapping[str, Any] | None
    dctx: Any
    connection: Callable[[], _sdk.Connection]
    lifespan_state: Any


class ChainView:
    """The `Layers` of a low-level server's middleware chain, re-read whenever the chain changes.

    Args:
        server: the SDK low-level server whose ``middleware`` list is read.
    """

    def __init__(self, server: _sdk.Server[Any]) -> None:
        self._server = server
        self._chain: list[Any] | None = None  # the chain as last looked at (None: not yet)
        self._layers: Layers | None = None

    def layers(self) -> Layers | None:
        """The chain's layers, or None when it holds middleware the fast path does not know (or out of order)."""
        chain = self._server.middleware
        if chain != self._chain:  # the chain changed since last looked at (identity, then equality, per member)
            self._chain = list(chain)
            self._layers = _layers_of(self._chain)
        return self._layers


_KNOWN_MIDDLEWARE: tuple[type, ...] = (
    ObservationMiddleware,
    AuthorizationMiddleware,
    _sdk.OpenTelemetryMiddleware,
    _sdk.RequestStateBoundary,
    OrderingMiddleware,
)
"""The chain `create_app` builds (outermost first); the fast path applies the same layers in this order."""
_ITEM_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


class Lane:
    """What a lane beside the SDK kernel keeps of the low-level server it serves for (`FastPath`,
    `datapulse.bridge.passthrough.Passthrough`): the chain's layers, the kernel's result serializer, a count.

    Args:
        server: the SDK low-level server.
    """

    def __init__(self, server: _sdk.Server[Any]) -> None:
        self._server = server
        self._serialize = _sdk.result_serializer(server)
        self._chain = ChainView(server)
        self._layers: Layers | None = None
        self.served = 0
        """Requests served on this lane so far."""

    def _usable_layers(self) -> Layers | None:
        """The chain's layers (remembered for `serve`), or None when the request must take the full path: the chain
        holds middleware the lane does not know, or it traces and a tracer provider is installed."""
        layers = self._layers = self._chain.layers()
        if layers is None or (layers.traced and tracing_active()):
            return None
        return layers

    def _validated(self, entry: Any, method: str, params: Mapping[str, Any] | None, protocol_version: str) -> Any:
        """``params`` validated as the SDK kernel validates them (``validate_client_request``, then the handler's
        params model), or None when they fail (the full path answers with the SDK's own error). For ``tools/call``,
        the `_sdk.ToolCall` (name, arguments) those checks accept, remembered by everything but the arguments."""
        try:
            if method == "tools/call":
                return _sdk.validate_tool_call_remembered(entry.params_type, protocol_version, params)
            _sdk.validate_client_request_remembered(method, protocol_version, params)
            return entry.params_type.model_validate({} if params is None else params, by_name=False)
        except Exception:
            return None


class FastPath(Lane):
    """Serves an `MCPServer`'s hot methods (`HOT_METHODS`) with the least work; see the module docstring.

    Args:
        app: the SDK `MCPServer` being served.

    Use: ``plan = fast.plan(method, params, version, initialized)``; if it is None, take the full path;
    else ``await fast.serve(plan, dctx, connection, lifespan_state)``, which returns the result dict (the SDK
    kernel's wire form) or raises what the full path would raise (`MCPError`, or a handler's exception).
    """

    def __init__(self, app: _sdk.MCPServer) -> None:
        super().__init__(_sdk.lowlevel_server(app))
        self._app = app
        self._handlers = _sdk.hot_handlers(app)

    def plan(
        self, method: str, params: Mapping[str, Any] | None, protocol_version: str, initialized: bool
    ) -> Plan | None:
        """The plan for serving one request on the fast path, or None if it must take the full path.

        Args:
            method: the JSON-RPC method.
            params: its params as received (a JSON object or None).
            protocol_version: the connection's protocol version (2026-07-28: the request's envelope).
            initialized: whether the connection completed ``initialize`` (2026-07-28: always).
        """
        if method not in HOT_METHODS:
            return None
        if self._usable_layers() is None:
            return None
        if not initialized and method != "ping":
            return None
        entry = self._server.get_request_handler(method)
        if entry is None or entry.handler != self._handlers[method]:
            return None
        field = _ITEM_PARAM.get(method)
        if field is not None:
            if params is None or params.get("requestState") is not None:
                return None
            item = params.get(field)
            if not isinstance(item, str) or not self._plain(method, item):
                return None
        typed_params = self._validated(entry, method, params, protocol_version)
        if typed_params is None:
            return None
        return Plan(method, params, typed_params, cast(Any, entry.handler), protocol_version)

    def _plain(self, method: str, item: str) -> bool:
        if method == "tools/call":
            return _sdk.plain_tool(self._app, item)
        if method == "prompts/get":
            return _sdk.plain_prompt(self._app, item)
        return _sdk.static_resource(self._app, item)

    async def serve(
        self, plan: Plan, dctx: Any, connection: Callable[[], _sdk.Connection], lifespan_state: Any
    ) -> dict[str, Any]:
        """Serve ``plan`` and return its result in the SDK kernel's wire form.

        Args:
            plan: from `plan`.
            dctx: the request's SDK ``DispatchContext``; with ``connection`` (which makes or returns the request's
                SDK ``Connection``) and ``lifespan_state``, used only to build the full request context when the
                result carries a ``requestState`` to seal.
            connection: see ``dctx``.
            lifespan_state: what the server's lifespan yielded.

        Raises:
            MCPError: a refusal (scope, rate limit) or the handler's protocol error, as on the full path.
            Exception: whatever the handler raises, as on the full path (the caller maps it).
        """
        layers = self._layers
        assert layers is not None
        self.served += 1
        request = RequestView(plan.method, plan.params, dctx, connection, lifespan_state)
        return await layers.around(plan.method, plan.params, partial(self._handle, plan, layers, request))

    async def _handle(self, plan: Plan, layers: Layers, request: RequestView) -> dict[str, Any]:
        result = await in_turn(partial(self._inner, plan))
        return await layers.sealed(result, self._server, request) if layers.seals(result) else result

    async def _inner(self, plan: Plan) -> dict[str, Any]:
        if plan.method == "tools/call":  # straight to the tool's own Tool.run: no Context to build
            result = await _sdk.call_plain_tool(self._app, plan.typed_params.name, plan.typed_params.arguments or {})
        else:
            result = await plan.handler(None, plan.typed_params)  # no request context: the item reads none
        if isinstance(result, _sdk.ErrorData):
            raise _sdk.MCPError.from_error_data(result)
        return self._serialize(plan.method, plan.protocol_version, result)


async def _returning(result: dict[str, Any], _ctx: object) -> dict[str, Any]:
    return result


def _layers_of(chain: list[Any]) -> Layers | None:
    """The known layers of a middleware chain in the order the fast path reproduces, or None if the chain
    holds anything else or in another order."""
    if not all(isinstance(member, _KNOWN_MIDDLEWARE) for member in chain):
        return None
    order = [type(member) for member in chain]
    expected = [cls for cls in _KNOWN_MIDDLEWARE if cls in order]
    if order != expected:
        return None
    observation = next((m for m in chain if isinstance(m, ObservationMiddleware)), None)
    authorization = next((m for m in chain if isinstance(m, AuthorizationMiddleware)), None)
    boundary = next((m for m in chain if isinstance(m, _sdk.RequestStateBoundary)), None)
    traced = any(isinstance(m, _sdk.OpenTelemetryMiddleware) for m in chain)
    return Layers(observation, authorization, boundary, traced)


def fast_path_for(app: object, enabled: bool) -> FastPath | None:
    """A `FastPath` for ``app`` if it is an SDK `MCPServer` and ``enabled`` (``DATAPULSE_FAST_PATH``), else None."""
    if not enabled or not isinstance(app, _sdk.MCPServer):
        return None
    return FastPath(app)
