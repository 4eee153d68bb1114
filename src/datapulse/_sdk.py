"""The one module that touches the MCP SDK (``mcp`` 2.3.0) beyond its package-level ``__all__``.

DataPulse drives the SDK's kernel (`ServerRunner`, `Connection`, `serve_one`) from its own
transports. Names that are public in their module but not re-exported at the package level, and
the single private attribute we need (`MCPServer._lowlevel_server`), are imported here only, so an
SDK upgrade that moves them breaks one file — and ``tests/test_sdk_adapter.py`` fails loudly first.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, cast

import anyio
import anyio.lowlevel
import pydantic_core
from mcp.client._input_required import InputRequiredRoundsExceededError, run_input_required_driver
from mcp.client._probe import negotiate_auto
from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.connection import Connection
from mcp.server.lowlevel import Server
from mcp.server.lowlevel.server import HandlerEntry
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedResourceError, UnexpectedToolError
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata, _convert_to_content
from mcp.server.request_state import RequestStateBoundary
from mcp.server.runner import ServerRunner, serve_one
from mcp.server.subscriptions import SubscriptionBus
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    unsupported_protocol_version_rejection,
    validate_mcp_param_headers,
)
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data, progress_token_from_params
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.subscriptions import LISTEN_STREAM_METHODS
from mcp.shared.transport_context import TransportContext
from mcp_types import CallToolResult, ErrorData, InitializeRequestParams, InputRequiredResult, TextContent
from mcp_types.methods import CLIENT_REQUESTS, is_input_required, validate_client_request
from mcp_types.version import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    LATEST_HANDSHAKE_VERSION,
    LATEST_MODERN_VERSION,
    MODERN_PROTOCOL_VERSIONS,
)
from pydantic import BaseModel, TypeAdapter, ValidationError

__all__ = [
    "ERROR_CODE_HTTP_STATUS",
    "HANDSHAKE_PROTOCOL_VERSIONS",
    "LATEST_HANDSHAKE_VERSION",
    "LATEST_MODERN_VERSION",
    "LISTEN_STREAM_METHODS",
    "MCP_METHOD_HEADER",
    "MCP_NAME_HEADER",
    "MCP_PROTOCOL_VERSION_HEADER",
    "MODERN_PROTOCOL_VERSIONS",
    "AccessToken",
    "AuthenticatedUser",
    "CallOptions",
    "Connection",
    "ErrorData",
    "HandlerEntry",
    "InboundLadderRejection",
    "InitializeRequestParams",
    "InputRequiredRoundsExceededError",
    "LeanConnection",
    "MCPError",
    "MCPServer",
    "NoBackChannelError",
    "OpenTelemetryMiddleware",
    "RequestStateBoundary",
    "Server",
    "ServerMessageMetadata",
    "ServerRunner",
    "SubscriptionBus",
    "TransportContext",
    "auth_context_var",
    "call_plain_tool",
    "classify_inbound_request",
    "convert_tool_result",
    "error_data_for",
    "find_duplicated_routing_header",
    "hot_handlers",
    "is_input_required",
    "lowlevel_server",
    "negotiate_auto",
    "plain_prompt",
    "plain_tool",
    "progress_token_from_params",
    "replace_subscription_bus",
    "request_context",
    "result_serializer",
    "run_input_required_driver",
    "serve_one",
    "static_resource",
    "subscription_bus",
    "unsupported_protocol_version_rejection",
    "validate_client_request",
    "validate_client_request_remembered",
    "validate_mcp_param_headers",
]

logger = logging.getLogger("datapulse.handlers")
_mcpserver_logger = logging.getLogger("mcp.server.mcpserver.server")

INTERNAL_ERROR = -32603
INVALID_PARAMS = -32602

PROMPT_CALLER_ERRORS = ("Unknown prompt: ", "Missing required arguments: ")
"""How the SDK's prompt layer words the caller's mistakes, which it raises as plain ``ValueError``
(``mcp/server/mcpserver/prompts/manager.py`` and ``base.py``): answered -32602, not logged as a fault.
tests/test_sdk_adapter.py fails if an SDK upgrade changes the wording."""


class LazyEvent(anyio.Event):
    """An ``anyio.Event`` that makes its waiting machinery only when a task waits on it before it is set.

    anyio's asyncio event wraps an ``asyncio.Event``, whose waiter ``collections.deque`` takes 760 bytes from the
    start; a flag needs none of it until someone waits.
    """

    __slots__ = ("_flag", "_waiters")

    def __new__(cls) -> LazyEvent:
        return object.__new__(cls)

    def __init__(self) -> None:
        self._flag = False
        self._waiters: anyio.Event | None = None

    def set(self) -> None:
        self._flag = True
        if self._waiters is not None:
            self._waiters.set()

    def is_set(self) -> bool:
        return self._flag

    async def wait(self) -> None:
        if self._flag:
            await anyio.lowlevel.checkpoint()
            return
        if self._waiters is None:
            self._waiters = anyio.Event()
        await self._waiters.wait()

    def statistics(self) -> anyio.EventStatistics:
        return anyio.EventStatistics(0) if self._waiters is None else self._waiters.statistics()


class LeanConnection(Connection):
    """The SDK's `Connection`, holding its ``initialized`` event and ``exit_stack`` only once they are used.

    ``Connection.__init__`` makes an ``anyio.Event`` and an ``AsyncExitStack`` for every connection, each around a
    ``collections.deque`` of 760 bytes: about 1.5 KiB that an idle session (and a 2026-07-28 request) keeps for
    nothing. Here ``initialized`` is a `LazyEvent` and ``exit_stack`` is made on first access; both behave as the
    SDK's. ``for_loop`` and ``from_envelope`` build this class when called on it. `connection_seams` checks that
    the SDK still makes both attributes in ``__init__``.
    """

    _exit_stack: AsyncExitStack | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initialized = LazyEvent()  # the SDK's unset event is dropped
        self._exit_stack = None  # and its empty stack: one is made on first use

    @property
    def exit_stack(self) -> AsyncExitStack:
        stack = self._exit_stack
        if stack is None:
            stack = self._exit_stack = AsyncExitStack()
        return stack

    @exit_stack.setter
    def exit_stack(self, value: AsyncExitStack) -> None:
        self._exit_stack = value


def connection_seams() -> list[str]:
    """What no longer holds of the SDK's `Connection` that `LeanConnection` relies on (empty: all holds): its
    ``__init__`` assigns ``initialized`` an ``anyio.Event()`` and ``exit_stack`` an ``AsyncExitStack()``."""
    source = inspect.getsource(Connection.__init__)
    wanted = ("self.initialized = anyio.Event()", "self.exit_stack = AsyncExitStack()")
    return [f"Connection.__init__ no longer runs {line!r}" for line in wanted if line not in source]


def lowlevel_server(app: object) -> Server[Any]:
    """The low-level `Server` (the handler registry) behind an SDK `MCPServer` or `Server`.

    Raises:
        TypeError: ``app`` is neither.
    """
    if isinstance(app, Server):
        return app
    if isinstance(app, MCPServer):
        server = app._lowlevel_server  # the SDK exposes no public accessor (SDK-SEAMS.md §1.2)
        if not isinstance(server, Server):
            raise TypeError("MCPServer._lowlevel_server is not a low-level Server; the SDK changed")
        return server
    raise TypeError(f"expected an mcp MCPServer or low-level Server, got {type(app).__name__}")


def subscription_bus(app: object) -> SubscriptionBus | None:
    """The `SubscriptionBus` an `MCPServer` publishes change events to (``ctx.notify_*``) and its
    ``subscriptions/listen`` handler listens on; None for a low-level `Server` (its bus is the user's)."""
    if not isinstance(app, MCPServer):
        return None
    bus = getattr(app, "_subscriptions", None)  # no public accessor (SDK docs: "Scaling past one process")
    if bus is None or not hasattr(bus, "publish") or not hasattr(bus, "subscribe"):
        raise TypeError("MCPServer._subscriptions is not a SubscriptionBus; the SDK changed")
    return bus  # type: ignore[no-any-return]


def replace_subscription_bus(app: MCPServer, bus: SubscriptionBus) -> None:
    """Make ``app`` publish its change events (``ctx.notify_*``) to ``bus``."""
    app._subscriptions = bus


def error_data_for(exc: BaseException) -> ErrorData:
    """Map an exception raised by the handler chain to its JSON-RPC error.

    `MCPError` keeps its own code; a pydantic ``ValidationError`` is -32602 (the SDK's shared
    ladder); anything else is logged with its traceback here and sent as a generic -32603, so
    handler internals never reach the wire.
    """
    error = handler_exception_to_error_data(exc)
    if error is not None:
        return error
    if isinstance(exc, ValueError) and str(exc).startswith(PROMPT_CALLER_ERRORS):
        return ErrorData(code=INVALID_PARAMS, message=str(exc))
    logger.error("request handler raised", exc_info=exc)
    return ErrorData(code=INTERNAL_ERROR, message="Internal server error")


# --- the fast path's view of an MCPServer (datapulse.fastpath) -------------------------------------------------------


def hot_handlers(app: MCPServer) -> dict[str, object]:
    """The request handlers an `MCPServer` registers for the methods `datapulse.fastpath` serves, by method: the
    fast path serves a method only while its registered handler is still this one."""
    from mcp.server.lowlevel.server import _ping_handler  # the default ping handler (no public name)

    return {
        "tools/call": app._handle_call_tool,
        "tools/list": app._handle_list_tools,
        "resources/read": app._handle_read_resource,
        "prompts/get": app._handle_get_prompt,
        "ping": _ping_handler,
    }


def plain_tool(app: MCPServer, name: str) -> bool:
    """Whether ``name`` is a registered tool that never reads its request context: no `Context` parameter and
    no ``Resolve(...)`` parameters (only those read it, in ``Tool.run``)."""
    tool = app._tool_manager.get_tool(name)
    return tool is not None and tool.context_kwarg is None and not tool.resolved_params


def plain_prompt(app: MCPServer, name: str) -> bool:
    """Whether ``name`` is a registered prompt whose function takes no `Context` (``Prompt.render`` reads the
    context only to pass it to such a parameter)."""
    prompt = app._prompt_manager.get_prompt(name)
    return prompt is not None and prompt.context_kwarg is None


def static_resource(app: MCPServer, uri: str) -> bool:
    """Whether ``uri`` names a concrete resource (not a template match): reading one never reads the request
    context (``ResourceManager.get_resource`` passes it only to templates)."""
    return uri in app._resource_manager._resources


async def call_plain_tool(app: MCPServer, name: str, arguments: dict[str, Any]) -> Any:
    """Call the plain tool ``name`` (`plain_tool`) as ``MCPServer._handle_call_tool`` does, without the request
    context such a tool never reads: the tool's own ``Tool.run`` (argument validation, the call), its result
    converted as ``Tool.run(..., convert_result=True)`` converts it (`convert_tool_result`, failures mapped as
    ``Tool.run`` maps them), and a failure other than `MCPError` answered as an ``isError`` result, logged like the
    SDK logs it (logger ``mcp.server.mcpserver.server``).

    Returns:
        A ``CallToolResult`` (or the ``InputRequiredResult`` the tool returned).

    Raises:
        MCPError: raised by the tool (a protocol error, as on the full path).
    """
    tool = app._tool_manager.get_tool(name)
    try:
        if tool is None:
            raise ToolError(f"Unknown tool: {name}")
        result = await tool.run(arguments, cast(Any, None), convert_result=False)
        try:
            return convert_tool_result(tool.fn_metadata, result)
        except MCPError:
            raise
        except (UnexpectedToolError, UnexpectedResourceError) as exc:  # Tool.run's mapping, in its order
            raise UnexpectedToolError(f"Error executing tool {tool.name}: {exc}") from exc
        except (ToolError, ResourceError) as exc:
            raise ToolError(f"Error executing tool {tool.name}: {exc}") from exc
        except Exception as exc:
            raise UnexpectedToolError(f"Error executing tool {tool.name}") from exc
    except MCPError:
        raise
    except Exception as exc:
        if isinstance(exc, ToolError) and not isinstance(exc, UnexpectedToolError):
            if isinstance(exc.__cause__, ValidationError):
                fields = sorted({".".join(str(part) for part in err["loc"]) for err in exc.__cause__.errors()})
                _mcpserver_logger.info("Tool %r rejected arguments: %r", name, fields)
            else:
                _mcpserver_logger.info("Tool %r failed: %r", name, str(exc))
        else:
            _mcpserver_logger.exception("Tool %r raised an unexpected exception", name)
        return CallToolResult(content=[TextContent(type="text", text=str(exc))], is_error=True)


_OPAQUE_ARGUMENTS_METHODS = frozenset({"tools/call"})
"""Methods whose request params carry an ``arguments`` object the SDK's surface types as ``dict[str, Any] | None``."""
_opaque: dict[tuple[str, str], bool] = {}
_VALIDATED: dict[tuple[str, str, bytes], None] = {}
_VALIDATED_MAX = 1024


def arguments_are_opaque(method: str, protocol_version: str) -> bool:
    """Whether the SDK's request surface for ``(method, protocol_version)`` (``mcp_types.methods.CLIENT_REQUESTS``)
    accepts any JSON object or null as ``params.arguments``: typed ``dict[str, Any] | None``, and no validator on the
    params model. Then a request's validity does not depend on its arguments' contents (read once per pair)."""
    key = (method, protocol_version)
    known = _opaque.get(key)
    if known is None:
        model = CLIENT_REQUESTS.get(key) if method in _OPAQUE_ARGUMENTS_METHODS else None
        known = _opaque_in(model) if model is not None else False
        _opaque[key] = known
    return known


def _opaque_in(request_model: type[BaseModel]) -> bool:
    """`arguments_are_opaque` for one request model of the surface."""
    field = request_model.model_fields.get("params")
    params_model = field.annotation if field is not None else None
    if not (isinstance(params_model, type) and issubclass(params_model, BaseModel)):
        return False
    return params_arguments_are_opaque(params_model) and not request_model.__pydantic_decorators__.model_validators


def _remembered_key(
    method: str, protocol_version: str, params: Mapping[str, Any] | None
) -> tuple[str, str, bytes] | None:
    """What a request is remembered by when its arguments are opaque to the surface (`arguments_are_opaque`): the
    method, the version and the JSON of every param but ``arguments``; None when it cannot be remembered (arguments
    not opaque, not a JSON object, or a param that is not JSON)."""
    if params is None or not arguments_are_opaque(method, protocol_version):
        return None
    arguments = params.get("arguments")
    if arguments is not None and not (isinstance(arguments, dict) and all(isinstance(name, str) for name in arguments)):
        return None
    rest = {name: value for name, value in params.items() if name != "arguments"}
    try:
        return (method, protocol_version, pydantic_core.to_json(rest, inf_nan_mode="constants"))
    except pydantic_core.PydanticSerializationError:  # not from JSON: validated every time
        return None


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memo) >= _VALIDATED_MAX:
        memo.clear()
    memo[key] = value


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A validated ``tools/call``'s params as the fast path reads them: the tool's name and its arguments."""

    name: str
    arguments: dict[str, Any] | None


_TOOL_CALLS: dict[tuple[type[BaseModel], str, str, bytes], None] = {}


def params_arguments_are_opaque(params_type: type[BaseModel]) -> bool:
    """Whether a handler's params model accepts any JSON object or null as ``arguments`` (typed ``dict[str, Any] |
    None``, no validator on the model), as `arguments_are_opaque` asks of the surface."""
    known = _opaque_params.get(params_type)
    if known is None:
        arguments = params_type.model_fields.get("arguments")
        decorators = params_type.__pydantic_decorators__
        known = _opaque_params[params_type] = (
            arguments is not None
            and arguments.annotation == (dict[str, Any] | None)
            and not (decorators.field_validators or decorators.model_validators or decorators.validators)
        )
    return known


_opaque_params: dict[type[BaseModel], bool] = {}


def validate_tool_call_remembered(
    params_type: type[BaseModel], protocol_version: str, params: Mapping[str, Any] | None
) -> ToolCall:
    """The SDK kernel's two checks of a ``tools/call``'s params, ``validate_client_request`` (the surface) and the
    handler's params model (``params_type.model_validate``), remembered as `validate_client_request_remembered`
    remembers the first: a request whose every param but ``arguments`` was accepted by both before, with arguments
    that are a JSON object or absent, is accepted without validating again, when both type ``arguments`` as any
    JSON object (`arguments_are_opaque`, `params_arguments_are_opaque`). ``tests/test_sdk_adapter.py`` holds it to
    the SDK's answer on generated requests.

    Returns:
        the tool's name and arguments (as the params model leaves them: a JSON object's keys and values as sent).

    Raises:
        ValueError, KeyError, pydantic.ValidationError: as ``validate_client_request`` or the params model.
    """
    key = _remembered_key("tools/call", protocol_version, params)
    remembered = (params_type, *key) if key is not None and params_arguments_are_opaque(params_type) else None
    if remembered is not None and remembered in _TOOL_CALLS:
        assert params is not None  # a key is made of params
        return ToolCall(params["name"], params.get("arguments"))
    validate_client_request("tools/call", protocol_version, params)
    typed = params_type.model_validate({} if params is None else params, by_name=False)
    if remembered is not None:
        _remember(_TOOL_CALLS, remembered, None)
    return ToolCall(typed.name, typed.arguments)  # type: ignore[attr-defined]


def validate_client_request_remembered(method: str, protocol_version: str, params: Mapping[str, Any] | None) -> None:
    """``validate_client_request(method, protocol_version, params)`` (the SDK kernel's surface check of a request),
    remembering the requests it accepted by everything but their ``arguments`` where those are opaque to it
    (`arguments_are_opaque`): a ``tools/call`` whose name and ``_meta`` were accepted before, with arguments that are
    a JSON object (string keys) or absent, is accepted without validating again. At most `_VALIDATED_MAX` are
    remembered (all forgotten when full). ``tests/test_sdk_adapter.py`` holds it to the SDK's answer on generated
    requests, and fails loudly if an SDK upgrade types ``arguments`` otherwise.

    Raises:
        ValueError, KeyError, pydantic.ValidationError: as ``validate_client_request``.
    """
    key = _remembered_key(method, protocol_version, params)
    if key is not None and key in _VALIDATED:
        return
    validate_client_request(method, protocol_version, params)
    if key is not None:
        _remember(_VALIDATED, key, None)


_ADAPTERS: dict[int, tuple[FuncMetadata, Any, TypeAdapter[Any]]] = {}
_ADAPTERS_MAX = 4096


def _output_adapter(meta: FuncMetadata, output_model: Any) -> TypeAdapter[Any]:
    """``meta._output_adapter(output_model)``, remembered per (metadata, output model)."""
    known = _ADAPTERS.get(id(meta))
    if known is not None and known[0] is meta and known[1] is output_model:
        return known[2]
    if len(_ADAPTERS) >= _ADAPTERS_MAX:
        _ADAPTERS.clear()
    adapter = meta._output_adapter(output_model)
    _ADAPTERS[id(meta)] = (meta, output_model, adapter)
    return adapter


def convert_tool_result(meta: FuncMetadata, result: Any) -> CallToolResult | InputRequiredResult:
    """``meta.convert_result(result)`` (mcp 2.3.0 ``FuncMetadata.convert_result``), step for step, reading the
    output model's ``TypeAdapter`` once per output model: the SDK reads it from a pydantic private attribute twice
    per call, and pydantic's ``BaseModel.__getattr__`` raises and catches an ``AttributeError`` inside each read
    (about 3 µs each). The metadata's fields are read on every call, so reassigning them takes effect as in the
    SDK. ``tests/test_sdk_adapter.py`` compares the two on a table of results, so an SDK upgrade that changes
    ``convert_result`` fails there.

    Raises:
        pydantic.ValidationError: the result does not match the tool's output model (as ``convert_result``).
    """
    if isinstance(result, InputRequiredResult):
        return result
    output_model = meta.output_model if meta.output_schema is not None else None
    if isinstance(result, CallToolResult):
        if output_model is not None and not result.is_error:
            _output_adapter(meta, output_model).validate_python(result.structured_content)
        return result
    unstructured_content = _convert_to_content(result)
    if output_model is None:
        return CallToolResult(content=unstructured_content)
    if meta.wrap_output:
        result = {"result": result}
    adapter = _output_adapter(meta, output_model)
    validated = adapter.validate_python(result, by_alias=True, by_name=True)
    if isinstance(validated, BaseModel):
        structured_content = validated.model_dump(mode="json", by_alias=True)
    else:
        structured_content = adapter.dump_python(validated, mode="json", by_alias=True)
    return CallToolResult(content=unstructured_content, structured_content=structured_content)


class _StampedServer:
    """What ``ServerRunner._serialize`` reads of its server (``cache_hints``, ``server_info_stamp``), with the
    stamp copied from one dump instead of deep-copied per call when the dump is flat (strings and numbers only:
    a shallow copy is then as fresh as a deep one)."""

    def __init__(self, server: Server[Any]) -> None:
        self._server = server
        self._flat: dict[str, Any] | None = None
        """The dump when it is flat (the server's identity is fixed at construction: decided once)."""
        self._checked = False

    @property
    def cache_hints(self) -> Any:
        return self._server.cache_hints

    @property
    def server_info_stamp(self) -> dict[str, Any]:
        if not self._checked:
            source: dict[str, Any] = self._server._server_info_stamp_source
            flat = all(isinstance(value, str | int | float | bool) or value is None for value in source.values())
            self._flat, self._checked = (source if flat else None), True
        return dict(self._flat) if self._flat is not None else self._server.server_info_stamp


def result_serializer(server: Server[Any]) -> Callable[[str, str, Any], dict[str, Any]]:
    """``serialize(method, protocol_version, handler_result) -> wire dict``: the SDK kernel's own shaping of a
    handler's result (cache hints, the per-version result sieve, ``resultType``, the ``serverInfo`` stamp),
    ``ServerRunner._serialize``, which reads nothing of the runner but its server's ``cache_hints`` and
    ``server_info_stamp`` (`_StampedServer`)."""
    runner: ServerRunner[Any] = ServerRunner(cast(Any, _StampedServer(server)), cast(Connection, None), None)
    return runner._serialize


def request_context(
    server: Server[Any],
    connection: Callable[[], Connection],
    lifespan_state: Any,
    dctx: Any,
    method: str,
    params: Mapping[str, Any] | None,
) -> Any:
    """The SDK ``ServerRequestContext`` the kernel would build for one request (``ServerRunner._make_context``,
    with the request's ``_meta`` lifted as the kernel does); ``connection()`` makes the connection it reads."""
    from mcp.server.runner import _extract_meta

    runner: ServerRunner[Any] = ServerRunner(server, connection(), lifespan_state)
    return runner._make_context(dctx, method, params, _extract_meta(params), runner.connection.protocol_version)
