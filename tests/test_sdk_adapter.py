"""The SDK adapter fails loudly when an upgrade moves what DataPulse relies on."""

from __future__ import annotations

import inspect
import tracemalloc
from importlib.metadata import version
from typing import Any, TypedDict, cast

import anyio
import mcp_types
import pydantic
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mcp.server.mcpserver import Context, MCPServer
from pydantic import BaseModel, Field

from datapulse import _sdk


def test_the_sdk_is_the_pinned_version() -> None:
    assert version("mcp") == "2.3.0", "DataPulse pins mcp==2.3.0; re-verify datapulse/_sdk.py before upgrading"


def test_every_adapter_name_resolves() -> None:
    for name in _sdk.__all__:
        assert getattr(_sdk, name) is not None, name


def test_the_kernel_signatures_datapulse_calls_are_unchanged() -> None:
    assert list(inspect.signature(_sdk.ServerRunner).parameters)[:3] == ["server", "connection", "lifespan_state"]
    assert list(inspect.signature(_sdk.serve_one).parameters) == [
        "server",
        "dctx",
        "method",
        "params",
        "connection",
        "lifespan_state",
    ]
    assert list(inspect.signature(_sdk.Connection.from_envelope).parameters)[:3] == [
        "protocol_version",
        "client_info",
        "client_capabilities",
    ]
    assert list(inspect.signature(_sdk.Connection.for_loop).parameters)[:2] == ["outbound", "session_id"]
    assert {"kind", "can_send_request", "headers"} <= set(inspect.signature(_sdk.TransportContext).parameters)
    assert {"request_context"} <= set(inspect.signature(_sdk.ServerMessageMetadata).parameters)


def test_the_clients_era_negotiation_takes_one_session_and_is_a_coroutine() -> None:
    # datapulse.bridge.child settles a remote upstream's era with the SDK's own mode="auto" policy
    # (mcp.client._probe.negotiate_auto: server/discover, then initialize), which has no public name.
    assert inspect.iscoroutinefunction(_sdk.negotiate_auto)
    assert list(inspect.signature(_sdk.negotiate_auto).parameters) == ["session"]


def test_the_clients_input_required_driver_takes_the_first_result_dispatch_retry_and_max_rounds() -> None:
    # datapulse.bridge.proxy answers an upstream's input-required rounds for a handshake-era client with the SDK's
    # own driver (mcp.client._input_required.run_input_required_driver), which has no public name.
    assert inspect.iscoroutinefunction(_sdk.run_input_required_driver)
    parameters = inspect.signature(_sdk.run_input_required_driver).parameters
    assert list(parameters) == ["first", "dispatch", "retry", "max_rounds"]
    assert issubclass(_sdk.InputRequiredRoundsExceededError, RuntimeError)


def test_the_private_lowlevel_server_attribute_still_exists() -> None:
    server = _sdk.MCPServer("probe")
    assert isinstance(_sdk.lowlevel_server(server), _sdk.Server)
    assert _sdk.lowlevel_server(server).name == "probe"


async def _never_called(_event: object) -> None:
    raise AssertionError("unused")


def test_the_private_subscription_bus_attribute_still_feeds_the_context_helpers() -> None:
    server = _sdk.MCPServer("probe")
    bus = _sdk.subscription_bus(server)
    assert bus is not None
    assert callable(bus.publish)
    assert callable(bus.subscribe)
    replacement = type("Bus", (), {"publish": _never_called, "subscribe": lambda self, listener: lambda: None})()
    _sdk.replace_subscription_bus(server, replacement)
    assert _sdk.subscription_bus(server) is replacement
    assert _sdk.subscription_bus(_sdk.lowlevel_server(server)) is None


def test_the_era_constants_still_describe_the_eras_we_route() -> None:
    assert "2026-07-28" in _sdk.MODERN_PROTOCOL_VERSIONS
    assert set(_sdk.HANDSHAKE_PROTOCOL_VERSIONS) >= {"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"}
    assert _sdk.LATEST_HANDSHAKE_VERSION == "2025-11-25"
    assert mcp_types.PROTOCOL_VERSION_META_KEY == "io.modelcontextprotocol/protocolVersion"
    assert mcp_types.CLIENT_CAPABILITIES_META_KEY == "io.modelcontextprotocol/clientCapabilities"
    assert mcp_types.CLIENT_INFO_META_KEY == "io.modelcontextprotocol/clientInfo"
    assert _sdk.ERROR_CODE_HTTP_STATUS[-32601] == 404


