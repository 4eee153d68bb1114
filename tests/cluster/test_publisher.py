"""`Publisher` against a real redis-server: order, subscriber counts, batching, and Redis faults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from datapulse.cluster.publisher import Publisher
from datapulse.cluster.redis_api import close_pubsub
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio

WAIT_S = 10.0


def client(url: str) -> Redis:
    return Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)


@asynccontextmanager
async def running(publisher: Publisher) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(publisher.run)
        yield
        tg.cancel_scope.cancel()


async def read(pubsub: PubSub, count: int) -> list[bytes]:
    got: list[bytes] = []
    with anyio.fail_after(WAIT_S):
        while len(got) < count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                got.append(message["data"])
    return got


async def test_frames_published_at_once_arrive_in_call_order_in_fewer_round_trips(redis_server: RedisServer) -> None:
    redis, listener = client(redis_server.url), client(redis_server.url)
    pubsub = listener.pubsub()
    await pubsub.subscribe("ch")
    publisher = Publisher(redis)
    counts: dict[int, int] = {}

    async def send(n: int) -> None:
        counts[n] = await publisher.publish("ch", b"frame-%d" % n)

    try:
        async with running(publisher):
            with anyio.fail_after(WAIT_S):
                async with anyio.create_task_group() as tg:
                    for n in range(50):
                        tg.start_soon(send, n)
        assert await read(pubsub, 50) == [b"frame-%d" % n for n in range(50)]
        assert counts == dict.fromkeys(range(50), 1)
        assert 1 <= publisher.round_trips < 50
    finally:
        await close_pubsub(pubsub)
        await redis.aclose()
        await listener.aclose()


async def test_a_frame_nobody_listens_for_reports_zero_subscribers(redis_server: RedisServer) -> None:
    redis = client(redis_server.url)
    publisher = Publisher(redis)
    try:
        assert await publisher.publish("nobody", b"x") == 0  # writer not running: sent on its own
        async with running(publisher):
            with anyio.fail_after(WAIT_S):
                assert await publisher.publish("nobody", b"x") == 0
    finally:
        await redis.aclose()


async def test_a_redis_outage_fails_the_waiting_publish_and_the_writer_recovers_afterwards(
    redis_server: RedisServer,
) -> None:
    redis, listener = client(redis_server.url), client(redis_server.url)
    publisher = Publisher(redis)
    try:
        async with running(publisher):
            with anyio.fail_after(WAIT_S):
                await redis_server.stop()
                with pytest.raises((RedisError, OSError)):
                    await publisher.publish("ch", b"lost")
                await redis_server.start()
                pubsub = listener.pubsub()
                await pubsub.subscribe("ch")
                assert await publisher.publish("ch", b"after") == 1
                assert await read(pubsub, 1) == [b"after"]
                await close_pubsub(pubsub)
    finally:
        await redis.aclose()
        await listener.aclose()
