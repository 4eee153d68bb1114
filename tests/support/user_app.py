"""A user's MCP server, as `datapulse serve tests.support.user_app:mcp` would load it."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer

mcp: MCPServer[Any] = MCPServer("user-app")


@mcp.tool()
async def shout(word: str) -> str:
    return word.upper() + "!"
