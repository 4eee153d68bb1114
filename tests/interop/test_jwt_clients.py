"""Real clients complete an authenticated call with a JWT signed by a real local issuer: the SDK's Python client
(Streamable HTTP and HTTP+SSE) and the MCP Inspector CLI (http and sse). The server discovers the issuer's
JWKS through its OpenID configuration, as in production."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from tests.interop.node import InspectorTransport, NodeProcessError, node_unavailable_reason, run_inspector_cli
from tests.support.issuer import LocalIssuer, local_issuer
from tests.support.servers import RunningServer, bearer, make_settings, serve_in_process

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

_NODE_MISSING: Final = node_unavailable_reason()
needs_node: Final = pytest.mark.skipif(_NODE_MISSING is not None, reason=_NODE_MISSING or "")
CLIENT_TIMEOUT_S: Final = 30.0
INSPECTOR_TIMEOUT_S: Final = 90.0
TEXT: Final = "signed by the issuer"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def issuer() -> AsyncIterator[LocalIssuer]:
    async with local_issuer(keys=("EC",)) as running:
        yield running


@pytest.fixture(scope="module")
async def datapulse(issuer: LocalIssuer) -> AsyncIterator[RunningServer]:
    settings = make_settings(jwt_issuer=issuer.url, jwt_audience=issuer.audience)
    async with serve_in_process(settings) as server:
        yield server


@pytest.mark.parametrize("path", ["/mcp", "/sse"])
async def test_the_sdk_client_calls_a_tool_with_a_jwt(datapulse: RunningServer, issuer: LocalIssuer, path: str) -> None:
    token = issuer.sign(sub="sdk-user")
    url = datapulse.url + path
    with anyio.fail_after(CLIENT_TIMEOUT_S):
        if path == "/sse":
            async with Client(sse_client(url, headers=bearer(token))) as client:
                result = await client.call_tool("echo", {"message": TEXT})
        else:
            async with (
                httpx2.AsyncClient(headers=bearer(token), timeout=10.0) as http,
                Client(streamable_http_client(url, http_client=http)) as client,
            ):
                result = await client.call_tool("echo", {"message": TEXT})
    assert result.is_error is False
    assert [c.text for c in result.content if isinstance(c, TextContent)] == [TEXT]


@needs_node
@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_the_inspector_cli_calls_a_tool_with_a_jwt(
    datapulse: RunningServer, issuer: LocalIssuer, transport: InspectorTransport
) -> None:
    output = await run_inspector_cli(
        datapulse.url + ("/sse" if transport == "sse" else "/mcp"),
        transport=transport,
        token=issuer.sign(sub="inspector-user"),
        method="tools/call",
        tool_name="echo",
        tool_args={"message": TEXT},
        timeout_s=INSPECTOR_TIMEOUT_S,
    )
    assert output["result"]["content"] == [{"type": "text", "text": TEXT}]


@needs_node
async def test_the_inspector_cli_is_refused_with_an_expired_jwt(datapulse: RunningServer, issuer: LocalIssuer) -> None:
    with pytest.raises(NodeProcessError) as excinfo:
        await run_inspector_cli(
            datapulse.url + "/mcp",
            transport="http",
            token=issuer.sign(exp=1_000_000),
            method="tools/list",
            timeout_s=INSPECTOR_TIMEOUT_S,
        )
    assert "expired" in excinfo.value.stderr
