"""Real MCP clients against a real DataPulse server serving its built-in demo tools, with bearer auth on.

One in-process DataPulse (real uvicorn, free port) serves the whole module. Clients:

- the official Python SDK client (``mcp.Client``): Streamable HTTP on ``/mcp`` in ``mode="legacy"`` (the
  2025-11-25 ``initialize`` handshake), ``mode="2026-07-28"`` (stateless, pinned) and ``mode="auto"`` (probe with
  ``server/discover``), and ``sse_client`` on ``/sse`` (the 2024-11-05 HTTP+SSE transport);
- the TypeScript SDK v2 (``@modelcontextprotocol/client``) and v1 (``@modelcontextprotocol/sdk``) clients;
- the MCP Inspector CLI.

The Python client's HTTP traffic is recorded with httpx2 event hooks, so the tests also check what went over the
wire (bearer on every request, session header or not, the DELETE that ends a session, the 401 of a wrong token).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent, TextResourceContents

from datapulse.tools.demo import ABOUT_TEXT
from tests.interop.node import (
    InspectorEra,
    InspectorTransport,
    JsClient,
    JsProtocol,
    JsTransport,
    NodeProcessError,
    UnsupportedCombinationError,
    node_unavailable_reason,
    run_inspector_cli,
    run_js_client,
)
from tests.support.servers import TOKEN, RunningServer, bearer, make_settings, serve_in_process

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

_NODE_MISSING: Final = node_unavailable_reason()
needs_node: Final = pytest.mark.skipif(_NODE_MISSING is not None, reason=_NODE_MISSING or "")

SERVER_NAME: Final = "datapulse-demo"
DEMO_TOOLS: Final = ["get_time", "fetch_url", "echo", "add", "uppercase_text"]
NON_ASCII: Final = "héllo wörld ✓ — 日本語 🚀"
WRONG_TOKEN: Final = "not-the-token"
ISO_UTC_Z: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
MODERN: Final = "2026-07-28"
HANDSHAKE: Final = "2025-11-25"
PYTHON_CLIENT_TIMEOUT_S: Final = 20.0
JS_TIMEOUT_S: Final = 60.0
INSPECTOR_TIMEOUT_S: Final = 90.0


# --- the server ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope, so the module-scoped server below lives on one event loop for every test."""
    return "asyncio"


@pytest.fixture(scope="module")
async def datapulse() -> AsyncIterator[RunningServer]:
    """DataPulse with the built-in demo server, bearer auth on (TOKEN), on a free 127.0.0.1 port."""
    async with serve_in_process(make_settings()) as server:
        yield server


async def open_streamable_sessions(server: RunningServer) -> int:
    """Open 2025-era Streamable HTTP sessions, as ``/health`` reports them."""
    async with server.client(token=None) as http:
        response = await http.get("/health")
    assert response.status_code == 200, response.text
    count = response.json()["sessions"]["streamable_http"]
    assert isinstance(count, int)
    return count


# --- the official Python SDK client ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One HTTP request the Python client made and the status it got."""

    method: str
    path: str
    status: int
    authorized: bool
    protocol_version: str | None
    session_id: str | None
    mcp_method: str | None
    www_authenticate: str | None


@dataclass
class Wire:
    """Records every HTTP exchange of an httpx2 client (an async response event hook)."""

    exchanges: list[Exchange] = field(default_factory=list)
    token: str = TOKEN

    async def on_response(self, response: httpx2.Response) -> None:
        request = response.request
        self.exchanges.append(
            Exchange(
                method=request.method,
                path=urlsplit(str(request.url)).path,
                status=response.status_code,
                authorized=request.headers.get("authorization") == f"Bearer {self.token}",
                protocol_version=request.headers.get("mcp-protocol-version"),
                session_id=request.headers.get("mcp-session-id"),
                mcp_method=request.headers.get("mcp-method"),
                www_authenticate=response.headers.get("www-authenticate"),
            )
        )

    def hooks(self) -> dict[str, list[Callable[[httpx2.Response], Any]]]:
        return {"response": [self.on_response]}

    def requests(self, method: str, path: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.method == method and e.path == path]


@dataclass(frozen=True)
class PythonConnection:
    """How the Python SDK client connects: transport, ``Client(mode=...)`` and the version it must negotiate."""

    transport: Literal["streamable-http", "sse"]
    mode: str
    negotiated: str

    @property
    def path(self) -> str:
        return "/sse" if self.transport == "sse" else "/mcp"


