"""`RateLimiter` in memory and on a real redis-server, and `StreamSlots`.

Windows are an hour or a day long, so no window boundary can fall inside a test: a refusal is caused
by the count alone, never by the clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
import pytest
from redis.asyncio import Redis

from datapulse.cluster.store import StoreUnavailable, connect
from datapulse.errors import SERVER_ERROR, RateLimited
from datapulse.ratelimit import RateLimiter, StreamSlots, parse_limit, parse_tool_limits
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio

WAIT_S = 5.0
HOUR_S = 3600


@asynccontextmanager
async def limiter(
    per_principal: str = "",
    per_tool: str = "",
    default_tool: str = "",
    redis: Redis | None = None,
) -> AsyncIterator[RateLimiter]:
    limiter = RateLimiter(
        per_principal=parse_limit(per_principal),
        per_tool=parse_tool_limits(per_tool),
        default_tool=parse_limit(default_tool),
        redis=redis,
    )
    try:
        yield limiter
    finally:
        await limiter.aclose()


async def hit_requests(limiter: RateLimiter, principal: str, times: int) -> None:
    with anyio.fail_after(WAIT_S):
        for _ in range(times):
            await limiter.hit_request(principal)


async def hit_tools(limiter: RateLimiter, principal: str, tool: str, times: int) -> None:
    with anyio.fail_after(WAIT_S):
        for _ in range(times):
            await limiter.hit_tool(principal, tool)


async def refused_request(limiter: RateLimiter, principal: str) -> RateLimited:
    with anyio.fail_after(WAIT_S), pytest.raises(RateLimited) as caught:
        await limiter.hit_request(principal)
    return caught.value


async def refused_tool(limiter: RateLimiter, principal: str, tool: str) -> RateLimited:
    with anyio.fail_after(WAIT_S), pytest.raises(RateLimited) as caught:
        await limiter.hit_tool(principal, tool)
    return caught.value


def assert_retry_within(error: RateLimited, window_s: int) -> None:
    assert error.http_status == 429
    assert error.jsonrpc_code == SERVER_ERROR
    assert 1 <= error.retry_after_s <= window_s
    assert error.headers["Retry-After"] == str(error.retry_after_s)
    assert error.data == {"retryAfterSeconds": error.retry_after_s}


# --- memory ---------------------------------------------------------------------------------------


async def test_the_request_after_the_limit_is_refused_with_a_retry_after_within_the_window() -> None:
    async with limiter("3/hour") as rl:
        await hit_requests(rl, "alice", 3)
        error = await refused_request(rl, "alice")
    assert_retry_within(error, HOUR_S)
    assert "'alice'" in error.message
    assert "3 per 1 hour" in error.message


async def test_a_refused_request_stays_refused() -> None:
    async with limiter("2/hour") as rl:
        await hit_requests(rl, "alice", 2)
        for _ in range(3):
            assert_retry_within(await refused_request(rl, "alice"), HOUR_S)


async def test_principals_are_limited_independently() -> None:
    async with limiter("2/hour") as rl:
        await hit_requests(rl, "alice", 2)
        await refused_request(rl, "alice")
        await hit_requests(rl, "bob", 2)
        await refused_request(rl, "bob")


async def test_the_tightest_of_several_limits_refuses() -> None:
    async with limiter("100/hour;2/day") as rl:
        await hit_requests(rl, "alice", 2)
        error = await refused_request(rl, "alice")
    assert "2 per 1 day" in error.message
    assert_retry_within(error, 24 * HOUR_S)


async def test_a_tool_limit_is_independent_of_other_tools_and_other_principals() -> None:
    async with limiter(per_tool="search=2/hour,fetch_*=1/hour") as rl:
        await hit_tools(rl, "alice", "search", 2)
        error = await refused_tool(rl, "alice", "search")
        await hit_tools(rl, "alice", "fetch_page", 1)
        await hit_tools(rl, "alice", "fetch_file", 1)  # a glob gives each matching tool its own budget
        await refused_tool(rl, "alice", "fetch_page")
        await hit_tools(rl, "bob", "search", 2)
    assert_retry_within(error, HOUR_S)
    assert "'search'" in error.message
    assert "'alice'" in error.message


async def test_tool_calls_and_requests_are_counted_separately() -> None:
    async with limiter("2/hour", per_tool="search=2/hour") as rl:
        await hit_tools(rl, "alice", "search", 2)
        await hit_requests(rl, "alice", 2)
        await refused_tool(rl, "alice", "search")
        await refused_request(rl, "alice")


async def test_a_tool_matching_no_glob_and_no_default_is_unlimited() -> None:
    async with limiter(per_tool="search=1/hour") as rl:
        await hit_tools(rl, "alice", "get_time", 50)


async def test_default_tool_limits_apply_to_unmatched_tools() -> None:
    async with limiter(per_tool="search=1/hour", default_tool="2/hour") as rl:
        await hit_tools(rl, "alice", "get_time", 2)
        await refused_tool(rl, "alice", "get_time")
        await hit_tools(rl, "alice", "echo", 2)  # each unmatched tool has its own default budget
        await hit_tools(rl, "alice", "search", 1)
        await refused_tool(rl, "alice", "search")  # a matching glob wins over the default


async def test_a_limiter_without_limits_is_disabled_and_allows_everything() -> None:
    async with limiter() as rl:
        assert not rl.enabled
        await hit_requests(rl, "alice", 50)
        await hit_tools(rl, "alice", "search", 50)
    async with limiter("1/hour") as a, limiter(per_tool="x=1/hour") as b, limiter(default_tool="1/hour") as c:
        assert a.enabled
        assert b.enabled
        assert c.enabled


# --- Redis ----------------------------------------------------------------------------------------


@asynccontextmanager
async def clients(url: str, count: int) -> AsyncIterator[Sequence[Redis]]:
    opened = [connect(url, timeout_s=1.0) for _ in range(count)]
    try:
        yield opened
    finally:
        for client in opened:
            await client.aclose()


async def test_two_instances_share_a_principal_limit_through_redis(redis_server: RedisServer) -> None:
    async with (
        clients(redis_server.url, 2) as (a, b),
        limiter("3/hour", redis=a) as one,
        limiter("3/hour", redis=b) as two,
    ):
        await hit_requests(one, "alice", 1)
        await hit_requests(two, "alice", 1)
        await hit_requests(one, "alice", 1)
        assert_retry_within(await refused_request(two, "alice"), HOUR_S)
        assert_retry_within(await refused_request(one, "alice"), HOUR_S)
        await hit_requests(two, "bob", 3)


async def test_two_instances_share_a_tool_limit_through_redis(redis_server: RedisServer) -> None:
    async with (
        clients(redis_server.url, 2) as (a, b),
        limiter(per_tool="search=2/hour", redis=a) as one,
        limiter(per_tool="search=2/hour", redis=b) as two,
    ):
        await hit_tools(one, "alice", "search", 1)
        await hit_tools(two, "alice", "search", 1)
        error = await refused_tool(one, "alice", "search")
        await refused_tool(two, "alice", "search")
        await hit_tools(two, "alice", "other", 5)
    assert_retry_within(error, HOUR_S)


async def test_redis_keys_live_under_the_prefix_and_never_name_the_principal(redis_server: RedisServer) -> None:
    principal = "alice@example.com"
    async with clients(redis_server.url, 1) as (client,), limiter("5/hour", "odd tool/{x}=5/hour", redis=client) as rl:
        await hit_requests(rl, principal, 1)
        await hit_tools(rl, principal, "odd tool/{x}", 1)
        with anyio.fail_after(WAIT_S):
            keys = [key.decode() for key in await client.keys("*") if isinstance(key, bytes)]
    assert len(keys) == 2
    assert all(key.startswith("dp:rl:") for key in keys)
    assert not any("alice" in key or "odd tool" in key or "{" in key for key in keys)


async def test_a_redis_outage_is_a_503_and_limits_work_again_after_restart(redis_server: RedisServer) -> None:
    async with clients(redis_server.url, 1) as (client,), limiter("3/hour", "search=3/hour", redis=client) as rl:
        await hit_requests(rl, "alice", 1)
        await redis_server.stop()
        with anyio.fail_after(WAIT_S):
            with pytest.raises(StoreUnavailable) as caught:
                await rl.hit_request("alice")
            with pytest.raises(StoreUnavailable):
                await rl.hit_tool("alice", "search")
        assert caught.value.http_status == 503
        await redis_server.start()
        await hit_requests(rl, "alice", 3)  # the restarted server kept nothing (no persistence)
        await refused_request(rl, "alice")
        await hit_tools(rl, "alice", "search", 3)
        await refused_tool(rl, "alice", "search")


# --- StreamSlots ----------------------------------------------------------------------------------


def test_stream_slots_cap_each_principal_and_free_a_slot_on_release() -> None:
    slots = StreamSlots(2)
    first = slots.acquire("alice")
    slots.acquire("alice")
    with pytest.raises(RateLimited) as caught:
        slots.acquire("alice")
    assert caught.value.retry_after_s == 1
    assert "DATAPULSE_MAX_STREAMS_PER_PRINCIPAL" in caught.value.message
    assert slots.count("alice") == 2
    slots.acquire("bob")
    slots.acquire("bob")
    first()
    assert slots.count("alice") == 1
    slots.acquire("alice")
    assert slots.count("alice") == 2


def test_a_stream_slot_release_is_idempotent() -> None:
    slots = StreamSlots(3)
    release = slots.acquire("alice")
    slots.acquire("alice")
    release()
    release()
    assert slots.count("alice") == 1
    assert slots.count("nobody") == 0


def test_no_stream_cap_means_unlimited() -> None:
    slots = StreamSlots(None)
    releases = [slots.acquire("alice") for _ in range(1000)]
    assert slots.count("alice") == 1000
    for release in releases:
        release()
    assert slots.count("alice") == 0


@pytest.mark.parametrize("cap", [0, -1])
def test_a_stream_cap_below_one_is_rejected(cap: int) -> None:
    with pytest.raises(ValueError, match="DATAPULSE_MAX_STREAMS_PER_PRINCIPAL"):
        StreamSlots(cap)
