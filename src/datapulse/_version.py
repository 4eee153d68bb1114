"""The installed distribution's version, in one module that imports nothing else of DataPulse (so any module can
use it without importing the package, whose ``__init__`` imports the whole app)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("datapulse")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