def test_handler_errors_map_without_leaking_internals() -> None:
    error = _sdk.error_data_for(RuntimeError("secret internals"))
    assert error.code == -32603
    assert "secret" not in error.message
    mcp_error = _sdk.error_data_for(_sdk.MCPError(code=-32602, message="bad params"))
    assert (mcp_error.code, mcp_error.message) == (-32602, "bad params")


def test_the_sdk_still_words_a_callers_prompt_mistakes_as_the_adapter_expects() -> None:
    server: MCPServer[Any] = MCPServer("p")

    @server.prompt()
    def greet(name: str) -> str:
        return f"hi {name}"

    calls: list[tuple[str, dict[str, Any] | None]] = [("nope", None), ("greet", {})]
    for call, arguments in calls:
        with pytest.raises(ValueError, match=r"^(Unknown prompt|Missing required arguments): ") as excinfo:
            anyio.run(server.get_prompt, call, arguments)
        error = _sdk.error_data_for(excinfo.value)
        assert error.code == _sdk.INVALID_PARAMS, str(excinfo.value)


def test_the_fast_paths_view_of_an_mcpserver_still_matches_the_sdk() -> None:
    server: MCPServer[Any] = MCPServer("fast", version="9")

    @server.tool()
    async def plain(message: str) -> str:
        return message

    @server.tool()
    async def needs_context(message: str, ctx: Context) -> str:
        return message

    @server.prompt()
    def greet(name: str) -> str:
        return f"hi {name}"

    @server.resource("res://fixed")
    def fixed() -> str:
        return "fixed"

    @server.resource("res://items/{item}")
    def item(item: str) -> str:
        return item

    lowlevel = _sdk.lowlevel_server(server)
    handlers = _sdk.hot_handlers(server)
    for method, handler in handlers.items():
        entry = lowlevel.get_request_handler(method)
        assert entry is not None, method
        assert entry.handler == handler, method  # the registered handlers are these
    assert _sdk.plain_tool(server, "plain")
    assert not _sdk.plain_tool(server, "needs_context")
    assert not _sdk.plain_tool(server, "missing")
    assert _sdk.plain_prompt(server, "greet")
    assert not _sdk.plain_prompt(server, "missing")
    assert _sdk.static_resource(server, "res://fixed")
    assert not _sdk.static_resource(server, "res://items/a")
    chain = {type(member) for member in lowlevel.middleware}
    assert chain == {_sdk.OpenTelemetryMiddleware, _sdk.RequestStateBoundary}  # MCPServer's built-ins

    result = anyio.run(_sdk.call_plain_tool, server, "plain", {"message": "hi"})
    serialize = _sdk.result_serializer(lowlevel)
    assert serialize("tools/call", "2026-07-28", result) == {
        "content": [{"type": "text", "text": "hi"}],
        "structuredContent": {"result": "hi"},
        "isError": False,
        "resultType": "complete",
        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "fast", "version": "9"}},
    }
    # the stamp is a fresh dict each time (the SDK's promise: a caller may mutate its response)
    first, second = (serialize("tools/call", "2026-07-28", result)["_meta"] for _ in range(2))
    assert first == second
    assert first is not second
    assert first["io.modelcontextprotocol/serverInfo"] is not second["io.modelcontextprotocol/serverInfo"]
    failed = anyio.run(_sdk.call_plain_tool, server, "plain", {})
    assert failed.is_error
    unknown = anyio.run(_sdk.call_plain_tool, server, "missing", {})
    assert unknown.is_error
    assert "Unknown tool" in unknown.content[0].text


class _Point(BaseModel):
    x: int
    y_value: int = Field(alias="yValue")


class _Row(TypedDict):
    name: str
    count: int


def _conversion_cases() -> list[tuple[str, Any, Any]]:
    """(tool name, the function's return annotation target, a result) for `convert_tool_result`'s table."""
    image = mcp_types.ImageContent(type="image", data="aGk=", mime_type="image/png")
    return [
        ("text", str, "hello"),
        ("text", str, 7),  # does not match the output model
        ("number", int, 3),
        ("mapping", dict[str, int], {"a": 1, "b": 2}),
        ("listing", list[str], ["a", "b"]),
        ("point", _Point, _Point(x=1, yValue=2)),
        ("point", _Point, {"x": 1, "y_value": 2}),
        ("row", _Row, {"name": "n", "count": 1}),
        ("nothing", None, None),
        ("untyped", Any, {"free": ["form"]}),
        ("content", mcp_types.ImageContent, image),
        ("text", str, mcp_types.CallToolResult(content=[], structured_content={"result": "r"})),
        ("text", str, mcp_types.CallToolResult(content=[], structured_content={"bad": 1})),
        ("text", str, mcp_types.CallToolResult(content=[], is_error=True)),
        ("unstructured", str, "plain"),
    ]


