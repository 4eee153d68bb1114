"""The gateway tests' upstreams (tests/support/http_upstream.py) each speak exactly one era of MCP over HTTP.

Checked with the SDK's real Python client (``mcp.Client`` in ``mode="auto"``, ``"legacy"`` and ``"2026-07-28"``,
over ``streamable_http_client`` and ``sse_client``) and with hand-built requests for the exact refusals. Every
client's HTTP exchanges are recorded (an httpx2 response hook), so the tests also check what went over the wire.
"""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent

from tests.support.http_upstream import Era, Upstream, spawn_upstream
from tests.support.mcp_http import (
    initialize_request,
    jsonrpc,
    legacy_call,
    legacy_headers,
    legacy_initialize,
    modern_call,
    modern_headers,
    modern_params,
)

pytestmark = pytest.mark.anyio

TIMEOUT_S: Final = 60.0
"""Bound on a whole test: an upstream's start (a Python interpreter, the SDK, uvicorn) plus its exchanges."""
MODERN: Final = "2026-07-28"
HANDSHAKE: Final = "2025-11-25"
TOKEN: Final = "upstream-token-0123456789"
TRACEPARENT: Final = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
FIXTURE_TOOLS: Final = {"echo", "increment", "pid", "crash", "slow", "sample", "log", "change_tools", "touch"}


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    rpc_method: str | None
    protocol_version: str | None
    status: int
    session_id: str | None


@dataclass
class Wire:
    """Every HTTP exchange of an httpx2 client (a response event hook)."""

    exchanges: list[Exchange] = field(default_factory=list)

    async def on_response(self, response: httpx2.Response) -> None:
        request = response.request
        rpc_method = None
        if request.method == "POST" and request.content:
            body = json.loads(request.content)
            rpc_method = body.get("method") if isinstance(body, dict) else None
        self.exchanges.append(
            Exchange(
                method=request.method,
                path=urlsplit(str(request.url)).path,
                rpc_method=rpc_method,
                protocol_version=request.headers.get("mcp-protocol-version"),
                status=response.status_code,
                session_id=response.headers.get("mcp-session-id"),
            )
        )

    def hooks(self) -> dict[str, list[Callable[[httpx2.Response], Any]]]:
        return {"response": [self.on_response]}

    def rpc(self, rpc_method: str) -> list[Exchange]:
        return [exchange for exchange in self.exchanges if exchange.rpc_method == rpc_method]


@asynccontextmanager
async def connect(
    upstream: Upstream, mode: str, wire: Wire | None = None, headers: dict[str, str] | None = None
) -> AsyncIterator[Client]:
    """A connected ``mcp.Client`` (``mode``) of ``upstream``: over SSE for the 2024 era, else Streamable HTTP."""
    hooks = (wire or Wire()).hooks()
    if upstream.era == "2024":

        def http_client_factory(
            headers: dict[str, str] | None = None,
            timeout: httpx2.Timeout | None = None,
            auth: httpx2.Auth | None = None,
        ) -> httpx2.AsyncClient:
            return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, event_hooks=hooks)

        transport = sse_client(upstream.mcp_url, headers=headers, httpx_client_factory=http_client_factory)
        async with Client(transport, mode=mode) as client:
            yield client
        return
    async with (
        httpx2.AsyncClient(headers=headers, timeout=20.0, event_hooks=hooks) as http,
        Client(streamable_http_client(upstream.mcp_url, http_client=http), mode=mode) as client,
    ):
        yield client


def text(result: CallToolResult) -> str:
    assert result.is_error is False, result
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


async def echoes(client: Client, message: str = "héllo upstream ✓") -> None:
    assert text(await client.call_tool("echo", {"message": message})) == message


def raw(upstream: Upstream, token: str | None = None) -> httpx2.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx2.AsyncClient(base_url=upstream.url, headers=headers, timeout=10.0)


def refused_with(code: int, match: str, data: Any) -> pytest.RaisesGroup[MCPError]:
    """An MCPError ``code`` whose message matches ``match`` and with ``data``, raised bare or inside the client's
    task groups."""
    return pytest.RaisesGroup(
        pytest.RaisesExc(MCPError, match=match, check=lambda error: (error.code, error.data) == (code, data)),
        flatten_subgroups=True,
        allow_unwrapped=True,
    )


# --- 2026: the stateless 2026-07-28 Streamable HTTP only -------------------------------------------------------------


async def test_an_auto_client_adopts_2026_07_28_from_the_2026_upstream_without_any_handshake() -> None:
    wire = Wire()
    with anyio.fail_after(TIMEOUT_S):
        async with spawn_upstream("2026") as upstream, connect(upstream, "auto", wire) as client:
            assert client.protocol_version == MODERN
            assert client.session.initialize_result is None
            assert client.session.discover_result is not None
            tools = await client.list_tools()
            await echoes(client)
    assert upstream.mcp_url == upstream.url + "/mcp"
    assert {tool.name for tool in tools.tools} >= FIXTURE_TOOLS
    assert wire.rpc("initialize") == []
    assert [(e.method, e.path, e.protocol_version, e.status) for e in wire.rpc("server/discover")] == [
        ("POST", "/mcp", MODERN, 200)
    ]
    assert {e.protocol_version for e in wire.exchanges} == {MODERN}
    assert {e.session_id for e in wire.exchanges} == {None}, "a 2026 upstream must never issue a session"


