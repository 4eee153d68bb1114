"""The benchmark's MCP server: one tool, ``echo``, served both by DataPulse and by the SDK apps."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

app = MCPServer("bench")


@app.tool()
async def echo(message: str) -> str:
    """Return ``message`` unchanged."""
    return message
