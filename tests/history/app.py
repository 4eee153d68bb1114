"""The MCP server the history checker's workload calls: ``datapulse serve tests.history.app:app``.

``echo(message)`` answers at once with the moment it returned (``time.monotonic_ns()``: one clock for every
process of the machine), so the checker knows the order in which the tools finished;
``steps(count, message, ctx)`` reports ``count`` progress notifications, a little apart, before answering, so
a cut connection falls in the middle of a streamed response; ``announce(client, n)`` puts a message on the
session's standalone stream (2025 ``GET /mcp``), which the client holds open and resumes; ``touch(uri)`` publishes
``notifications/resources/updated`` for ``uri`` to the ``subscriptions/listen`` streams (2026-07-28) of every
instance.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer

STEP_INTERVAL_S = 0.05

app: MCPServer[Any] = MCPServer("history")


@app.tool(description="Return the message, then '|' and when the tool returned (CLOCK_MONOTONIC ns).")
async def echo(message: str) -> str:
    return f"{message}|{time.monotonic_ns()}"


@app.tool(description="Send {client, n} as a log message on the session's own (GET) stream, not this request's.")
async def announce(client: str, n: int, ctx: Context) -> str:
    await ctx.session.send_log_message("info", {"client": client, "n": n}, logger="history")  # standalone channel
    return "announced"


@app.tool(description="Report `count` progress steps, then return the message.")
async def steps(count: int, message: str, ctx: Context) -> str:
    for step in range(1, count + 1):
        await ctx.report_progress(step, count)
        await anyio.sleep(STEP_INTERVAL_S)
    return message


@app.tool(description="Publish notifications/resources/updated for `uri` to subscriptions/listen streams.")
async def touch(uri: str, ctx: Context) -> str:
    await ctx.notify_resource_updated(uri)
    return "touched"
