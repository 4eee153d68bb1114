"""Real third-party MCP clients through ``datapulse proxy``: the client-era x upstream-era matrix.

For each upstream era (``tests/support/http_upstream.py``: a real SDK server speaking only 2026-07-28 stateless
Streamable HTTP, only 2025 Streamable HTTP, or only the 2024-11-05 HTTP+SSE transport) one upstream and one
``datapulse proxy`` subprocess in front of it serve the whole module. Through that proxy, each real client of
``tests/interop/node.py`` (the TypeScript SDK v2 and v1 clients, the MCP Inspector CLI) lists the upstream's tools
and calls ``echo`` with non-ASCII text, in every client era it can speak:

- ``2026``: 2026-07-28 stateless Streamable HTTP on ``/mcp`` (``server/discover``, no ``initialize``, no session);
- ``2025``: the ``initialize`` handshake and a session on ``/mcp``, negotiating 2025-11-25;
- ``2024``: the 2024-11-05 HTTP+SSE transport on ``/sse``. The clients still offer their latest handshake version
  (2025-11-25) in ``initialize`` over it and DataPulse accepts it, so 2025-11-25 is negotiated there too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import anyio
import pytest

from tests.interop.node import (
    InspectorEra,
    InspectorTransport,
    JsClient,
    JsProtocol,
    JsTransport,
    node_unavailable_reason,
    run_inspector_cli,
    run_js_client,
)
from tests.support.http_upstream import ERAS, Era, spawn_upstream
from tests.support.servers import TOKEN, ServerProcess, spawn_datapulse

_NODE_MISSING: Final = node_unavailable_reason()
pytestmark = [
    pytest.mark.interop,
    pytest.mark.anyio,
    pytest.mark.skipif(_NODE_MISSING is not None, reason=_NODE_MISSING or ""),
]

MODERN: Final = "2026-07-28"
HANDSHAKE: Final = "2025-11-25"
NON_ASCII: Final = "héllo wörld ✓ — 日本語 🚀"
UPSTREAM_NAME: Final = "datapulse-stdio-fixture"
UPSTREAM_TOOLS: Final = [
    "increment",
    "echo",
    "pid",
    "crash",
    "slow",
    "admin_reset",
    "delete_everything",
    "sample",
    "log",
    "change_tools",
    "touch",
]
"""The tools of ``tests.support.stdio_server.build_server``, which every upstream era serves, in its order."""
STARTUP_TIMEOUT_S: Final = 60.0
"""Bound on starting all three upstreams and proxies (concurrently, on a possibly busy 2-core machine)."""
JS_TIMEOUT_S: Final = 30.0
INSPECTOR_TIMEOUT_S: Final = 45.0


# --- one upstream and one proxy per upstream era, for the whole module ----------------------------------------------


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope, so the module-scoped processes below live on one event loop for every test."""
    return "asyncio"


@pytest.fixture(scope="module")
async def proxies() -> AsyncIterator[Mapping[Era, ServerProcess]]:
    """For each upstream era, an upstream of that era and a ``datapulse proxy`` (bearer TOKEN) in front of it.

    All three pairs start together, up front, so the module starts six processes once whatever order its tests run
    in (each pair: the upstream, then the proxy, which finds the upstream's era at start).
    """
    started: dict[Era, ServerProcess] = {}
    all_started = anyio.Event()
    stop = anyio.Event()

    async def serve(era: Era) -> None:
        async with (
            spawn_upstream(era) as upstream,
            spawn_datapulse([upstream.mcp_url], env={"DATAPULSE_TOKEN": TOKEN}, command="proxy") as proxy,
        ):
            started[era] = proxy
            if len(started) == len(ERAS):
                all_started.set()
            await stop.wait()

    async with anyio.create_task_group() as tasks:
        for era in ERAS:
            tasks.start_soon(serve, era)
        with anyio.fail_after(STARTUP_TIMEOUT_S):
            await all_started.wait()
        try:
            yield started
        finally:
            stop.set()


def matrix(cells: Mapping[str, object]) -> list[Any]:
    """``pytest.param(upstream_era, cell)`` for every upstream era and cell, with ids like
    ``ts-v2-2026-via-2024-upstream`` (client, client era, upstream era)."""
    return [
        pytest.param(upstream_era, cell, id=f"{name}-via-{upstream_era}-upstream")
        for upstream_era in ERAS
        for name, cell in cells.items()
    ]


