"""`RedisSubscriptionBus` against a real redis-server: two nodes, one channel.

Absence ("exactly once", "nothing") is proven by ordering, not by waiting: Redis delivers one channel's
messages to a subscriber in PUBLISH order, so once a later marker event has arrived through a node's
reader, any duplicate of an earlier event would already have arrived too.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest
from mcp.server.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError

from datapulse.cluster.bus import RedisSubscriptionBus, decode_event, encode_event
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio

CHANNEL = "dp:ch:bus"
WAIT_S = 10.0


class Recorder:
    """A bus listener that records what it is given and lets a test wait for the n-th event."""

    def __init__(self) -> None:
        self.events: list[ServerEvent] = []
        self._grew = anyio.Event()

    def __call__(self, event: ServerEvent) -> None:
        self.events.append(event)
        self._grew.set()
        self._grew = anyio.Event()

    async def wait_for(self, count: int) -> list[ServerEvent]:
        """The first ``count`` events, once that many arrived (fails after `WAIT_S`)."""
        with anyio.fail_after(WAIT_S):
            while len(self.events) < count:
                await self._grew.wait()
        return self.events[:count]


def client(url: str) -> Redis:
    return Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)


@asynccontextmanager
async def two_nodes(url: str) -> AsyncIterator[tuple[RedisSubscriptionBus, RedisSubscriptionBus]]:
    """Buses ``node-a`` and ``node-b`` on one channel, each with its own client, readers running."""
    clients = (client(url), client(url))
    a = RedisSubscriptionBus(clients[0], CHANNEL, "node-a", reconnect_backoff_max_s=0.2)
    b = RedisSubscriptionBus(clients[1], CHANNEL, "node-b", reconnect_backoff_max_s=0.2)
    try:
        async with anyio.create_task_group() as tg:
            with anyio.fail_after(WAIT_S):
                await tg.start(a.run)
                await tg.start(b.run)
            yield a, b
            tg.cancel_scope.cancel()
    finally:
        for redis in clients:
            await redis.aclose()


async def publish_until_received(publisher: RedisSubscriptionBus, receiver: RedisSubscriptionBus) -> None:
    """Publish fresh events on ``publisher`` until ``receiver`` delivers one (its reader may still be backing off)."""
    received = Recorder()
    unsubscribe = receiver.subscribe(received)
    try:
        with anyio.fail_after(WAIT_S):
            attempt = 0
            while not received.events:
                attempt += 1
                await publisher.publish(ResourceUpdated(uri=f"retry:{attempt}"))
                with anyio.move_on_after(0.1):
                    await received.wait_for(1)
    finally:
        unsubscribe()


async def test_an_event_published_on_one_node_reaches_each_listener_on_both_nodes_exactly_once(
    redis_server: RedisServer,
) -> None:
    event, marker_b, marker_a = ResourceUpdated("file:///e"), ResourceUpdated("m:b"), ResourceUpdated("m:a")
    on_a, on_b = Recorder(), Recorder()
    async with two_nodes(redis_server.url) as (a, b):
        assert a.connected
        assert b.connected
        a.subscribe(on_a)
        b.subscribe(on_b)

        await a.publish(event)
        assert on_a.events == [event]  # local delivery happens inside publish
        assert await on_b.wait_for(1) == [event]
        await b.publish(marker_b)  # reaches A's reader after A's own echo of `event`
        assert await on_a.wait_for(2) == [event, marker_b]
        await a.publish(marker_a)  # reaches B's reader after any duplicate of `event` and B's echo of marker_b
        assert await on_b.wait_for(3) == [event, marker_b, marker_a]

        assert on_a.events == [event, marker_b, marker_a]
        assert on_b.events == [event, marker_b, marker_a]
    assert not a.connected
    assert not b.connected


@pytest.mark.parametrize(
    "event",
    [ToolsListChanged(), PromptsListChanged(), ResourcesListChanged(), ResourceUpdated("file:///data/a b.csv?x=1")],
    ids=["tools", "prompts", "resources", "resource-updated"],
)
async def test_every_event_type_crosses_nodes_unchanged(redis_server: RedisServer, event: ServerEvent) -> None:
    on_b = Recorder()
    async with two_nodes(redis_server.url) as (a, b):
        b.subscribe(on_b)
        await a.publish(event)
        assert await on_b.wait_for(1) == [event]


def test_the_wire_frame_is_compact_json_naming_node_method_and_params() -> None:
    frame = encode_event("node-a", ResourceUpdated("file:///a.txt"))
    assert frame == '{"n":"node-a","m":"notifications/resources/updated","p":{"uri":"file:///a.txt"}}'
    assert encode_event("node-a", ToolsListChanged()) == '{"n":"node-a","m":"notifications/tools/list_changed","p":{}}'
    assert decode_event(frame.encode()) == ("node-a", ResourceUpdated("file:///a.txt"))


async def test_an_unsubscribed_listener_gets_nothing(redis_server: RedisServer) -> None:
    gone_a, gone_b, on_b = Recorder(), Recorder(), Recorder()
    async with two_nodes(redis_server.url) as (a, b):
        unsubscribe_a = a.subscribe(gone_a)
        unsubscribe_b = b.subscribe(gone_b)
        b.subscribe(on_b)
        unsubscribe_a()
        unsubscribe_b()
        unsubscribe_b()  # idempotent

        await a.publish(ToolsListChanged())
        await on_b.wait_for(1)  # B's reader has delivered it
    assert gone_a.events == []
    assert gone_b.events == []


async def test_a_listener_that_raises_does_not_stop_the_others_or_the_reader(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(event: ServerEvent) -> None:
        raise RuntimeError("listener bug")

    on_a, on_b = Recorder(), Recorder()
    first, second = ResourceUpdated("u:1"), ResourceUpdated("u:2")
    async with two_nodes(redis_server.url) as (a, b):
        a.subscribe(explode)
        a.subscribe(on_a)
        b.subscribe(explode)
        b.subscribe(on_b)

        await a.publish(first)
        await a.publish(second)
        assert on_a.events == [first, second]
        assert await on_b.wait_for(2) == [first, second]
        assert b.connected
    assert "listener raised" in caplog.text


async def test_publish_while_redis_is_down_does_not_raise_and_still_delivers_locally(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    on_a = Recorder()
    event = ResourceUpdated("file:///while-down")
    async with two_nodes(redis_server.url) as (a, _b):
        a.subscribe(on_a)
        await redis_server.stop()
        with caplog.at_level(logging.WARNING, logger="datapulse.cluster.bus"), anyio.fail_after(WAIT_S):
            await a.publish(event)
            await a.publish(event)
        assert on_a.events == [event, event]
    published_warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "PUBLISH" in r.getMessage()]
    assert len(published_warnings) == 1  # once per outage, not once per event
    assert published_warnings[0].exc_info is None


async def test_publish_to_a_redis_that_never_answers_returns_within_the_clients_socket_timeout() -> None:
    async def hold_open(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    on_a = Recorder()
    event = ResourceUpdated("file:///silent")
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hold_open)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        url = f"redis://127.0.0.1:{port}/0"
        # Retrying timeouts 3 times, the client alone would take 4 x 0.3 s.
        retry, on = Retry(NoBackoff(), 3), [RedisTimeoutError]
        redis = Redis.from_url(url, socket_timeout=0.3, socket_connect_timeout=0.3, retry=retry, retry_on_error=on)
        a = RedisSubscriptionBus(redis, CHANNEL, "node-a")
        a.subscribe(on_a)
        try:
            with anyio.fail_after(0.3 + 0.6):
                await a.publish(event)
        finally:
            await redis.aclose()
            tg.cancel_scope.cancel()
    assert on_a.events == [event]


async def test_the_readers_resubscribe_by_themselves_after_redis_restarts(redis_server: RedisServer) -> None:
    lost = ResourceUpdated("lost:during-outage")
    on_b = Recorder()
    gaps: list[str] = []
    async with two_nodes(redis_server.url) as (a, b):
        b.subscribe(on_b)
        b.on_gap = lambda: gaps.append("b")
        await redis_server.stop()
        await a.publish(lost)
        await redis_server.start()

        await publish_until_received(a, b)
        await publish_until_received(b, a)
        assert a.connected
        assert b.connected
    assert on_b.events
    assert lost not in on_b.events  # at-most-once: no replay after the restart
    assert gaps[:1] == ["b"], "the reader told its owner it missed events, so listen streams end (clients re-listen)"


async def test_a_node_whose_publish_failed_while_redis_was_frozen_tells_the_others_they_missed_it(
    redis_server: RedisServer,
) -> None:
    """A frozen Redis (SIGSTOP) breaks no subscription, so no reader notices; the node whose PUBLISH timed out
    publishes a gap notice once Redis answers, and each other node's ``on_gap`` runs (its listen streams end)."""
    gaps: list[str] = []
    told = anyio.Event()

    def gap_on_b() -> None:
        gaps.append("b")
        told.set()

    async with two_nodes(redis_server.url) as (a, b):
        a.on_gap = lambda: gaps.append("a")
        b.on_gap = gap_on_b
        redis_server.pause()
        try:
            await a.publish(ResourceUpdated("lost:frozen"))  # times out after the client's socket timeout (1 s)
        finally:
            redis_server.resume()
        with anyio.fail_after(WAIT_S):
            await told.wait()
        await publish_until_received(b, a)  # a's reader is fine, and a's own notice never came back to it
        assert gaps == ["b"]


