"""Bridging stdio MCP servers onto DataPulse's HTTP transports."""