def proxy_url(proxy: ServerProcess, transport: str) -> str:
    return proxy.url + ("/sse" if transport == "sse" else "/mcp")


def assert_echoed(call: dict[str, Any] | None) -> None:
    assert call is not None
    assert call.get("isError") is not True, call
    assert call["content"] == [{"type": "text", "text": NON_ASCII}], call
    assert call["structuredContent"] == {"result": NON_ASCII}, call


# --- the TypeScript SDK clients --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TsCell:
    """How a TypeScript SDK client speaks one client era, and the protocol version and era it must report."""

    client: JsClient
    transport: JsTransport
    protocol: JsProtocol
    negotiated: str
    era: Literal["modern", "legacy"]


TS_CELLS: Final = {
    "ts-v2-2026": TsCell("v2", "streamable", MODERN, MODERN, "modern"),
    "ts-v2-2025": TsCell("v2", "streamable", HANDSHAKE, HANDSHAKE, "legacy"),
    "ts-v2-2024": TsCell("v2", "sse", HANDSHAKE, HANDSHAKE, "legacy"),
    # No ts-v1-2026: @modelcontextprotocol/sdk v1 cannot speak 2026-07-28 (no server/discover; its Client always
    # sends `initialize`), so client_v1.mjs refuses that protocol with exit code 3.
    "ts-v1-2025": TsCell("v1", "streamable", HANDSHAKE, HANDSHAKE, "legacy"),
    "ts-v1-2024": TsCell("v1", "sse", HANDSHAKE, HANDSHAKE, "legacy"),
}


@pytest.mark.parametrize(("upstream_era", "cell"), matrix(TS_CELLS))
async def test_typescript_client_lists_the_upstream_tools_and_echoes_non_ascii_text_through_the_proxy(
    proxies: Mapping[Era, ServerProcess], upstream_era: Era, cell: TsCell
) -> None:
    report = await run_js_client(
        cell.client,
        url=proxy_url(proxies[upstream_era], cell.transport),
        transport=cell.transport,
        protocol=cell.protocol,
        token=TOKEN,
        call="echo",
        args={"message": NON_ASCII},
        timeout_s=JS_TIMEOUT_S,
    )
    assert (report["protocolVersion"], report["era"]) == (cell.negotiated, cell.era), report
    assert report["serverName"] == UPSTREAM_NAME, report
    assert report["tools"] == UPSTREAM_TOOLS
    assert_echoed(report["call"])


# --- the MCP Inspector CLI -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InspectorCell:
    """How the Inspector CLI speaks one client era (``--protocol-era``; its default is ``legacy``)."""

    transport: InspectorTransport
    protocol_era: InspectorEra


INSPECTOR_CELLS: Final = {
    "inspector-2026": InspectorCell("http", "modern"),
    "inspector-2025": InspectorCell("http", "legacy"),
    "inspector-2024": InspectorCell("sse", "legacy"),
}


@pytest.mark.parametrize(("upstream_era", "cell"), matrix(INSPECTOR_CELLS))
async def test_inspector_cli_lists_the_upstream_tools_and_echoes_non_ascii_text_through_the_proxy(
    proxies: Mapping[Era, ServerProcess], upstream_era: Era, cell: InspectorCell
) -> None:
    url = proxy_url(proxies[upstream_era], cell.transport)
    listed = await run_inspector_cli(
        url,
        transport=cell.transport,
        token=TOKEN,
        method="tools/list",
        protocol_era=cell.protocol_era,
        timeout_s=INSPECTOR_TIMEOUT_S,
    )
    called = await run_inspector_cli(
        url,
        transport=cell.transport,
        token=TOKEN,
        method="tools/call",
        tool_name="echo",
        tool_args={"message": NON_ASCII},
        protocol_era=cell.protocol_era,
        timeout_s=INSPECTOR_TIMEOUT_S,
    )
    assert [tool["name"] for tool in listed["result"]["tools"]] == UPSTREAM_TOOLS
    result = called["result"]
    assert_echoed(result)
    if cell.protocol_era == "modern":
        # The Inspector reports no negotiated version; a 2026-07-28 result names its server in _meta (there is no
        # initialize result to do it), which shows the call really went over the 2026 era.
        assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == UPSTREAM_NAME, result