def _conversion_server() -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer("convert")
    returns: dict[str, Any] = {
        "text": str,
        "number": int,
        "mapping": dict[str, int],
        "listing": list[str],
        "point": _Point,
        "row": _Row,
        "nothing": None,
        "content": mcp_types.ImageContent,
    }
    for name, annotation in returns.items():

        async def tool() -> Any:
            return None

        tool.__annotations__["return"] = annotation
        tool.__name__ = name
        server.tool()(tool)

    @server.tool()
    async def untyped():  # type: ignore[no-untyped-def]  # no annotation: no output model
        return None

    @server.tool(structured_output=False)
    async def unstructured() -> str:
        return ""

    return server


@pytest.mark.parametrize(("name", "annotation", "result"), _conversion_cases())
def test_the_fast_paths_result_conversion_matches_the_sdks_convert_result(
    name: str, annotation: Any, result: Any
) -> None:
    tool = _conversion_server()._tool_manager.get_tool(name)
    assert tool is not None
    meta = tool.fn_metadata
    refusal: Exception | None
    try:
        expected: Any = meta.convert_result(result)
    except Exception as exc:  # the SDK refuses it: so must the adapter, with the same error
        refusal = exc
    else:
        refusal = None
    if refusal is not None:
        with pytest.raises(type(refusal)) as raised:
            _sdk.convert_tool_result(meta, result)
        assert str(raised.value) == str(refusal)
        return
    converted = _sdk.convert_tool_result(meta, result)
    assert type(converted) is type(expected)
    assert converted.model_dump(mode="json", by_alias=True) == expected.model_dump(mode="json", by_alias=True)


def test_the_sdk_connection_still_makes_the_attributes_lean_connection_defers() -> None:
    assert _sdk.connection_seams() == [], "mcp changed under _sdk.LeanConnection: " + "; ".join(_sdk.connection_seams())


class _NoChannel:
    """An outbound that is never used (the connections below send nothing)."""


@pytest.mark.anyio
async def test_a_lean_connection_behaves_as_the_sdks_for_initialized_and_its_exit_stack() -> None:
    looped = _sdk.LeanConnection.for_loop(cast(Any, _NoChannel()), session_id="s-1")
    enveloped = _sdk.LeanConnection.from_envelope(_sdk.LATEST_MODERN_VERSION, None, {})
    assert isinstance(looped, _sdk.LeanConnection)
    assert isinstance(looped.initialized, anyio.Event)
    assert (looped.initialize_accepted, enveloped.initialize_accepted) == (False, True)
    assert looped.initialized.statistics().tasks_waiting == 0

    woken: list[bool] = []

    async def wait_for_initialized() -> None:
        await looped.initialized.wait()
        woken.append(looped.initialized.is_set())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait_for_initialized)
            await anyio.wait_all_tasks_blocked()
            assert looped.initialized.statistics().tasks_waiting == 1
            looped.initialized.set()
        await enveloped.initialized.wait()  # already set: returns at once
    assert woken == [True]
    assert looped.initialize_accepted

    closed: list[str] = []
    stack = looped.exit_stack
    assert stack is looped.exit_stack, "one stack, made on first use"
    stack.callback(closed.append, "cleanup")
    await looped.exit_stack.aclose()
    assert closed == ["cleanup"]


@pytest.mark.anyio
async def test_an_idle_lean_connection_keeps_at_least_1_kib_less_than_the_sdks() -> None:
    def kept_bytes(cls: type[_sdk.Connection]) -> float:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            connections = [cls.for_loop(cast(Any, _NoChannel()), session_id=f"s-{i}") for i in range(200)]
            kept = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert len(connections) == 200
        return kept / 200

    assert kept_bytes(_sdk.Connection) - kept_bytes(_sdk.LeanConnection) >= 1024


def test_the_sdk_still_types_tool_call_arguments_as_any_json_object_in_every_era() -> None:
    # validate_client_request_remembered skips validating again a tools/call whose name and _meta were accepted
    # before only because its arguments cannot make it invalid: this is what makes that true.
    for era_version in (*_sdk.HANDSHAKE_PROTOCOL_VERSIONS, *_sdk.MODERN_PROTOCOL_VERSIONS):
        assert _sdk.arguments_are_opaque("tools/call", era_version), era_version
    assert not _sdk.arguments_are_opaque("prompts/get", _sdk.LATEST_MODERN_VERSION)  # dict[str, str]: not opaque


