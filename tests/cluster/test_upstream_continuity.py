"""`UpstreamSessions` records a gateway's upstream sessions in a real redis-server: a record reads back as it was
written, an unreadable one is dropped, and an unreachable Redis means "nothing recorded", never an error."""

from __future__ import annotations

import pytest
from mcp import types

from datapulse.bridge.continuity import UpstreamSession, UpstreamSessions
from datapulse.cluster.store import connect
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio

ANSWER = types.InitializeResult(
    protocol_version="2025-11-25",
    capabilities=types.ServerCapabilities(tools=types.ToolsCapability(list_changed=True)),
    server_info=types.Implementation(name="upstream", version="1.2.3"),
    instructions="be nice",
)


async def test_a_recorded_upstream_session_reads_back_as_written_and_is_gone_once_dropped(
    redis_server: RedisServer,
) -> None:
    redis = connect(redis_server.url, 2.0)
    try:
        records = UpstreamSessions(redis, "test-continuity", "search")
        assert await records.load("client-1") is None
        await records.save("client-1", UpstreamSession("upstream-abc", ANSWER))
        assert await records.load("client-1") == UpstreamSession("upstream-abc", ANSWER)
        assert await records.load("client-2") is None  # per client session
        assert await UpstreamSessions(redis, "test-continuity", "other").load("client-1") is None  # per server
        ttl = await redis.ttl("test-continuity:{s:client-1}:upstream:search")
        assert 0 < ttl <= 24 * 3600
        await records.drop("client-1")
        assert await records.load("client-1") is None
    finally:
        await redis.aclose()


async def test_an_unreadable_record_is_dropped_and_reads_as_nothing(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url, 2.0)
    try:
        key = "test-continuity:{s:client-3}:upstream:search"
        await redis.hset(key, mapping={"session_id": "x", "result": "{not json"})
        assert await UpstreamSessions(redis, "test-continuity", "search").load("client-3") is None
        assert await redis.exists(key) == 0
    finally:
        await redis.aclose()


async def test_an_unreachable_redis_reads_as_nothing_and_writes_are_skipped() -> None:
    redis = connect("redis://127.0.0.1:9/0", 0.5)
    try:
        records = UpstreamSessions(redis, "test-continuity", "search")
        assert await records.load("client-1") is None
        await records.save("client-1", UpstreamSession("upstream-abc", ANSWER))  # logged, not raised
        await records.drop("client-1")
    finally:
        await redis.aclose()
