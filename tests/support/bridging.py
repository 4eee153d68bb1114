"""Reaching a ``datapulse bridge`` with the SDK's Python client, and the stdio MCP server tests bridge."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, Literal

import anyio
import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from tests.support.servers import TOKEN, bearer

STDIO_SERVER: Final = [sys.executable, "-m", "tests.support.stdio_server"]
"""The command of the SDK-based stdio MCP server of the tests (tests/support/stdio_server.py)."""
CALL_TIMEOUT_S: Final = 30.0
"""Bound on one call; a call that starts a child includes its start-up (a Python interpreter + the SDK)."""


@asynccontextmanager
async def sdk_client(base: str, transport: Literal["mcp", "sse"] = "mcp", token: str = TOKEN) -> AsyncIterator[Client]:
    """An SDK client of the server at ``base`` (``http://host:port[/prefix]``): on ``base/mcp`` a 2025-11-25
    session, on ``base/sse`` a 2024-11-05 one."""
    if transport == "sse":
        async with Client(sse_client(base + "/sse", headers=bearer(token)), mode="legacy") as connected:
            yield connected
        return
    async with (
        httpx2.AsyncClient(headers=bearer(token), timeout=CALL_TIMEOUT_S) as http,
        Client(streamable_http_client(base + "/mcp", http_client=http), mode="legacy") as connected,
    ):
        yield connected


def text(result: CallToolResult) -> str:
    """The text of a successful tool result's first content block."""
    assert result.is_error is False, result
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


async def call(connected: Client, name: str, arguments: dict[str, object] | None = None) -> str:
    """Call tool ``name`` (bounded by `CALL_TIMEOUT_S`); its text."""
    with anyio.fail_after(CALL_TIMEOUT_S):
        return text(await connected.call_tool(name, arguments or {}))
