"""Reaching a ``datapulse bridge`` with the SDK's Python client, and the stdio MCP server tests bridge."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, TypeVar

import anyio
import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from tests.support.servers import TOKEN, bearer

T = TypeVar("T")

STDIO_SERVER: Final = [sys.executable, "-m", "tests.support.stdio_server"]
"""The command of the SDK-based stdio MCP server of the tests (tests/support/stdio_server.py)."""
CALL_TIMEOUT_S: Final = 30.0
"""Bound on one call; a call that starts a child includes its start-up (a Python interpreter + the SDK)."""


def bridge_toml(config: Mapping[str, Any]) -> str:
    """``config`` as TOML (tables of strings, lists and tables are all the tests need); every server runs the
    tests' stdio server unless it names a command; a ``None`` value is left out."""
    lines: list[str] = []

    def table(name: str, values: Mapping[str, Any]) -> None:
        lines.append(f"[{name}]")
        nested = {key: value for key, value in values.items() if isinstance(value, Mapping)}
        for key, value in values.items():
            if value is not None and key not in nested:
                lines.append(f"{key} = {json.dumps(value)}")
        for key, value in nested.items():
            table(f"{name}.{key}", value)

    table("defaults", config["defaults"])
    for name, server in config["servers"].items():
        table(f"servers.{name}", {"command": STDIO_SERVER[0], "args": STDIO_SERVER[1:], **server})
    return "\n".join(lines) + "\n"


@asynccontextmanager
async def sdk_client(
    base: str, transport: Literal["mcp", "sse"] = "mcp", token: str = TOKEN, **options: Any
) -> AsyncIterator[Client]:
    """An SDK client of the server at ``base`` (``http://host:port[/prefix]``): on ``base/mcp`` a 2025-11-25
    session, on ``base/sse`` a 2024-11-05 one. ``options`` go to `mcp.Client` (``message_handler=``, ...)."""
    if transport == "sse":
        async with Client(sse_client(base + "/sse", headers=bearer(token)), mode="legacy", **options) as connected:
            yield connected
        return
    async with (
        httpx2.AsyncClient(headers=bearer(token), timeout=CALL_TIMEOUT_S) as http,
        Client(streamable_http_client(base + "/mcp", http_client=http), mode="legacy", **options) as connected,
    ):
        yield connected


class Notifications(list[Any]):
    """Collects what an SDK client's ``message_handler`` receives; `wait_for` one of a type."""

    def __init__(self) -> None:
        super().__init__()
        self._arrived = anyio.Event()

    async def __call__(self, message: Any) -> None:
        if not isinstance(message, Exception):
            self.append(message)
            self._arrived.set()
            self._arrived = anyio.Event()

    def of(self, kind: type[T]) -> list[T]:
        """The notifications of type ``kind`` received so far."""
        return [message for message in self if isinstance(message, kind)]

    async def wait_for(self, kind: type[T], *, count: int = 1, timeout_s: float = CALL_TIMEOUT_S) -> list[T]:
        """Wait until ``count`` notifications of type ``kind`` have arrived; all of them so far.

        Raises:
            TimeoutError: fewer within ``timeout_s``.
        """
        with anyio.fail_after(timeout_s):
            while len(found := self.of(kind)) < count:
                await self._arrived.wait()
        return found


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
