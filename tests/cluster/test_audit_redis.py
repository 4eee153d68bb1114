"""`RedisStreamSink` against a real redis-server: records land in the stream; an outage drops records
without raising into the caller, warns once, and writes resume after Redis comes back."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import anyio
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from datapulse.audit import Auditor, AuditRecord, RedisStreamSink
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio

KEY = "dp:audit:test"
WAIT_S = 10.0


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(
        redis_server.url, socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 1)
    )
    try:
        yield client
    finally:
        await client.aclose()


async def tool_call(auditor: Auditor, n: int) -> AuditRecord:
    with anyio.fail_after(WAIT_S):
        return await auditor.record(
            "tool_call",
            principal="alice",
            session_id="s-1",
            transport="sse",
            protocol_version="2024-11-05",
            name="add",
            arguments={"n": n},
            outcome="ok",
            duration_ms=0.5,
        )


async def stream_records(redis: Redis) -> list[dict[str, object]]:
    with anyio.fail_after(WAIT_S):
        entries = await redis.xrange(KEY)
    records: list[dict[str, object]] = []
    for _entry_id, fields in entries or []:
        assert fields is not None
        records.append(json.loads(fields[b"record"]))
    return records


async def test_each_record_lands_in_the_stream_as_its_json_line(redis: Redis) -> None:
    auditor = Auditor([RedisStreamSink(redis, KEY)], node_id="node-a")
    written = [await tool_call(auditor, n) for n in range(3)]
    await auditor.aclose()
    assert await stream_records(redis) == [json.loads(record.to_json()) for record in written]
    with anyio.fail_after(WAIT_S):
        assert await redis.ping()  # aclose left the caller's client open


async def test_the_stream_is_capped_near_max_len(redis: Redis) -> None:
    auditor = Auditor([RedisStreamSink(redis, KEY, max_len=10)])
    for n in range(500):
        await tool_call(auditor, n)
    with anyio.fail_after(WAIT_S):
        length = await redis.xlen(KEY)
    assert 10 <= length < 500  # MAXLEN ~ trims whole macro nodes, so "near", not exactly 10


async def test_records_written_while_redis_is_down_are_dropped_with_one_warning_and_writes_resume_after_restart(
    redis_server: RedisServer, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    auditor = Auditor([RedisStreamSink(redis, KEY)])
    await tool_call(auditor, 0)
    await redis_server.stop()
    with caplog.at_level(logging.DEBUG, logger="datapulse.audit"):
        during = [await tool_call(auditor, n) for n in (1, 2, 3)]
        await redis_server.start()
        after = await tool_call(auditor, 4)

    assert [record.arguments_digest for record in during]  # record() returned a record each time
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per failure streak, not once per record
    assert "XADD" in warnings[0].getMessage()
    assert warnings[0].exc_info is None
    assert any("works again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    # redis-server runs without persistence: the restart emptied the stream, so only `after` is there.
    assert await stream_records(redis) == [json.loads(after.to_json())]
