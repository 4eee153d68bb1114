"""DataPulse: serve MCP tools, resources and prompts over every MCP HTTP generation, securely, in one command."""

from __future__ import annotations

from datapulse._version import __version__
from datapulse.app import ConfigurationError, create_app, mounted_lifespan
from datapulse.config import Settings

__all__ = ["ConfigurationError", "Settings", "__version__", "create_app", "mounted_lifespan"]