PYTHON_CONNECTIONS: Final = [
    pytest.param(PythonConnection("streamable-http", "legacy", HANDSHAKE), id="streamable-http-legacy-2025-11-25"),
    pytest.param(PythonConnection("streamable-http", MODERN, MODERN), id="streamable-http-pinned-2026-07-28"),
    pytest.param(PythonConnection("streamable-http", "auto", MODERN), id="streamable-http-auto"),
    pytest.param(PythonConnection("sse", "legacy", HANDSHAKE), id="sse-2024-11-05-transport-legacy"),
    pytest.param(PythonConnection("sse", MODERN, MODERN), id="sse-transport-pinned-2026-07-28"),
    pytest.param(PythonConnection("sse", "auto", MODERN), id="sse-transport-auto"),
]


@asynccontextmanager
async def python_client(
    server: RunningServer, connection: PythonConnection, wire: Wire, *, token: str = TOKEN
) -> AsyncIterator[Client]:
    """A connected ``mcp.Client``; the connect, the body and the close are bounded together."""
    url = server.url + connection.path
    with anyio.fail_after(PYTHON_CLIENT_TIMEOUT_S):
        if connection.transport == "sse":

            def http_client_factory(
                headers: dict[str, str] | None = None,
                timeout: httpx2.Timeout | None = None,
                auth: httpx2.Auth | None = None,
            ) -> httpx2.AsyncClient:
                return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, event_hooks=wire.hooks())

            transport = sse_client(url, headers=bearer(token), httpx_client_factory=http_client_factory)
            async with Client(transport, mode=connection.mode) as client:
                yield client
        else:
            async with (
                httpx2.AsyncClient(headers=bearer(token), timeout=10.0, event_hooks=wire.hooks()) as http,
                Client(streamable_http_client(url, http_client=http), mode=connection.mode) as client,
            ):
                yield client


def only_text(result: CallToolResult) -> str:
    assert result.is_error is False, result
    assert len(result.content) == 1, result.content
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


@pytest.mark.parametrize("connection", PYTHON_CONNECTIONS)
async def test_python_sdk_client_negotiates_the_expected_protocol_version(
    datapulse: RunningServer, connection: PythonConnection
) -> None:
    wire = Wire()
    sessions_before = await open_streamable_sessions(datapulse)
    async with python_client(datapulse, connection, wire) as client:
        assert client.protocol_version == connection.negotiated
        if connection.negotiated == HANDSHAKE or connection.mode == "auto":
            # initialize and server/discover both name the server; a pinned 2026 client never asks.
            assert client.server_info is not None
            assert client.server_info.name == SERVER_NAME
        await client.list_tools()

    assert wire.exchanges, "the client made no HTTP request at all"
    assert all(e.authorized for e in wire.exchanges), wire.exchanges
    assert all(e.status < 400 for e in wire.exchanges), wire.exchanges
    if connection.transport == "sse":
        assert len(wire.requests("GET", "/sse")) == 1
        assert all(e.status == 202 for e in wire.requests("POST", "/messages")), wire.exchanges
        return
    posts = wire.requests("POST", "/mcp")
    if connection.negotiated == MODERN:
        # Stateless: every request says 2026-07-28 and names its method; no session, no stream, nothing to DELETE.
        assert {e.protocol_version for e in posts} == {MODERN}
        assert posts[-1].mcp_method == "tools/list"
        assert all(e.session_id is None for e in wire.exchanges)
        assert [e.method for e in wire.exchanges] == ["POST"] * len(wire.exchanges)
    else:
        assert posts[0].session_id is None  # initialize opens the session...
        assert all(e.session_id for e in wire.exchanges[1:])  # ...and every later request carries its id
        assert [e.status for e in wire.requests("DELETE", "/mcp")] == [200]  # the client ended it on close
    assert await open_streamable_sessions(datapulse) == sessions_before


@pytest.mark.parametrize("connection", PYTHON_CONNECTIONS)
async def test_python_sdk_client_lists_the_demo_tools(datapulse: RunningServer, connection: PythonConnection) -> None:
    async with python_client(datapulse, connection, Wire()) as client:
        result = await client.list_tools()
    assert [tool.name for tool in result.tools] == DEMO_TOOLS
    schemas = {tool.name: tool.input_schema for tool in result.tools}
    assert schemas["echo"]["required"] == ["message"]
    assert sorted(schemas["add"]["required"]) == ["a", "b"]
    assert schemas["uppercase_text"]["required"] == ["text"]
    assert schemas["get_time"].get("required", []) == []


