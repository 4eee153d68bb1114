"""MCP servers used by behaviour tests: tools that reveal identity, stream progress, wait on gates the test
controls, push standalone notifications, or ask the client for input."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import SamplingMessage, TextContent


class Gates:
    """Named events a test sets to let a waiting tool finish (shared by the in-process server and the test)."""

    def __init__(self) -> None:
        self._events: defaultdict[str, anyio.Event] = defaultdict(anyio.Event)
        self.entered: defaultdict[str, anyio.Event] = defaultdict(anyio.Event)

    def open(self, name: str) -> None:
        self._events[name].set()

    async def wait(self, name: str) -> None:
        self.entered[name].set()
        await self._events[name].wait()


def build_behaviour_server(gates: Gates) -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer("behaviour")

    @server.tool()
    async def whoami() -> str:
        token = get_access_token()
        return token.client_id if token is not None else "<nobody>"

    @server.tool()
    async def echo(message: str) -> str:
        return message

    @server.tool()
    async def progress_then_wait(steps: int, gate: str, ctx: Context) -> str:
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}")
        await gates.wait(gate)
        return f"done {gate}"

    @server.tool()
    async def report_then_work(seconds: float, ctx: Context) -> str:
        """Report progress (so a client knows the call is in flight), then work for ``seconds`` (simulated)."""
        await ctx.report_progress(0, 1, "started")
        await anyio.sleep(seconds)
        return f"worked {seconds:g} s"

    @server.tool()
    async def wait_for(gate: str) -> str:
        await gates.wait(gate)
        return f"opened {gate}"

    @server.tool()
    async def publish_tools_changed(ctx: Context) -> str:
        await ctx.notify_tools_changed()
        return "published"

    @server.tool()
    async def announce_tools_changed(ctx: Context) -> str:
        await ctx.session.send_tool_list_changed()
        return "announced"

    @server.tool()
    async def ask_model(question: str, ctx: Context) -> str:
        result = await ctx.session.create_message(
            messages=[SamplingMessage(role="user", content=TextContent(type="text", text=question))],
            max_tokens=50,
            related_request_id=ctx.request_id,
        )
        content = result.content
        return content.text if isinstance(content, TextContent) else repr(content)

    @server.tool()
    async def blob(size: int) -> str:
        return "x" * size

    @server.tool()
    async def process_id() -> str:
        """The id of the process that ran this call (which worker of several served it)."""
        return str(os.getpid())

    return server


BEHAVIOUR_APP = build_behaviour_server(Gates())
"""The behaviour server for ``datapulse serve tests.support.apps:BEHAVIOUR_APP`` (its gates stay closed)."""


@asynccontextmanager
async def _refuse_to_start(_server: MCPServer[Any]) -> AsyncIterator[None]:
    raise RuntimeError("this app refuses to start (its lifespan raises)")
    yield


FAILS_AT_STARTUP_APP: MCPServer[Any] = MCPServer("fails-at-startup", lifespan=_refuse_to_start)
"""Builds fine; its lifespan raises, so a server serving it never finishes start-up."""
