"""The fast path answers exactly as the full SDK path does: generated requests, two real servers, the same bytes.

Two DataPulse servers run side by side (uvicorn, real sockets), each serving its own copy of the same MCPServer:
one with the fast path (`datapulse.fastpath`, the default), one with ``fast_path=False``. Hypothesis generates
requests (valid and invalid arguments, unknown and failing tools, structured output, each content type, prompts,
resources, progress tokens, malformed params, methods the fast path never takes) and sends each to both, on the
2026-07-28 path and in a 2025-11-25 session. The HTTP status and the response body must be byte for byte the same,
and so must the audit records (what was called, by whom, with which outcome) and the rate-limit refusals.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import AssistantMessage, UserMessage
from mcp.shared.exceptions import MCPError
from mcp_types import ElicitRequest, ElicitRequestFormParams, InputRequiredResult
from pydantic import BaseModel

from datapulse.audit import capture_audit
from tests.support.mcp_http import BOTH, legacy_headers, modern_headers, modern_params
from tests.support.servers import TOKEN, RunningServer, bearer, make_settings, serve_in_process

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")


class Point(BaseModel):
    x: int
    y: int
    label: str = "p"


def build_server() -> MCPServer[Any]:
    """The served application; each server gets its own copy (the middleware chain is per server)."""
    mcp: MCPServer[Any] = MCPServer("diff", version="1.2.3")

    @mcp.tool()
    async def echo(message: str) -> str:
        return message

    @mcp.tool()
    def add(a: int, b: int = 2) -> int:
        return a + b

    @mcp.tool()
    async def words(text: str, upper: bool = False) -> dict[str, Any]:
        parts = text.split()
        return {"count": len(parts), "words": [p.upper() if upper else p for p in parts]}

    @mcp.tool()
    async def point(x: int, y: int) -> Point:
        return Point(x=x, y=y)

    @mcp.tool(structured_output=False)
    async def listing(n: int) -> list[str]:
        return [f"item {i}" for i in range(max(0, min(n, 5)))]

    @mcp.tool()
    async def picture() -> Image:
        return Image(data=PNG, format="png")

    @mcp.tool()
    async def fail(reason: str) -> str:
        raise ToolError(f"cannot: {reason}")

    @mcp.tool()
    async def crash() -> str:
        raise RuntimeError("internal detail that must not leak")

    @mcp.tool()
    async def refuse() -> str:
        raise MCPError(-32042, "refused by the tool", {"why": "a test"})

    @mcp.tool()
    async def limited() -> str:
        return "counted"

    @mcp.tool(structured_output=False)
    async def ask() -> InputRequiredResult:  # plain, yet asks for input: the fast path must seal its state
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
        question = ElicitRequest(params=ElicitRequestFormParams(message="Sure?", requested_schema=schema))
        return InputRequiredResult(input_requests={"confirm": question}, request_state="plain-state")

    @mcp.tool()
    async def with_context(message: str, ctx: Context) -> str:
        await ctx.report_progress(1, 2)
        return f"{message} from request {ctx.request_id}"

    @mcp.resource("res://text")
    def text_resource() -> str:
        return "plain text"

    @mcp.resource("res://bytes", mime_type="application/octet-stream")
    def bytes_resource() -> bytes:
        return b"\x00\x01binary"

    @mcp.resource("res://broken")
    def broken_resource() -> str:
        raise ValueError("resource detail")

    @mcp.resource("res://items/{item}")
    def item_resource(item: str) -> str:
        return f"item {item}"

    @mcp.prompt()
    def greet(name: str) -> str:
        return f"Hello {name}"

    @mcp.prompt()
    def dialogue(topic: str) -> list[Any]:
        return [UserMessage(f"Tell me about {topic}"), AssistantMessage("Gladly.")]

    @mcp.prompt()
    def broken_prompt() -> str:
        raise ValueError("prompt detail")

    return mcp


TOOLS = ["echo", "add", "words", "point", "listing", "picture", "fail", "crash", "refuse", "limited", "with_context"]
URIS = ["res://text", "res://bytes", "res://broken", "res://items/seven", "res://missing"]
PROMPTS = ["greet", "dialogue", "broken_prompt", "nope"]

NAME_CHARS = string.ascii_letters + string.digits + "_-./"
"""Names that can travel in the ``Mcp-Name`` header too."""
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
argument_names = st.sampled_from(["message", "a", "b", "text", "upper", "x", "y", "n", "reason", "name", "topic"])
arguments = st.dictionaries(argument_names, json_values, max_size=3) | st.fixed_dictionaries(
    {"message": st.text(max_size=20)}
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, Any] | None]:
    """One (method, params) pair: mostly what the fast path takes, some of what it must leave to the full path."""
    others = ["tools/list", "resources/read", "prompts/get", "ping", "resources/list", "prompts/list"]
    method = draw(st.sampled_from(["tools/call"] * 6 + others))
    params: dict[str, Any] | None
    if method == "tools/call":
        params = {"name": draw(st.sampled_from(TOOLS) | st.text(NAME_CHARS, max_size=8))}
        if draw(st.booleans()):
            params["arguments"] = draw(arguments)
        elif draw(st.integers(0, 9)) == 0:
            params["arguments"] = draw(st.sampled_from([[], "x", 3]))  # malformed
    elif method == "resources/read":
        params = {"uri": draw(st.sampled_from(URIS) | st.sampled_from([3, None]))}
    elif method == "prompts/get":
        params = {"name": draw(st.sampled_from(PROMPTS))}
        if draw(st.booleans()):
            params["arguments"] = draw(st.dictionaries(argument_names, st.text(max_size=8), max_size=2))
    else:
        params = {} if draw(st.booleans()) else None
    if params is not None and draw(st.integers(0, 3)) == 0:
        params["_meta"] = {"progressToken": draw(st.text(min_size=1, max_size=6) | st.integers(0, 99))}
    return method, params


@dataclass
class Pair:
    """The two servers: the fast path on (``fast``) and off (``full``), a client of each, and a 2025 session on
    each."""

    fast: RunningServer
    full: RunningServer
    fast_client: httpx2.Client
    full_client: httpx2.Client
    fast_session: str
    full_session: str

    def post_both(self, body: bytes, fast_headers: dict[str, str], full_headers: dict[str, str]) -> tuple[Any, Any]:
        fast = self.fast_client.post("/mcp", content=body, headers=fast_headers)
        full = self.full_client.post("/mcp", content=body, headers=full_headers)
        return (fast.status_code, fast.content), (full.status_code, full.content)


def _open_session(client: httpx2.Client) -> str:
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    response = client.post("/mcp", content=json.dumps(init), headers=legacy_headers(accept="application/json"))
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    done = client.post(
        "/mcp",
        content=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        headers=legacy_headers(session_id, accept="application/json"),
    )
    assert done.status_code == 202, done.text
    return str(session_id)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    common = {"tool_rate_limits": "limited=5/hour", "scopes": "tool:*=calls;resource:*=reads"}
    with (
        start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(serve_in_process(make_settings(**common), server=build_server())) as fast,
        portal.wrap_async_context_manager(
            serve_in_process(make_settings(fast_path=False, **common), server=build_server())
        ) as full,
    ):
        assert fast.runtime.fast_path is not None
        assert full.runtime.fast_path is None
        with (
            httpx2.Client(base_url=fast.url, headers=bearer(TOKEN), timeout=10.0) as a,
            httpx2.Client(base_url=full.url, headers=bearer(TOKEN), timeout=10.0) as b,
        ):
            yield Pair(fast, full, a, b, _open_session(a), _open_session(b))


def _audited(records: list[Any], node_id: str) -> list[tuple[Any, ...]]:
    return [
        (r.kind, r.principal, r.transport, r.protocol_version, r.name, r.arguments_digest, r.outcome)
        for r in records
        if r.node_id == node_id
    ]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests(), request_id=st.integers(1, 10_000) | st.text(min_size=1, max_size=8))
def test_the_fast_path_answers_byte_for_byte_as_the_full_path_on_2026_07_28(
    pair: Pair, request: tuple[str, dict[str, Any] | None], request_id: int | str
) -> None:
    method, params = request
    name = (params or {}).get("name") or (params or {}).get("uri")
    body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": modern_params(params)}).encode()
    headers = modern_headers(method, name if isinstance(name, str) else None, accept=BOTH)
    with capture_audit() as records:
        fast, full = pair.post_both(body, headers, headers)
    note(f"fast: {fast!r}\nfull: {full!r}")
    assert fast == full
    assert _audited(records, pair.fast.runtime.node_id) == _audited(records, pair.full.runtime.node_id)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests(), request_id=st.integers(1, 10_000))
def test_the_fast_path_answers_byte_for_byte_as_the_full_path_in_a_2025_session(
    pair: Pair, request: tuple[str, dict[str, Any] | None], request_id: int
) -> None:
    method, params = request
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    body = json.dumps(message).encode()
    with capture_audit() as records:
        fast, full = pair.post_both(
            body,
            legacy_headers(pair.fast_session, accept="application/json"),
            legacy_headers(pair.full_session, accept="application/json"),
        )
    note(f"fast: {fast!r}\nfull: {full!r}")
    assert fast == full
    assert _audited(records, pair.fast.runtime.node_id) == _audited(records, pair.full.runtime.node_id)


def test_a_plain_tool_call_is_served_on_the_fast_path_with_the_full_paths_answer(pair: Pair) -> None:
    fast_path = pair.fast.runtime.fast_path
    assert fast_path is not None
    params = modern_params({"name": "echo", "arguments": {"message": "hello"}})
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}).encode()
    headers = modern_headers("tools/call", "echo", accept=BOTH)
    before = fast_path.served
    fast, full = pair.post_both(body, headers, headers)
    assert fast_path.served == before + 1
    assert fast == full
    assert fast[0] == 200
    assert json.loads(fast[1])["result"]["content"] == [{"type": "text", "text": "hello"}]


def test_a_plain_tool_asking_for_input_gets_its_request_state_sealed_on_the_fast_path(pair: Pair) -> None:
    fast_path = pair.fast.runtime.fast_path
    assert fast_path is not None
    headers = modern_headers("tools/call", "ask", accept=BOTH)

    def call(extra: dict[str, Any]) -> dict[str, Any]:
        params = modern_params({"name": "ask", **extra})
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
        response = pair.fast_client.post("/mcp", content=body, headers=headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    before = fast_path.served
    first = call({})
    assert fast_path.served == before + 1
    assert first["result"]["resultType"] == "input_required"
    sealed = first["result"]["requestState"]
    assert sealed != "plain-state"  # sealed by the SDK's boundary, as on the full path
    retry = call({"requestState": sealed, "inputResponses": {"confirm": {"action": "accept", "content": {"ok": True}}}})
    assert "error" not in retry, retry  # the full path (a requestState to unseal) accepts the fast path's seal
    assert retry["result"]["resultType"] == "input_required"


def test_the_fast_path_serves_plain_items_and_leaves_the_rest_to_the_full_path(pair: Pair) -> None:
    fast_path = pair.fast.runtime.fast_path
    assert fast_path is not None

    def plan(method: str, params: dict[str, Any] | None) -> object:
        return fast_path.plan(method, modern_params(params), "2026-07-28", True)

    assert plan("tools/call", {"name": "echo", "arguments": {"message": "x"}}) is not None
    assert plan("tools/list", None) is not None
    assert plan("resources/read", {"uri": "res://text"}) is not None
    assert plan("prompts/get", {"name": "greet", "arguments": {"name": "a"}}) is not None
    # a tool that reads its context, a template resource, an unknown tool, a requestState, a bad request,
    # methods the fast path never takes, and a handshake-era connection not yet initialized
    assert plan("tools/call", {"name": "with_context", "arguments": {"message": "x"}}) is None
    assert plan("resources/read", {"uri": "res://items/a"}) is None
    assert plan("tools/call", {"name": "nope"}) is None
    assert plan("tools/call", {"name": "echo", "requestState": "s"}) is None
    assert plan("tools/call", {"name": "echo", "arguments": []}) is None
    assert plan("resources/list", None) is None
    assert plan("initialize", {}) is None
    assert plan("ping", None) is None  # not a 2026-07-28 method: the full path answers -32601
    assert fast_path.plan("ping", None, "2025-11-25", True) is not None
    assert fast_path.plan("tools/call", {"name": "echo", "arguments": {}}, "2025-11-25", False) is None
    assert fast_path.plan("tools/call", {"name": "echo", "arguments": {}}, "2025-11-25", True) is not None


def test_the_fast_path_steps_aside_for_middleware_it_does_not_know() -> None:
    from datapulse import _sdk
    from datapulse.fastpath import FastPath

    server = build_server()
    fast_path = FastPath(server)
    params = modern_params({"name": "echo", "arguments": {"message": "x"}})
    assert fast_path.plan("tools/call", params, "2026-07-28", True) is not None

    async def user_middleware(ctx: Any, call_next: Any) -> Any:
        return await call_next(ctx)

    _sdk.lowlevel_server(server).middleware.append(user_middleware)
    assert fast_path.plan("tools/call", params, "2026-07-28", True) is None