@pytest.mark.parametrize("connection", PYTHON_CONNECTIONS)
async def test_python_sdk_client_echoes_non_ascii_text_unchanged(
    datapulse: RunningServer, connection: PythonConnection
) -> None:
    async with python_client(datapulse, connection, Wire()) as client:
        result = await client.call_tool("echo", {"message": NON_ASCII})
    assert only_text(result) == NON_ASCII
    assert result.structured_content == {"result": NON_ASCII}


@pytest.mark.parametrize("connection", PYTHON_CONNECTIONS)
async def test_python_sdk_client_adds_two_numbers(datapulse: RunningServer, connection: PythonConnection) -> None:
    async with python_client(datapulse, connection, Wire()) as client:
        result = await client.call_tool("add", {"a": 2, "b": 40.5})
    assert result.structured_content == {"result": 42.5}
    assert float(only_text(result)) == 42.5


@pytest.mark.parametrize("connection", PYTHON_CONNECTIONS)
async def test_python_sdk_client_gets_the_time_as_utc_iso_8601_with_a_z_suffix(
    datapulse: RunningServer, connection: PythonConnection
) -> None:
    async with python_client(datapulse, connection, Wire()) as client:
        before = datetime.now(UTC).replace(microsecond=0)
        result = await client.call_tool("get_time", {})
        after = datetime.now(UTC)
    assert result.structured_content is not None
    assert set(result.structured_content) == {"time"}
    stamp = result.structured_content["time"]
    assert isinstance(stamp, str)
    assert ISO_UTC_Z.fullmatch(stamp), stamp
    assert before <= datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) <= after
    assert json.loads(only_text(result)) == {"time": stamp}


@pytest.mark.parametrize("connection", PYTHON_CONNECTIONS)
async def test_python_sdk_client_lists_and_reads_the_about_resource(
    datapulse: RunningServer, connection: PythonConnection
) -> None:
    async with python_client(datapulse, connection, Wire()) as client:
        listed = await client.list_resources()
        read = await client.read_resource("datapulse://about")
    assert [(r.uri, r.name, r.mime_type) for r in listed.resources] == [("datapulse://about", "about", "text/plain")]
    assert len(read.contents) == 1
    contents = read.contents[0]
    assert isinstance(contents, TextResourceContents), contents
    assert (contents.uri, contents.mime_type, contents.text) == ("datapulse://about", "text/plain", ABOUT_TEXT)


@pytest.mark.parametrize("connection", PYTHON_CONNECTIONS)
async def test_python_sdk_client_lists_and_gets_the_summarize_prompt(
    datapulse: RunningServer, connection: PythonConnection
) -> None:
    async with python_client(datapulse, connection, Wire()) as client:
        listed = await client.list_prompts()
        prompt = await client.get_prompt("summarize", {"text": NON_ASCII})
    assert [p.name for p in listed.prompts] == ["summarize"]
    arguments = listed.prompts[0].arguments or []
    assert [(a.name, a.required) for a in arguments] == [("text", True)]
    assert len(prompt.messages) == 1
    message = prompt.messages[0]
    assert message.role == "user"
    assert isinstance(message.content, TextContent), message.content
    assert message.content.text.endswith("\n\n" + NON_ASCII)


@pytest.mark.parametrize("connection", PYTHON_CONNECTIONS)
async def test_python_sdk_client_with_a_wrong_token_fails_with_401(
    datapulse: RunningServer, connection: PythonConnection
) -> None:
    wire = Wire()
    # Streamable HTTP surfaces the 401's JSON-RPC error body (MCPError -32001); sse_client raises the HTTP 401.
    expected = (
        pytest.RaisesExc(httpx2.HTTPStatusError, check=lambda e: e.response.status_code == 401)
        if connection.transport == "sse"
        else pytest.RaisesExc(MCPError, match=r"^Unauthorized: the bearer token is not valid$")
    )
    with pytest.RaisesGroup(expected, flatten_subgroups=True, allow_unwrapped=True):
        async with python_client(datapulse, connection, wire, token=WRONG_TOKEN) as client:
            await client.list_tools()
    assert wire.exchanges, "the client made no HTTP request at all"
    for exchange in wire.exchanges:
        assert exchange.status == 401, wire.exchanges
        assert exchange.www_authenticate == (
            'Bearer realm="datapulse", error="invalid_token", error_description="the bearer token is not valid", '
            f'resource_metadata="{datapulse.url}/.well-known/oauth-protected-resource/mcp"'
        ), exchange


# --- the TypeScript SDK clients --------------------------------------------------------------------------------------


