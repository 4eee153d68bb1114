"""Shared fixtures for the interop tests (real third-party clients against real servers)."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
