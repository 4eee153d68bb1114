"""A small, real stdio MCP server (built with the SDK's ``MCPServer``) for the ``datapulse bridge`` tests and bench.

Run from the repository root::

    python -m tests.support.stdio_server [--exit-at-start] [--exit-at-start-if-exists PATH] [--garbage]
        [--stderr-chatter] [--slow-start SECONDS]

Tools:

``increment() -> str``         a per-process counter; returns the new value as text ("1", "2", ...)
``echo(message) -> str``       returns ``message``
``pid() -> str``               ``os.getpid()`` of this process (which child served the call)
``crash() -> str``             the process exits with status 1 mid-call (``os._exit(1)``); no response is sent
``slow(seconds) -> str``       reports progress once, sleeps ``seconds``, returns ``"slept <seconds>"``
``admin_reset() -> str``       returns ``"reset"`` (a name for tool-filter tests)
``delete_everything() -> str`` returns ``"deleted nothing"`` (a name for tool-filter tests)
``sample(question) -> str``    asks the client for sampling (``sampling/createMessage``) and returns its text
``log(message) -> str``        sends ``message`` as a ``notifications/message`` (level info) about this call
``change_tools() -> str``      sends ``notifications/tools/list_changed`` on the session (2026-07-28: to listen streams)
``touch(uri) -> str``          sends ``notifications/resources/updated`` for ``uri`` on the session (2026-07-28: to
                               listen streams subscribed to it)

Resource ``stdio://info`` (text), resource template ``stdio://items/{item}``, prompt ``greet(name)``.

Options:

``--exit-at-start``      print "refusing to start" to stderr and exit with status 2 before reading stdin
``--exit-at-start-if-exists PATH``  the same, only while the file PATH exists (a restart that fails)
``--garbage``            write non-JSON lines onto the wire (the real stdout pipe) at start and before every tool
                         result, interleaved with the SDK's own JSON-RPC lines
``--stderr-chatter``     write a line to stderr at start and on every tool call
``--slow-start SECONDS`` sleep before serving

While it serves, the SDK's ``stdio_server()`` points fd 1 at stderr (stray prints miss the wire) and writes
JSON-RPC to a private duplicate of the original stdout. So ``--garbage`` keeps its own duplicate of fd 1, taken
before serving starts, and writes whole lines to it with ``os.write``: they really land in the stdout pipe, between
the SDK's lines.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import SamplingMessage, TextContent

GARBAGE_LINE = b"not json: stray output from the stdio server\n"
INFO_TEXT = "DataPulse stdio test server"


class Noise:
    """Where ``--garbage`` and ``--stderr-chatter`` write (both off unless enabled)."""

    def __init__(self) -> None:
        self.wire_fd: int | None = None
        self.chatter = False

    def garbage(self, count: int = 1) -> None:
        if self.wire_fd is not None:
            for _ in range(count):
                os.write(self.wire_fd, GARBAGE_LINE)

    def say(self, text: str) -> None:
        if self.chatter:
            os.write(2, f"stdio_server[{os.getpid()}]: {text}\n".encode())


def build_server(noise: Noise) -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer("datapulse-stdio-fixture")
    counter = 0

    def called(name: str) -> None:
        noise.say(f"call {name}")
        noise.garbage()

    @server.tool()
    async def increment() -> str:
        nonlocal counter
        counter += 1
        called("increment")
        return str(counter)

    @server.tool()
    async def echo(message: str) -> str:
        called("echo")
        return message

    @server.tool()
    async def pid() -> str:
        called("pid")
        return str(os.getpid())

    @server.tool()
    async def crash() -> str:
        noise.say("call crash: exiting with status 1")
        os._exit(1)

    @server.tool()
    async def slow(seconds: float, ctx: Context) -> str:
        await ctx.report_progress(0, 1, "sleeping")
        await anyio.sleep(seconds)
        called("slow")
        return f"slept {seconds:g}"

    @server.tool()
    async def admin_reset() -> str:
        called("admin_reset")
        return "reset"

    @server.tool()
    async def delete_everything() -> str:
        called("delete_everything")
        return "deleted nothing"

    @server.tool()
    async def sample(question: str, ctx: Context) -> str:
        result = await ctx.session.create_message(
            messages=[SamplingMessage(role="user", content=TextContent(type="text", text=question))],
            max_tokens=50,
            related_request_id=ctx.request_id,
        )
        called("sample")
        content = result.content
        return content.text if isinstance(content, TextContent) else repr(content)

    @server.tool()
    async def log(message: str, ctx: Context) -> str:
        await ctx.info(message)
        called("log")
        return "logged"

    @server.tool()
    async def change_tools(ctx: Context) -> str:
        await ctx.session.send_tool_list_changed()  # handshake era: on the session
        await ctx.notify_tools_changed()  # 2026-07-28: to subscriptions/listen streams
        called("change_tools")
        return "changed"

    @server.tool()
    async def touch(uri: str, ctx: Context) -> str:
        await ctx.session.send_resource_updated(uri)  # handshake era: to the session
        await ctx.notify_resource_updated(uri)  # 2026-07-28: to listen streams subscribed to it
        called("touch")
        return "touched"

    @server.resource("stdio://info", mime_type="text/plain")
    def info() -> str:
        return INFO_TEXT

    @server.resource("stdio://items/{item}", mime_type="text/plain")
    def item(item: str) -> str:
        return f"item {item}"

    @server.prompt()
    def greet(name: str) -> str:
        return f"Hello, {name}!"

    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.stdio_server", description=__doc__.split("\n")[0])
    parser.add_argument("--exit-at-start", action="store_true", help="exit with status 2 before reading stdin")
    parser.add_argument("--exit-at-start-if-exists", metavar="PATH", help="exit at start while the file PATH exists")
    parser.add_argument("--garbage", action="store_true", help="write non-JSON lines onto stdout")
    parser.add_argument("--stderr-chatter", action="store_true", help="write a stderr line at start and per call")
    parser.add_argument("--slow-start", type=float, default=0.0, metavar="SECONDS", help="sleep before serving")
    args = parser.parse_args(argv)
    if args.exit_at_start or (args.exit_at_start_if_exists and os.path.exists(args.exit_at_start_if_exists)):
        print("refusing to start", file=sys.stderr, flush=True)
        sys.exit(2)
    noise = Noise()
    noise.chatter = args.stderr_chatter
    noise.say("starting")
    if args.slow_start > 0:
        time.sleep(args.slow_start)
    if args.garbage:
        noise.wire_fd = os.dup(1)  # the stdout pipe itself, kept past the SDK's fd-1 diversion
        noise.garbage(3)
    build_server(noise).run("stdio")


if __name__ == "__main__":
    main()