def test_the_tools_call_handler_params_model_types_arguments_as_any_json_object_too() -> None:
    # validate_tool_call_remembered also skips the handler's params model on a remembered request: this makes it true
    params_type = _tool_call_params_type()
    assert _sdk.params_arguments_are_opaque(params_type)

    class Checked(params_type):  # type: ignore[misc,valid-type]
        @pydantic.field_validator("arguments")
        @classmethod
        def _non_empty(cls, value: Any) -> Any:
            return value

    assert not _sdk.params_arguments_are_opaque(Checked)  # a validator: its answer may depend on the arguments


def _tool_call_params_type() -> Any:
    server = _sdk.lowlevel_server(MCPServer("t"))
    entry = server.get_request_handler("tools/call")
    assert entry is not None
    return entry.params_type


_ABSENT = object()
_json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
_json = st.recursive(
    _json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
)
_metas = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {},
        optional={
            "io.modelcontextprotocol/protocolVersion": st.sampled_from(["2026-07-28", "2025-11-25", "x"]) | _json_leaf,
            "io.modelcontextprotocol/clientCapabilities": st.just({}) | _json,
            "io.modelcontextprotocol/clientInfo": st.just({"name": "c", "version": "1"}) | _json,
            "progressToken": st.text(max_size=3) | st.integers() | _json_leaf,
        },
    ),
    _json,
)
_tool_call_params = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["echo", "add"]) | _json_leaf,
        "_meta": _metas,
        "requestState": st.text(max_size=3) | _json_leaf,
        "inputResponses": st.just({}) | _json,
        "task": st.just({"ttl": 1000}) | _json,
        "extra": _json,
    },
)
_ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": _sdk.LATEST_MODERN_VERSION,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "c", "version": "1"},
}
_rests = st.one_of(
    st.builds(  # a well-formed request, one envelope member perhaps changed: mostly accepted
        lambda name, changed: {"name": name, "_meta": {**_ENVELOPE, **changed}},
        st.sampled_from(["echo", "add"]),
        st.dictionaries(st.sampled_from([*_ENVELOPE, "progressToken"]), _json, max_size=1),
    ),
    _tool_call_params,
)
_arguments = st.none() | st.just(_ABSENT) | st.dictionaries(st.text(max_size=4), _json, max_size=3) | _json


_generated_tool_calls = given(
    st.sampled_from([*_sdk.MODERN_PROTOCOL_VERSIONS, _sdk.LATEST_HANDSHAKE_VERSION]),
    st.lists(_rests, min_size=1, max_size=3),
    st.lists(_arguments, min_size=1, max_size=4),
)
_many = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _answer(check: Any, params: dict[str, Any]) -> Any:
    """What ``check(params)`` returns, or the name of what it raises."""
    try:
        return check(params)
    except Exception as exc:
        return type(exc).__name__


def _agree_on_every_combination(
    rests: list[dict[str, Any]], arguments: list[Any], sdk: Any, remembered: Any, context: str
) -> None:
    # every name/_meta with every arguments value, each twice: an acceptance remembered for one arguments value must
    # never accept what the SDK refuses for another, nor may it refuse what the SDK accepts
    outcomes: set[str] = set()
    for rest in rests:
        for value in [*arguments, *arguments]:
            params = dict(rest) if value is _ABSENT else {**rest, "arguments": value}
            got = _answer(remembered, params)
            assert got == _answer(sdk, params), (context, params)
            outcomes.add(got if isinstance(got, str) else "accepted")
    event(f"outcomes: {sorted(outcomes)}")


@_many
@_generated_tool_calls
def test_remembered_request_validation_accepts_and_refuses_exactly_what_the_sdk_does(
    protocol_version: str, rests: list[dict[str, Any]], arguments: list[Any]
) -> None:
    _agree_on_every_combination(
        rests,
        arguments,
        lambda params: _sdk.validate_client_request("tools/call", protocol_version, params),
        lambda params: _sdk.validate_client_request_remembered("tools/call", protocol_version, params),
        protocol_version,
    )


@_many
@_generated_tool_calls
def test_a_remembered_tool_call_is_accepted_refused_and_read_exactly_as_the_sdk_s_two_checks_leave_it(
    protocol_version: str, rests: list[dict[str, Any]], arguments: list[Any]
) -> None:
    # the surface check, then the handler's params model: what passes both, and the name and arguments read from it
    params_type = _tool_call_params_type()

    def sdk(params: dict[str, Any]) -> tuple[str, Any]:
        _sdk.validate_client_request("tools/call", protocol_version, params)
        typed = params_type.model_validate(params, by_name=False)
        return typed.name, typed.arguments

    def remembered(params: dict[str, Any]) -> tuple[str, Any]:
        call = _sdk.validate_tool_call_remembered(params_type, protocol_version, params)
        return call.name, call.arguments

    _agree_on_every_combination(rests, arguments, sdk, remembered, protocol_version)