async def test_a_legacy_client_is_refused_by_the_2026_upstream_with_unsupported_protocol_version() -> None:
    wire = Wire()
    with anyio.fail_after(TIMEOUT_S):
        async with spawn_upstream("2026") as upstream:
            unsupported = {"supported": [MODERN], "requested": HANDSHAKE}
            with refused_with(-32022, r"^Unsupported protocol version$", unsupported):
                async with connect(upstream, "legacy", wire):
                    pass
    assert [(e.rpc_method, e.status, e.session_id) for e in wire.exchanges] == [("initialize", 400, None)]


async def test_the_2026_upstream_answers_initialize_and_session_requests_as_a_stateless_2026_server() -> None:
    with anyio.fail_after(TIMEOUT_S):
        async with spawn_upstream("2026") as upstream, raw(upstream) as http:
            initialize = await http.post("/mcp", content=initialize_request(), headers=legacy_headers())
            headerless = await http.post(
                "/mcp", content=jsonrpc("tools/list", request_id=7), headers={"Accept": "application/json"}
            )
            stream = await http.get("/mcp", headers={**legacy_headers("a-session"), "Accept": "text/event-stream"})
            end = await http.delete("/mcp", headers=legacy_headers("a-session"))
            sse = await http.get("/sse")
            served = await modern_call(http, "tools/call", {"name": "echo", "arguments": {"message": "hi"}})
    assert (initialize.status_code, initialize.json()) == (
        400,
        {
            "jsonrpc": "2.0",
            "id": 0,
            "error": {
                "code": -32022,
                "message": "Unsupported protocol version",
                "data": {"supported": [MODERN], "requested": HANDSHAKE},
            },
        },
    )
    assert "mcp-session-id" not in initialize.headers
    assert headerless.status_code == 400
    assert headerless.json()["id"] == 7
    assert headerless.json()["error"]["data"] == {"supported": [MODERN], "requested": "2025-03-26"}
    assert (stream.status_code, stream.headers.get("allow")) == (405, "POST")
    assert (end.status_code, end.headers.get("allow")) == (405, "POST")
    assert sse.status_code == 404
    assert served.status_code == 200, served.text
    assert '"text":"hi"' in served.text


# --- 2025: the 2025-03-26...2025-11-25 Streamable HTTP only ----------------------------------------------------------


async def test_an_auto_client_falls_back_to_a_2025_11_25_handshake_on_the_2025_upstream() -> None:
    wire = Wire()
    with anyio.fail_after(TIMEOUT_S):
        async with spawn_upstream("2025") as upstream, connect(upstream, "auto", wire) as client:
            assert client.protocol_version == HANDSHAKE
            assert client.session.initialize_result is not None
            assert client.session.discover_result is None
            tools = await client.list_tools()
            await echoes(client)
    assert {tool.name for tool in tools.tools} >= FIXTURE_TOOLS
    first, second = wire.exchanges[:2]
    assert (first.rpc_method, first.protocol_version, first.status) == ("server/discover", MODERN, 400)
    assert (second.rpc_method, second.status) == ("initialize", 200)
    assert second.session_id, "the 2025 upstream must issue an Mcp-Session-Id"


async def test_a_client_pinned_to_2026_07_28_is_refused_by_the_2025_upstream() -> None:
    wire = Wire()
    with anyio.fail_after(TIMEOUT_S):
        async with spawn_upstream("2025") as upstream, connect(upstream, MODERN, wire) as client:
            with pytest.raises(MCPError, match=r"^Bad Request: Missing session ID$") as refused:
                await client.call_tool("echo", {"message": "x"})
    assert refused.value.code == -32600
    assert [(e.rpc_method, e.protocol_version, e.status) for e in wire.exchanges] == [("tools/call", MODERN, 400)]


async def test_the_2025_upstream_answers_2026_requests_as_a_pre_2026_sdk_and_serves_sessions() -> None:
    with anyio.fail_after(TIMEOUT_S):
        async with spawn_upstream("2025") as upstream, raw(upstream) as http:
            probe = await modern_call(http, "server/discover")
            session_id = await legacy_initialize(http)
            discover_in_session = await legacy_call(http, session_id, "server/discover", request_id=3)
            modern_in_session = await http.post(
                "/mcp",
                content=jsonrpc("tools/list", modern_params(), request_id=4),
                headers={**modern_headers("tools/list"), "Mcp-Session-Id": session_id},
            )
            served = await legacy_call(http, session_id, "tools/call", {"name": "echo", "arguments": {"message": "hi"}})
            sse = await http.get("/sse")
    assert (probe.status_code, probe.json()) == (
        400,
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Bad Request: Missing session ID"}},
    )
    assert discover_in_session.status_code == 200
    assert discover_in_session.json() == {
        "jsonrpc": "2.0",
        "id": 3,
        "error": {"code": -32601, "message": "Method not found"},
    }
    assert modern_in_session.status_code == 400
    assert modern_in_session.json()["error"]["code"] == -32600
    assert modern_in_session.json()["error"]["message"].startswith(
        f"Bad Request: Unsupported protocol version: {MODERN}."
    )
    assert served.status_code == 200, served.text
    assert '"text":"hi"' in served.text
    assert sse.status_code == 404


