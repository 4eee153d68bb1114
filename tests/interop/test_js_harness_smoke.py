"""Prove the Node client harness works, against the official Python SDK's own servers.

A real uvicorn server runs in-process and serves ``MCPServer.streamable_http_app()`` (``/mcp``, both the 2025-11-25
handshake era and the 2026-07-28 stateless era) and ``MCPServer.sse_app()`` (``/sse`` + ``/messages/``). The SDK apps
have no bearer auth, so a small ASGI wrapper demands ``Authorization: Bearer t0k`` on every HTTP request and records
what it saw: a client that forgets the header on any request (the SSE GET included) fails its run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.interop.node import (
    JsClient,
    JsProtocol,
    JsTransport,
    NodeProcessError,
    UnsupportedCombinationError,
    node_unavailable_reason,
    run_inspector_cli,
    run_js_client,
)
from tests.support.servers import ReadyServer

_NODE_MISSING = node_unavailable_reason()
pytestmark = [
    pytest.mark.interop,
    pytest.mark.anyio,
    pytest.mark.skipif(_NODE_MISSING is not None, reason=_NODE_MISSING or ""),
]

TOKEN = "t0k"
SERVER_NAME = "datapulse-harness-echo"
MESSAGE = "héllo from the harness ✓"
STARTUP_TIMEOUT_S = 15
SHUTDOWN_TIMEOUT_S = 15


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    authorized: bool
    protocol_version: str | None
    mcp_method: str | None


@dataclass
class BearerGate:
    """Pure-ASGI wrapper: 401 unless ``authorization == Bearer <token>``; routes SSE paths to the SSE app."""

    streamable: ASGIApp
    sse: ASGIApp
    token: str
    seen: list[SeenRequest] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # Only the streamable app has a lifespan (it runs the session manager's task group).
            await self.streamable(scope, receive, send)
            return
        if scope["type"] != "http":
            raise RuntimeError(f"unexpected ASGI scope type {scope['type']!r}")
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        authorized = headers.get("authorization") == f"Bearer {self.token}"
        self.seen.append(
            SeenRequest(
                method=scope["method"],
                path=scope["path"],
                authorized=authorized,
                protocol_version=headers.get("mcp-protocol-version"),
                mcp_method=headers.get("mcp-method"),
            )
        )
        if not authorized:
            body = b'{"error":"invalid_token"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", b'Bearer realm="harness", error="invalid_token"'),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        path: str = scope["path"]
        app = self.sse if path == "/sse" or path.startswith("/messages/") else self.streamable
        await app(scope, receive, send)

    def requests(self, method: str, path: str) -> list[SeenRequest]:
        return [r for r in self.seen if r.method == method and r.path == path]


@dataclass(frozen=True)
class RunningServer:
    base_url: str
    gate: BearerGate

    def url(self, transport: str) -> str:
        return f"{self.base_url}/sse" if transport == "sse" else f"{self.base_url}/mcp"


def build_sdk_app() -> BearerGate:
    mcp = MCPServer(SERVER_NAME)

    @mcp.tool()
    def echo(message: str) -> str:
        """Return the message unchanged."""
        return message

    # host="127.0.0.1" keeps the SDK's DNS-rebinding protection on with allowed Host 127.0.0.1:*, which is exactly
    # what the Node clients send for http://127.0.0.1:<port>.
    return BearerGate(
        streamable=mcp.streamable_http_app(host="127.0.0.1"),
        sse=mcp.sse_app(host="127.0.0.1"),
        token=TOKEN,
    )


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """Serve ``app`` with a real uvicorn on a free 127.0.0.1 port; yield its base URL; shut it down, bounded."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = ReadyServer(config)
    finished = anyio.Event()

    async def serve() -> None:
        try:
            await server._serve()
        finally:
            finished.set()
            server.ready.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        with anyio.fail_after(STARTUP_TIMEOUT_S):
            await server.ready.wait()
        if finished.is_set():
            raise RuntimeError("uvicorn exited before it started serving (see its log above)")
        port = server.port
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            with anyio.move_on_after(SHUTDOWN_TIMEOUT_S) as shutdown:
                await finished.wait()
            if shutdown.cancelled_caught:
                tg.cancel_scope.cancel()
                raise RuntimeError(f"uvicorn did not shut down within {SHUTDOWN_TIMEOUT_S}s")


