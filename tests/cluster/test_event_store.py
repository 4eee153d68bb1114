"""`RedisEventStore` honours the SDK's `EventStore` contract on a real redis-server."""

from __future__ import annotations

import pytest
from mcp.server.streamable_http import EventMessage, EventStore, StreamableHTTPServerTransport
from mcp_types import JSONRPCNotification, JSONRPCRequest

from datapulse.cluster.event_store import RedisEventStore
from datapulse.cluster.store import Keys, connect
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


def store_for(url: str, session_id: str) -> RedisEventStore:
    return RedisEventStore(connect(url, 2.0), Keys("test"), session_id, max_events=100, ttl_s=60)


def note(n: int) -> JSONRPCNotification:
    return JSONRPCNotification(jsonrpc="2.0", method="notifications/message", params={"n": n})


async def replay(store: EventStore, last_event_id: str) -> tuple[str | None, list[EventMessage]]:
    sent: list[EventMessage] = []

    async def collect(event: EventMessage) -> None:
        sent.append(event)

    return await store.replay_events_after(last_event_id, collect), sent


async def test_replay_sends_the_later_events_of_the_same_stream_in_order(redis_url: str) -> None:
    store = store_for(redis_url, "s1")
    priming = await store.store_event("1", None)
    first = await store.store_event("1", note(1))
    other = await store.store_event("_GET_stream", note(99))
    second = await store.store_event("1", note(2))
    request = JSONRPCRequest(jsonrpc="2.0", id=7, method="sampling/createMessage", params={})
    third = await store.store_event("1", request)
    assert len({priming, first, other, second, third}) == 5
    stream_id, sent = await replay(store, priming)
    assert stream_id == "1"
    assert [event.message for event in sent] == [note(1), note(2), request]
    assert [event.event_id for event in sent] == [first, second, third]
    assert await replay(store, other) == ("_GET_stream", [])


async def test_another_instance_replays_what_one_instance_stored(redis_url: str) -> None:
    first_id = await store_for(redis_url, "s1").store_event("1", note(1))
    await store_for(redis_url, "s1").store_event("1", note(2))
    stream_id, sent = await replay(store_for(redis_url, "s1"), first_id)
    assert (stream_id, [event.message for event in sent]) == ("1", [note(2)])


async def test_ids_from_another_session_unknown_or_malformed_ids_replay_nothing(redis_url: str) -> None:
    mine = store_for(redis_url, "mine")
    theirs = store_for(redis_url, "theirs")
    their_id = await theirs.store_event("1", note(1))
    await mine.store_event("1", note(2))
    for last_event_id in (their_id, "0-1~nope", "garbage", "", "not-an-id~" + their_id.rpartition("~")[2]):
        assert await replay(mine, last_event_id) == (None, [])


async def test_the_sdk_transport_accepts_the_store() -> None:
    store = RedisEventStore(connect("redis://127.0.0.1:1/0", 0.5), Keys("t"), "s", max_events=10, ttl_s=10)
    transport = StreamableHTTPServerTransport(mcp_session_id="s", event_store=store)
    assert transport is not None