# --- 2024: the 2024-11-05 HTTP+SSE transport only --------------------------------------------------------------------


async def test_the_2024_upstream_serves_tools_over_sse_and_has_no_streamable_endpoint() -> None:
    wire = Wire()
    with anyio.fail_after(TIMEOUT_S):
        async with spawn_upstream("2024") as upstream:
            async with connect(upstream, "legacy", wire) as client:
                tools = await client.list_tools()
                await echoes(client)
            async with raw(upstream) as http:
                streamable = await http.post("/mcp", content=initialize_request(), headers=legacy_headers())
                modern = await modern_call(http, "server/discover")
    assert upstream.mcp_url == upstream.url + "/sse"
    assert {tool.name for tool in tools.tools} >= FIXTURE_TOOLS
    assert ("GET", "/sse", 200) in [(e.method, e.path, e.status) for e in wire.exchanges]
    posts = [e for e in wire.exchanges if e.method == "POST"]
    assert posts, wire.exchanges
    assert {(e.path, e.status) for e in posts} == {("/messages/", 202)}
    assert (streamable.status_code, modern.status_code) == (404, 404)


# --- every era: bearer, what was seen, faults ------------------------------------------------------------------------


@pytest.mark.parametrize(("era", "mode"), [("2026", "auto"), ("2025", "auto"), ("2024", "legacy")])
async def test_a_bearer_upstream_refuses_requests_without_its_token_and_serves_those_with_it(
    era: Era, mode: str
) -> None:
    with anyio.fail_after(TIMEOUT_S):
        async with spawn_upstream(era, bearer=TOKEN) as upstream:
            path = urlsplit(upstream.mcp_url).path
            async with raw(upstream) as anonymous, raw(upstream, "not-the-token") as wrong:
                refusals = [await anonymous.get(path), await wrong.get(path), await anonymous.post(path)]
            async with connect(upstream, mode, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
                await echoes(client)
    for refused in refusals:
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"].startswith("Bearer")


async def test_the_upstream_records_the_last_authorization_and_traceparent_it_was_sent() -> None:
    with anyio.fail_after(TIMEOUT_S):
        async with spawn_upstream("2025", bearer=TOKEN) as upstream, raw(upstream) as http:
            before = (await http.get("/_upstream/seen")).json()
            traced = {"Authorization": f"Bearer {TOKEN}", "traceparent": TRACEPARENT}
            async with connect(upstream, "auto", headers=traced) as client:
                await echoes(client)
            with_token = (await http.get("/_upstream/seen")).json()
            refused = await http.post("/mcp", content=initialize_request(), headers=legacy_headers())
            after = (await http.get("/_upstream/seen")).json()
    assert before == {
        "requests": 0,
        "method": None,
        "path": None,
        "authorization": None,
        "traceparent": None,
        "session": None,
        "sessions": [],
    }
    assert with_token["requests"] >= 3  # at least the probe, initialize and the call
    assert (with_token["path"], with_token["authorization"], with_token["traceparent"]) == (
        "/mcp",
        f"Bearer {TOKEN}",
        TRACEPARENT,
    )
    assert refused.status_code == 401
    assert after == {
        "requests": with_token["requests"] + 1,
        "method": "POST",
        "path": "/mcp",
        "authorization": None,
        "traceparent": None,
        "session": None,  # the refused initialize carried none
        "sessions": with_token["sessions"],
    }
    assert len(with_token["sessions"]) == 1  # the 2025 session the client opened


async def test_kill_stops_the_upstream_at_once_so_new_connections_are_refused() -> None:
    with anyio.fail_after(TIMEOUT_S):
        async with spawn_upstream("2026") as upstream, raw(upstream) as http:
            assert (await http.get("/_upstream/seen")).status_code == 200
            await upstream.kill()
            async with raw(upstream) as fresh:  # a new connection: the old one may be pooled
                with pytest.raises(httpx2.ConnectError):
                    await fresh.get("/_upstream/seen")
    assert upstream.process.returncode == -signal.SIGKILL


async def test_leaving_spawn_upstream_stops_the_upstream_gracefully() -> None:
    with anyio.fail_after(TIMEOUT_S):
        async with spawn_upstream("2024") as upstream:
            assert upstream.process.returncode is None
    # uvicorn re-raises the SIGTERM it handled once its graceful shutdown is done (a SIGKILL would read -9)
    assert upstream.process.returncode == -signal.SIGTERM
    assert upstream.stderr.decode().splitlines()[-1] == "upstream stopped", upstream.stderr
