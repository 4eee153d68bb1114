"""Metrics in cluster mode: each instance reports its own /metrics (forwarded requests on the instance that
forwarded, the call on the owner that ran it), and every Redis command and pipeline is timed."""

from __future__ import annotations

import anyio
import httpx2
import pytest
from redis.exceptions import ResponseError

from datapulse.cluster.store import connect
from tests.support.cluster import spawn_cluster
from tests.support.mcp_http import legacy_call, legacy_initialize
from tests.support.prometheus import Samples, scrape, value
from tests.support.redis_server import RedisServer
from tests.support.servers import TOKEN, ServerProcess, bearer

pytestmark = pytest.mark.anyio


async def test_the_cluster_redis_client_times_each_command_and_each_pipeline(redis_server: RedisServer) -> None:
    client = connect(redis_server.url, timeout_s=2.0)
    observed: list[tuple[str, float]] = []
    client.observer = lambda command, seconds: observed.append((command, seconds))
    try:
        await client.set("k", "v")
        assert await client.get("k") == b"v"
        async with client.pipeline(transaction=False) as pipe:
            pipe.set("a", "1")
            pipe.get("a")
            assert await pipe.execute() == [True, b"1"]
        with pytest.raises(ResponseError):
            await client.hgetall("k")  # wrong type: a failed command is observed too
    finally:
        await client.aclose()
    assert [command for command, _ in observed] == ["set", "get", "pipeline", "hgetall"]
    assert all(0 <= seconds < 2.0 for _, seconds in observed)


async def scrape_instance(process: ServerProcess) -> Samples:
    async with httpx2.AsyncClient(base_url=process.url, headers=bearer(TOKEN), timeout=10) as client:
        return await scrape(client)


async def test_each_instance_reports_its_own_forwarded_requests_calls_and_redis_latency(
    redis_server: RedisServer,
) -> None:
    async with spawn_cluster(redis_server.url, n=2, args=["tests.support.apps:BEHAVIOUR_APP"]) as (owner, other):
        async with httpx2.AsyncClient(base_url=owner.url, headers=bearer(TOKEN), timeout=10) as on_owner:
            session_id = await legacy_initialize(on_owner)
        async with httpx2.AsyncClient(base_url=other.url, headers=bearer(TOKEN), timeout=10) as on_other:
            params = {"name": "echo", "arguments": {"message": "via the other instance"}}
            with anyio.fail_after(20):
                response = await legacy_call(on_other, session_id, "tools/call", params, 2)
            assert response.status_code == 200, response.text
        owner_samples, other_samples = await scrape_instance(owner), await scrape_instance(other)

    forwarded = "datapulse_forwarded_requests_total"
    assert value(other_samples, forwarded, outcome="ok") == 1
    assert value(owner_samples, forwarded, outcome="ok") == 0
    calls = "datapulse_tool_calls_total"
    assert value(owner_samples, calls, tool="echo", outcome="ok") == 1  # the owner ran the call
    assert value(other_samples, calls, tool="echo", outcome="ok") == 0
    for samples in (owner_samples, other_samples):
        timed = [
            labels
            for (name, labels), count in samples.items()
            if name == "datapulse_redis_command_duration_seconds_count" and count > 0
        ]
        assert timed, "no Redis command was timed"
    publishes = "datapulse_redis_command_duration_seconds_count"
    forwarded_frames = value(other_samples, publishes, command="pipeline") + value(
        other_samples, publishes, command="publish"
    )
    assert forwarded_frames >= 1  # the tunnelled request went out through Redis