@pytest.fixture
async def sdk_server() -> AsyncIterator[RunningServer]:
    gate = build_sdk_app()
    async with serving(gate) as base_url:
        yield RunningServer(base_url, gate)


def assert_echo_result(call: dict[str, Any] | None, message: str) -> None:
    assert call is not None
    assert call.get("isError") is not True, call
    assert call["content"] == [{"type": "text", "text": message}]
    assert call["structuredContent"] == {"result": message}


def assert_all_authorized(gate: BearerGate) -> None:
    assert gate.seen, "the server saw no request at all"
    rejected = [r for r in gate.seen if not r.authorized]
    assert not rejected, f"requests without the bearer token: {rejected}"


# (client, transport, protocol, expected negotiated version, expected era)
SUPPORTED = [
    pytest.param("v1", "streamable", "2025-11-25", "2025-11-25", "legacy", id="v1-streamable-2025-11-25"),
    pytest.param("v1", "sse", "2025-11-25", "2025-11-25", "legacy", id="v1-sse-2025-11-25"),
    pytest.param("v2", "streamable", "2025-11-25", "2025-11-25", "legacy", id="v2-streamable-2025-11-25"),
    pytest.param("v2", "streamable", "2026-07-28", "2026-07-28", "modern", id="v2-streamable-2026-07-28"),
    pytest.param("v2", "streamable", "auto", "2026-07-28", "modern", id="v2-streamable-auto"),
    pytest.param("v2", "sse", "2025-11-25", "2025-11-25", "legacy", id="v2-sse-2025-11-25"),
    pytest.param("v2", "sse", "2026-07-28", "2026-07-28", "modern", id="v2-sse-2026-07-28"),
]


@pytest.mark.parametrize(("client", "transport", "protocol", "expected_version", "expected_era"), SUPPORTED)
async def test_js_client_lists_and_calls_echo(
    sdk_server: RunningServer,
    client: JsClient,
    transport: JsTransport,
    protocol: JsProtocol,
    expected_version: str,
    expected_era: str,
) -> None:
    report = await run_js_client(
        client,
        url=sdk_server.url(transport),
        transport=transport,
        protocol=protocol,
        token=TOKEN,
        call="echo",
        args={"message": MESSAGE},
    )

    assert report["protocolVersion"] == expected_version
    assert report["era"] == expected_era
    assert report["serverName"] == SERVER_NAME
    assert report["tools"] == ["echo"]
    assert_echo_result(report["call"], MESSAGE)

    gate = sdk_server.gate
    assert_all_authorized(gate)
    if transport == "sse":
        # The long-lived EventSource GET carried the token, and so did every message POST.
        assert len(gate.requests("GET", "/sse")) == 1
        assert len(gate.requests("POST", "/messages/")) >= 3  # handshake/discover, tools/list, tools/call
    else:
        posts = gate.requests("POST", "/mcp")
        if expected_era == "modern":
            # Stateless era: every request is a self-describing POST; no session to DELETE.
            assert [r.mcp_method for r in posts] == ["server/discover", "tools/list", "tools/call"]
            assert {r.protocol_version for r in posts} == {"2026-07-28"}
            assert not gate.requests("DELETE", "/mcp")
        else:
            assert posts[0].protocol_version is None  # initialize precedes the negotiated version
            assert {r.protocol_version for r in posts[1:]} == {expected_version}
            # The client closed cleanly by terminating its session.
            assert len(gate.requests("DELETE", "/mcp")) == 1


async def test_js_client_list_only_reports_null_call(sdk_server: RunningServer) -> None:
    report = await run_js_client(
        "v2", url=sdk_server.url("streamable"), transport="streamable", protocol="2025-11-25", token=TOKEN
    )
    assert report["tools"] == ["echo"]
    assert report["call"] is None


