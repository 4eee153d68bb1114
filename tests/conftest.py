"""Shared pytest configuration: every async test runs on anyio's asyncio backend; `redis_server` is a
real redis-server process per test (cluster-mode tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer, run_redis


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    async with run_redis(tmp_path) as server:
        yield server
