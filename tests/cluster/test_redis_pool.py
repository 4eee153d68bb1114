"""More concurrent Redis commands than the client's pool holds connections wait for a free one instead of failing
(a burst of requests above the pool size once turned into 503s: redis-py's default pool raises when all are busy)."""

from __future__ import annotations

import anyio
import pytest

from datapulse.cluster.store import connect
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio


async def test_commands_beyond_the_pool_size_wait_for_a_connection_and_all_succeed(redis_server: RedisServer) -> None:
    store = connect(f"{redis_server.url}?max_connections=2", 5.0)
    results: list[object] = []

    async def blocked_pop(n: int) -> None:
        results.append(await store.blpop([f"missing-{n}"], timeout=0.1))  # holds a connection for 0.1 s

    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                for n in range(12):
                    tasks.start_soon(blocked_pop, n)
        assert results == [None] * 12
        assert store.connection_pool.max_connections == 2  # the URL's setting, not the default
    finally:
        await store.aclose()