@pytest.mark.parametrize("transport", ["streamable", "sse"])
async def test_v1_refuses_the_2026_era(sdk_server: RunningServer, transport: JsTransport) -> None:
    with pytest.raises(UnsupportedCombinationError) as excinfo:
        await run_js_client(
            "v1", url=sdk_server.url(transport), transport=transport, protocol="2026-07-28", token=TOKEN
        )
    assert excinfo.value.returncode == 3
    assert "LATEST_PROTOCOL_VERSION=2025-11-25" in excinfo.value.stderr
    assert sdk_server.gate.seen == [], "an unsupported combination must fail before touching the network"


@pytest.mark.parametrize(
    ("client", "transport", "protocol"),
    [
        ("v1", "streamable", "2025-11-25"),
        ("v1", "sse", "2025-11-25"),
        ("v2", "streamable", "2025-11-25"),
        ("v2", "streamable", "2026-07-28"),
        ("v2", "sse", "2025-11-25"),
    ],
)
async def test_js_client_wrong_token_fails_with_stderr(
    sdk_server: RunningServer, client: JsClient, transport: JsTransport, protocol: JsProtocol
) -> None:
    with pytest.raises(NodeProcessError) as excinfo:
        await run_js_client(
            client, url=sdk_server.url(transport), transport=transport, protocol=protocol, token="wrong", timeout_s=30
        )
    error = excinfo.value
    assert not isinstance(error, UnsupportedCombinationError)
    assert error.returncode not in (0, None)
    assert "401" in error.stderr or "Unauthorized" in error.stderr, error.stderr
    assert sdk_server.gate.seen
    assert all(not r.authorized for r in sdk_server.gate.seen)


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_inspector_cli_tools_list(sdk_server: RunningServer, transport: str) -> None:
    output = await run_inspector_cli(
        sdk_server.url("sse" if transport == "sse" else "streamable"),
        transport="sse" if transport == "sse" else "http",
        token=TOKEN,
        method="tools/list",
    )
    tools = output["result"]["tools"]
    assert [tool["name"] for tool in tools] == ["echo"]
    assert tools[0]["inputSchema"]["required"] == ["message"]
    assert_all_authorized(sdk_server.gate)
    if transport == "sse":
        assert len(sdk_server.gate.requests("GET", "/sse")) == 1


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_inspector_cli_tools_call(sdk_server: RunningServer, transport: str) -> None:
    # "42" would arrive as a number through `--tool-arg message=42`; --tool-args-json keeps it a string.
    output = await run_inspector_cli(
        sdk_server.url("sse" if transport == "sse" else "streamable"),
        transport="sse" if transport == "sse" else "http",
        token=TOKEN,
        method="tools/call",
        tool_name="echo",
        tool_args={"message": "42"},
    )
    assert_echo_result(output["result"], "42")
    assert_all_authorized(sdk_server.gate)
    if transport == "sse":
        assert len(sdk_server.gate.requests("GET", "/sse")) == 1


async def test_inspector_cli_modern_era_over_http(sdk_server: RunningServer) -> None:
    output = await run_inspector_cli(
        sdk_server.url("streamable"),
        transport="http",
        token=TOKEN,
        method="tools/call",
        tool_name="echo",
        tool_args={"message": MESSAGE},
        protocol_era="modern",
    )
    assert_echo_result(output["result"], MESSAGE)
    assert_all_authorized(sdk_server.gate)
    posts = sdk_server.gate.requests("POST", "/mcp")
    assert posts[0].mcp_method == "server/discover"
    assert {r.protocol_version for r in posts} == {"2026-07-28"}


async def test_inspector_cli_wrong_token_fails(sdk_server: RunningServer) -> None:
    with pytest.raises(NodeProcessError) as excinfo:
        await run_inspector_cli(
            sdk_server.url("streamable"), transport="http", token="wrong", method="tools/list", timeout_s=60
        )
    assert excinfo.value.returncode not in (0, None)
    # The Inspector reports failures as a JSON envelope on stderr; --stored-auth-only turns the 401 into this code.
    assert '"code":"auth_required"' in excinfo.value.stderr, excinfo.value.stderr
    assert sdk_server.gate.seen
    assert all(not r.authorized for r in sdk_server.gate.seen)