def js_url(server: RunningServer, transport: JsTransport) -> str:
    return server.url + ("/sse" if transport == "sse" else "/mcp")


def assert_echoed(call: dict[str, Any] | None, message: str) -> None:
    assert call is not None
    assert call.get("isError") is not True, call
    assert call["content"] == [{"type": "text", "text": message}]
    assert call["structuredContent"] == {"result": message}


# (transport, --protocol, negotiated version, era)
TS_V2_CONNECTIONS: Final = [
    pytest.param("streamable", HANDSHAKE, HANDSHAKE, "legacy", id="streamable-http-2025-11-25-session"),
    pytest.param("streamable", MODERN, MODERN, "modern", id="streamable-http-2026-07-28-stateless"),
    pytest.param("streamable", "auto", MODERN, "modern", id="streamable-http-auto"),
    pytest.param("sse", HANDSHAKE, HANDSHAKE, "legacy", id="sse-2025-11-25"),
    pytest.param("sse", MODERN, MODERN, "modern", id="sse-2026-07-28-envelope-over-the-sse-pipe"),
    pytest.param("sse", "auto", MODERN, "modern", id="sse-auto"),
]
TS_V1_CONNECTIONS: Final = [
    pytest.param("streamable", id="streamable-http-2025-11-25-session"),
    pytest.param("sse", id="sse-2025-11-25"),
]


async def run_ts_client_and_check_echo(
    server: RunningServer,
    client: JsClient,
    transport: JsTransport,
    protocol: JsProtocol,
    expected_version: str,
    expected_era: str,
) -> None:
    sessions_before = await open_streamable_sessions(server)
    report = await run_js_client(
        client,
        url=js_url(server, transport),
        transport=transport,
        protocol=protocol,
        token=TOKEN,
        call="echo",
        args={"message": NON_ASCII},
        timeout_s=JS_TIMEOUT_S,
    )
    assert report["protocolVersion"] == expected_version
    assert report["era"] == expected_era
    assert report["serverName"] == SERVER_NAME
    assert report["tools"] == DEMO_TOOLS
    assert_echoed(report["call"], NON_ASCII)
    if transport == "streamable":
        # A stateless client opens no session; a handshake client ends its own with DELETE before it exits.
        assert await open_streamable_sessions(server) == sessions_before


@needs_node
@pytest.mark.parametrize(("transport", "protocol", "expected_version", "expected_era"), TS_V2_CONNECTIONS)
async def test_typescript_v2_client_lists_tools_and_echoes_non_ascii_text(
    datapulse: RunningServer, transport: JsTransport, protocol: JsProtocol, expected_version: str, expected_era: str
) -> None:
    await run_ts_client_and_check_echo(datapulse, "v2", transport, protocol, expected_version, expected_era)


@needs_node
@pytest.mark.parametrize("transport", TS_V1_CONNECTIONS)
async def test_typescript_v1_client_lists_tools_and_echoes_non_ascii_text(
    datapulse: RunningServer, transport: JsTransport
) -> None:
    await run_ts_client_and_check_echo(datapulse, "v1", transport, HANDSHAKE, HANDSHAKE, "legacy")


@needs_node
@pytest.mark.parametrize(
    ("tool", "arguments", "check"),
    [
        pytest.param("add", {"a": 2, "b": 40.5}, lambda s: s == {"result": 42.5}, id="add"),
        pytest.param(
            "get_time", {}, lambda s: set(s) == {"time"} and ISO_UTC_Z.fullmatch(s["time"]) is not None, id="get_time"
        ),
        pytest.param(
            "uppercase_text", {"text": "straße ✓"}, lambda s: s == {"result": "STRASSE ✓"}, id="uppercase_text"
        ),
    ],
)
async def test_typescript_v2_client_calls_a_tool_over_2026_stateless_http(
    datapulse: RunningServer, tool: str, arguments: dict[str, Any], check: Callable[[dict[str, Any]], bool]
) -> None:
    report = await run_js_client(
        "v2",
        url=js_url(datapulse, "streamable"),
        transport="streamable",
        protocol=MODERN,
        token=TOKEN,
        call=tool,
        args=arguments,
        timeout_s=JS_TIMEOUT_S,
    )
    assert (report["protocolVersion"], report["era"]) == (MODERN, "modern")
    call = report["call"]
    assert call is not None
    assert call.get("isError") is not True, call
    assert check(call["structuredContent"]), call


