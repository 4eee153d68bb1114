"""Real MCP clients against three DataPulse instances sharing one Redis, behind a round-robin proxy.

The proxy sends every HTTP request to the next instance in turn (not every connection), so a client's
``initialize``, its calls, its answer POSTs and its DELETE land on different instances: every request
for a session that another instance holds is forwarded to it through Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from tests.interop.node import (
    InspectorTransport,
    JsClient,
    JsTransport,
    node_unavailable_reason,
    run_inspector_cli,
    run_js_client,
)
from tests.support.cluster import cluster_behind_proxy
from tests.support.redis_server import run_redis
from tests.support.rr_proxy import RoundRobinProxy
from tests.support.servers import TOKEN, ServerProcess, bearer

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

_NODE_MISSING: Final = node_unavailable_reason()
needs_node: Final = pytest.mark.skipif(_NODE_MISSING is not None, reason=_NODE_MISSING or "")

DEMO_TOOLS: Final = ["get_time", "fetch_url", "echo", "add", "uppercase_text"]
NON_ASCII: Final = "héllo wörld ✓ — 日本語 🚀"
CLIENT_TIMEOUT_S: Final = 30.0
NODE_TIMEOUT_S: Final = 90.0

Cluster = tuple[list[ServerProcess], RoundRobinProxy]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    async with (
        run_redis(tmp_path_factory.mktemp("redis")) as redis,
        cluster_behind_proxy(redis.url, n=3) as (processes, proxy),
    ):
        yield processes, proxy


async def streamable_sessions(processes: list[ServerProcess]) -> int:
    """Open 2025-era sessions over all instances, as their ``/health`` reports them."""
    total = 0
    async with httpx2.AsyncClient(timeout=10) as http:
        for process in processes:
            response = await http.get(f"{process.url}/health")
            total += response.json()["sessions"]["streamable_http"]
    return total


def assert_spread(proxy: RoundRobinProxy, before: list[int]) -> None:
    """Every instance served some of the client's requests."""
    assert all(after > was for after, was in zip(proxy.hits, before, strict=True)), proxy.hits


@pytest.mark.parametrize(
    ("path", "mode"),
    [
        pytest.param("/mcp", "legacy", id="streamable-http-2025-11-25-session"),
        pytest.param("/mcp", "2026-07-28", id="streamable-http-2026-07-28"),
        pytest.param("/sse", "legacy", id="sse-2024-11-05"),
    ],
)
async def test_python_sdk_client_works_when_each_request_reaches_another_instance(
    cluster: Cluster, path: str, mode: str
) -> None:
    processes, proxy = cluster
    before = list(proxy.hits)
    url = proxy.url + path
    with anyio.fail_after(CLIENT_TIMEOUT_S):
        if path == "/sse":
            async with Client(sse_client(url, headers=bearer()), mode=mode) as client:
                await exercise(client)
        else:
            async with (
                httpx2.AsyncClient(headers=bearer(), timeout=10.0) as http,
                Client(streamable_http_client(url, http_client=http), mode=mode) as client,
            ):
                await exercise(client)
    assert_spread(proxy, before)
    with anyio.fail_after(CLIENT_TIMEOUT_S):
        assert await streamable_sessions(processes) == 0, "the client's DELETE, forwarded, ended its session"


async def exercise(client: Client) -> None:
    """Several requests in a row: list, call, call with non-ASCII text, read a resource."""
    listed = await client.list_tools()
    assert [tool.name for tool in listed.tools] == DEMO_TOOLS
    for n in range(3):
        result = await client.call_tool("add", {"a": n, "b": 1})
        assert result.structured_content == {"result": n + 1}
    echoed = await client.call_tool("echo", {"message": NON_ASCII})
    block = echoed.content[0]
    assert isinstance(block, TextContent)
    assert block.text == NON_ASCII
    resources = await client.list_resources()
    assert resources.resources


@needs_node
@pytest.mark.parametrize(
    ("script", "transport", "protocol"),
    [
        pytest.param("v2", "streamable", "2025-11-25", id="ts-v2-streamable-2025-11-25"),
        pytest.param("v2", "streamable", "2026-07-28", id="ts-v2-streamable-2026-07-28"),
        pytest.param("v2", "sse", "2025-11-25", id="ts-v2-sse"),
        pytest.param("v1", "streamable", "2025-11-25", id="ts-v1-streamable"),
        pytest.param("v1", "sse", "2025-11-25", id="ts-v1-sse"),
    ],
)
async def test_typescript_clients_work_when_each_request_reaches_another_instance(
    cluster: Cluster, script: JsClient, transport: JsTransport, protocol: Any
) -> None:
    _, proxy = cluster
    before = list(proxy.hits)
    report = await run_js_client(
        script,
        url=proxy.url + ("/sse" if transport == "sse" else "/mcp"),
        transport=transport,
        protocol=protocol,
        token=TOKEN,
        call="echo",
        args={"message": NON_ASCII},
        timeout_s=NODE_TIMEOUT_S,
    )
    assert report["tools"] == DEMO_TOOLS
    assert report["call"]["structuredContent"] == {"result": NON_ASCII}
    assert_spread(proxy, before)


@needs_node
@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_inspector_cli_calls_a_tool_through_the_cluster(cluster: Cluster, transport: InspectorTransport) -> None:
    _, proxy = cluster
    output = await run_inspector_cli(
        proxy.url + ("/sse" if transport == "sse" else "/mcp"),
        transport=transport,
        token=TOKEN,
        method="tools/call",
        tool_name="echo",
        tool_args={"message": NON_ASCII},
        timeout_s=NODE_TIMEOUT_S,
    )
    assert output["result"]["structuredContent"] == {"result": NON_ASCII}
