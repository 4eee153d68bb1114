"""Interop tests: real third-party MCP clients (TypeScript SDK v1/v2, MCP Inspector CLI) against real servers."""
