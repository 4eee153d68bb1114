"""DataPulse: serve MCP tools, resources and prompts over every MCP HTTP generation, securely, in one command."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("datapulse")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

from datapulse.app import ConfigurationError, create_app, mounted_lifespan
from datapulse.config import Settings

__all__ = ["ConfigurationError", "Settings", "__version__", "create_app", "mounted_lifespan"]