@needs_node
@pytest.mark.parametrize(
    ("client", "transport", "protocol"),
    [
        pytest.param("v2", "streamable", HANDSHAKE, id="v2-streamable-http-2025-11-25"),
        pytest.param("v2", "streamable", MODERN, id="v2-streamable-http-2026-07-28"),
        pytest.param("v2", "streamable", "auto", id="v2-streamable-http-auto"),
        pytest.param("v2", "sse", HANDSHAKE, id="v2-sse"),
        pytest.param("v1", "streamable", HANDSHAKE, id="v1-streamable-http-2025-11-25"),
        pytest.param("v1", "sse", HANDSHAKE, id="v1-sse"),
    ],
)
async def test_typescript_client_with_a_wrong_token_fails_with_401(
    datapulse: RunningServer, client: JsClient, transport: JsTransport, protocol: JsProtocol
) -> None:
    with pytest.raises(NodeProcessError) as excinfo:
        await run_js_client(
            client, url=js_url(datapulse, transport), transport=transport, protocol=protocol, token=WRONG_TOKEN
        )
    error = excinfo.value
    assert not isinstance(error, UnsupportedCombinationError)
    assert error.returncode == 1, error
    # v2 over HTTP prints `status: 401`, v1 over HTTP `code: 401`, both over SSE "Non-200 status code (401)".
    assert re.search(r"(status|code): 401$|Non-200 status code \(401\)", error.stderr, re.MULTILINE), error.stderr


# --- the MCP Inspector CLI -------------------------------------------------------------------------------------------


def inspector_url(server: RunningServer, transport: InspectorTransport) -> str:
    return server.url + ("/sse" if transport == "sse" else "/mcp")


INSPECTOR_CONNECTIONS: Final = [
    pytest.param("http", None, id="http"),
    pytest.param("http", "modern", id="http-2026-07-28"),
    pytest.param("sse", None, id="sse"),
]


@needs_node
@pytest.mark.parametrize(("transport", "era"), INSPECTOR_CONNECTIONS)
async def test_inspector_cli_lists_the_demo_tools(
    datapulse: RunningServer, transport: InspectorTransport, era: InspectorEra | None
) -> None:
    output = await run_inspector_cli(
        inspector_url(datapulse, transport),
        transport=transport,
        token=TOKEN,
        method="tools/list",
        protocol_era=era,
        timeout_s=INSPECTOR_TIMEOUT_S,
    )
    tools = output["result"]["tools"]
    assert [tool["name"] for tool in tools] == DEMO_TOOLS
    echo = next(tool for tool in tools if tool["name"] == "echo")
    assert echo["inputSchema"]["required"] == ["message"]


@needs_node
@pytest.mark.parametrize(("transport", "era"), INSPECTOR_CONNECTIONS)
async def test_inspector_cli_calls_echo_with_non_ascii_text(
    datapulse: RunningServer, transport: InspectorTransport, era: InspectorEra | None
) -> None:
    output = await run_inspector_cli(
        inspector_url(datapulse, transport),
        transport=transport,
        token=TOKEN,
        method="tools/call",
        tool_name="echo",
        tool_args={"message": NON_ASCII},
        protocol_era=era,
        timeout_s=INSPECTOR_TIMEOUT_S,
    )
    result = output["result"]
    assert_echoed(result, NON_ASCII)
    # 2026-07-28 results carry the server's identity in _meta (there is no initialize result to carry it).
    server_info = result.get("_meta", {}).get("io.modelcontextprotocol/serverInfo")
    assert (server_info is not None) == (era == "modern"), result
    if server_info is not None:
        assert server_info["name"] == SERVER_NAME


@needs_node
@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_inspector_cli_with_a_wrong_token_fails_with_401(
    datapulse: RunningServer, transport: InspectorTransport
) -> None:
    with pytest.raises(NodeProcessError) as excinfo:
        await run_inspector_cli(
            inspector_url(datapulse, transport),
            transport=transport,
            token=WRONG_TOKEN,
            method="tools/list",
            timeout_s=INSPECTOR_TIMEOUT_S,
        )
    error = excinfo.value
    assert error.returncode not in (0, None)
    # With --stored-auth-only the Inspector turns a 401 into `auth_required` and quotes what the server said:
    # DataPulse's JSON-RPC 401 body over HTTP, "Non-200 status code (401)" from the SSE GET.
    envelope = json.loads(error.stderr)
    assert envelope["error"]["code"] == "auth_required", error.stderr
    detail = envelope["error"]["message"]
    assert "Unauthorized: the bearer token is not valid" in detail or "(401)" in detail, detail
