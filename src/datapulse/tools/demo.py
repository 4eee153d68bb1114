"""The built-in demo server: the seed project's tools plus one resource and one prompt.

Tools: ``get_time``, ``fetch_url(url)``, ``echo(message)``, ``add(a, b)``, ``uppercase_text(text)``.
Resource: ``datapulse://about``. Prompt: ``summarize(text)``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from datapulse._version import __version__
from datapulse.tools.fetch import FetchPolicy, FetchRefused, safe_fetch

ABOUT_TEXT = (
    "DataPulse serves MCP tools, resources and prompts over every MCP HTTP generation: "
    "2026-07-28 and 2025 Streamable HTTP on /mcp, 2024-11-05 HTTP+SSE on /sse, and the DataPulse API on /events."
)


def utc_now_iso() -> str:
    """The current UTC time as ISO 8601 with a ``Z`` suffix, to the second (``2025-08-31T12:00:00Z``)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def build_demo_server(fetch_policy: FetchPolicy | None = None) -> MCPServer[Any]:
    """Build the demo `MCPServer`.

    Args:
        fetch_policy: limits for ``fetch_url`` (timeout, size cap, allowlist); defaults to `FetchPolicy()`.
    """
    policy = fetch_policy or FetchPolicy()
    server: MCPServer[Any] = MCPServer(
        "datapulse-demo",
        version=__version__,
        instructions="Demo tools: get_time, fetch_url, echo, add, uppercase_text.",
    )

    @server.tool(description="Current UTC time, ISO 8601 with a Z suffix.")
    async def get_time() -> dict[str, str]:
        return {"time": utc_now_iso()}

    @server.tool(
        description="Fetch an http(s) URL and return its HTTP status and the start of its content. "
        "Private, loopback, link-local and cloud-metadata addresses are refused."
    )
    async def fetch_url(url: str) -> dict[str, Any]:
        try:
            result = await safe_fetch(url, policy)
        except FetchRefused as exc:
            raise ToolError(str(exc)) from None
        return {
            "url": result.url,
            "status": result.status,
            "content_type": result.content_type,
            "snippet": result.snippet,
            "truncated": result.truncated,
        }

    @server.tool(description="Return the message unchanged.")
    async def echo(message: str) -> str:
        return message

    @server.tool(description="Add two numbers.")
    async def add(a: float, b: float) -> float:
        return a + b

    @server.tool(description="Convert text to upper case.")
    async def uppercase_text(text: str) -> str:
        return text.upper()

    @server.resource("datapulse://about", name="about", description="What this server is.", mime_type="text/plain")
    async def about() -> str:
        return ABOUT_TEXT

    @server.prompt(description="Ask the model to summarise a text.")
    async def summarize(text: str) -> str:
        return f"Summarise the following text in three sentences:\n\n{text}"

    return server