async def test_the_readers_recover_when_redis_drops_their_connections(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    raw = client(redis_server.url)
    try:
        async with two_nodes(redis_server.url) as (a, b):
            gaps: list[str] = []
            a.on_gap = lambda: gaps.append("a")
            b.on_gap = lambda: gaps.append("b")
            with caplog.at_level(logging.WARNING, logger="datapulse.cluster.bus"):
                assert await raw.client_kill_filter(_type="pubsub") == 2
                await publish_until_received(a, b)
                await publish_until_received(b, a)
            assert a.connected
            assert b.connected
            assert sorted(set(gaps)) == ["a", "b"], "each reader reported its gap"
    finally:
        await raw.aclose()
    assert "bus: reader lost" in caplog.text or "bus: reader reconnected" in caplog.text


async def test_a_garbage_message_on_the_channel_is_skipped_without_killing_the_reader(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = [
        b"\xff\xfe not json",
        b"[1, 2]",
        b'{"n": "node-x"}',
        b'{"n": "node-x", "m": "notifications/unknown", "p": {}}',
        b'{"n": "node-x", "m": "notifications/resources/updated", "p": {"uri": 5}}',
        b'{"n": 7, "m": "notifications/tools/list_changed", "p": {}}',
    ]
    on_a, on_b = Recorder(), Recorder()
    event, marker = ResourceUpdated("file:///after-garbage"), ResourceUpdated("m:b")
    raw = client(redis_server.url)
    try:
        async with two_nodes(redis_server.url) as (a, b):
            b.subscribe(on_b)
            with caplog.at_level(logging.WARNING, logger="datapulse.cluster.bus"):
                for payload in garbage:
                    await raw.publish(CHANNEL, payload)
                await a.publish(event)
                assert await on_b.wait_for(1) == [event]
                a.subscribe(on_a)
                await b.publish(marker)  # once A has it, A's reader is past the garbage too
                assert await on_a.wait_for(1) == [marker]
            assert a.connected
            assert b.connected
    finally:
        await raw.aclose()
    assert on_b.events == [event, marker]
    skipped = [r for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(skipped) == 2 * len(garbage)  # both readers skipped each one
