"""Fencing: an instance cut off from Redis while the rest of the cluster reaches it never serves a session another
instance took over (no split brain).

The owner's heartbeat is its lease on its sessions (`datapulse.cluster.node`). Cut off from Redis (a TCP relay the
test cuts: a partition between one instance and Redis), the owner stops serving its sessions once the lease runs out
(503 naming Redis: it cannot know whether another instance took them); the other instance takes them over once the
owner's heartbeat has expired. When the partition heals, the owner's first beat finds its heartbeat gone, checks
each session against the registry and lets go of those another instance owns: their streams end, their clients
reconnect (to either instance) and reach the new owner, with every result once and in order.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

import anyio
import httpx2
import pytest
from pydantic import SecretStr

from datapulse.cluster.node import ClusterNode
from datapulse.cluster.store import Keys, connect
from datapulse.config import Settings
from tests.support.cluster import cluster_env
from tests.support.mcp_http import legacy_call, legacy_initialize
from tests.support.polling import eventually
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerProcess, bearer, spawn_datapulse
from tests.support.sse import SseReader, open_sse
from tests.support.tcp_proxy import tcp_proxy

pytestmark = pytest.mark.anyio

ARGS = ["--node-heartbeat-ttl-s", "1", "--redis-timeout-s", "1", "--forward-timeout-s", "2"]
TIMEOUT_S = 20.0
KEYS = Keys("dp")


def client(process: ServerProcess) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=process.url, headers=bearer(), timeout=10.0)


def api_message(n: int) -> dict[str, Any]:
    return {"type": "call_tool", "request_id": f"r{n}", "data": {"name": "echo", "message": f"m{n}"}}


def echo(message: str) -> dict[str, Any]:
    return {"name": "echo", "arguments": {"message": message}}


async def next_result(stream: SseReader) -> tuple[str, str | None]:
    """The request id and event id of the next result on a DataPulse API stream (skipping the retry: preamble)."""
    while True:
        event = await stream.next_event()
        if event.data:
            body = json.loads(event.data)
            assert body["type"] == "tool_result", body
            return str(body["request_id"]), event.event_id


async def lease_held(http: httpx2.AsyncClient) -> bool:
    return bool((await http.get("/health")).json()["cluster"]["lease_held"])


def assert_refused_naming_redis(response: httpx2.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"]
    assert "Redis" in response.json()["error"]["message"], response.text


async def test_an_instance_cut_off_from_redis_lets_go_of_the_sessions_another_instance_took_over(
    redis_server: RedisServer,
) -> None:
    session = "fenced-api-1"
    store = connect(redis_server.url, 2.0)
    async with (
        tcp_proxy(redis_server.port) as link,
        spawn_datapulse(ARGS, env=cluster_env(link.redis_url())) as owner,
        spawn_datapulse(ARGS, env=cluster_env(redis_server.url)) as other,
        client(owner) as at_owner,
        client(other) as elsewhere,
    ):
        owner_node = (await at_owner.get("/health")).json()["node_id"]
        other_node = (await elsewhere.get("/health")).json()["node_id"]
        legacy = await legacy_initialize(at_owner)
        async with open_sse(at_owner, "GET", f"/events?session_id={session}") as stream:
            assert (await at_owner.post(f"/message?session_id={session}", json=api_message(1))).status_code == 202
            first, first_id = await next_result(stream)
            assert first == "r1"
            assert first_id is not None

            link.cut()  # the owner no longer reaches Redis; the other instance still does
            await eventually(lambda: _not(lease_held(at_owner)))
            assert_refused_naming_redis(await at_owner.post(f"/message?session_id={session}", json=api_message(2)))
            assert_refused_naming_redis(await legacy_call(at_owner, legacy, "tools/call", echo("stale")))

            await eventually(lambda: _gone(store, KEYS.node_alive(owner_node)))
            taken = await elsewhere.post(f"/message?session_id={session}", json=api_message(3))
            assert taken.status_code == 202, taken.text
            moved = await legacy_call(elsewhere, legacy, "tools/call", echo("moved"), request_id=2)
            assert moved.status_code == 200, moved.text
            for session_id in (session, legacy):
                assert await store.hget(KEYS.session(session_id), "owner") == other_node.encode()

            link.heal()
            await eventually(lambda: lease_held(at_owner))
            with pytest.raises(EOFError):  # let go: the owner's copy ended its stream
                await next_result(stream)
        health = (await at_owner.get("/health")).json()
        assert set(health["sessions"].values()) == {0}, health
        await eventually(lambda: _ready(at_owner))  # its channel resubscribed: forwarding works both ways

        # Back through the old owner's instance: forwarded to the new owner, nothing lost, repeated or reordered.
        assert (await at_owner.post(f"/message?session_id={session}", json=api_message(4))).status_code == 202
        resume = {"Last-Event-ID": first_id}
        async with open_sse(at_owner, "GET", f"/events?session_id={session}", headers=resume) as again:
            assert again.response.status_code == 200
            assert [(await next_result(again))[0] for _ in range(2)] == ["r3", "r4"]
        forwarded = await legacy_call(at_owner, legacy, "tools/call", echo("back"), request_id=3)
        assert forwarded.status_code == 200, forwarded.text
        assert forwarded.json()["result"]["structuredContent"] == {"result": "back"}
    await store.aclose()


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


async def _gone(store: Any, key: str) -> bool:
    return not await store.exists(key)


async def _ready(http: httpx2.AsyncClient) -> bool:
    return (await http.get("/ready")).status_code == 200


async def test_after_redis_froze_longer_than_the_heartbeat_ttl_no_session_moves_between_live_instances(
    redis_server: RedisServer,
) -> None:
    """A frozen Redis expires every heartbeat at once. The instance the next request reaches must not take the
    session of a live owner over (see the next test for the rule that guarantees it), so the session stays where
    it is and its stream stays open."""
    session = "frozen-api-1"
    store = connect(redis_server.url, 2.0)
    async with (
        spawn_datapulse(ARGS, env=cluster_env(redis_server.url)) as owner,
        spawn_datapulse(ARGS, env=cluster_env(redis_server.url)) as other,
        client(owner) as at_owner,
        client(other) as elsewhere,
    ):
        owner_node = (await at_owner.get("/health")).json()["node_id"]
        async with open_sse(at_owner, "GET", f"/events?session_id={session}") as stream:
            assert (await elsewhere.post(f"/message?session_id={session}", json=api_message(1))).status_code == 202
            assert (await next_result(stream))[0] == "r1"

            redis_server.pause()
            try:
                await eventually(lambda: _not(lease_held(at_owner)))
                await eventually(lambda: _not(lease_held(elsewhere)))
            finally:
                redis_server.resume()

            async def accepted_elsewhere() -> bool:
                response = await elsewhere.post(f"/message?session_id={session}", json=api_message(2))
                assert response.status_code in (202, 503), response.text
                return response.status_code == 202

            await eventually(accepted_elsewhere)
            assert (await next_result(stream))[0] == "r2", "the same stream, on the same owner"
            assert await store.hget(KEYS.session(session), "owner") == owner_node.encode()
    await store.aclose()


async def test_an_instance_takes_no_session_over_until_one_ttl_after_its_own_beats_work_again(
    redis_server: RedisServer,
) -> None:
    """`ClusterNode.may_take_over`: only with its own lease, and not within one heartbeat TTL plus two Redis
    timeouts after its beats failed, by when every live owner has beaten again."""
    settings = Settings(redis_url=SecretStr(redis_server.url), node_heartbeat_ttl_s=1, redis_timeout_s=1)
    node = ClusterNode(settings, "fence-test-node")
    async with anyio.create_task_group() as tasks:
        await tasks.start(node.run)
        await eventually(lambda: _now(node.holds_lease()))
        assert node.may_take_over()
        await redis_server.stop()
        await eventually(lambda: _now(not node.holds_lease()))
        assert not node.may_take_over(), "no lease, no take-over"
        await redis_server.start()
        await eventually(lambda: _now(node.holds_lease()))
        assert not node.may_take_over(), "its beats failed: a grace period first"
        await eventually(lambda: _now(node.may_take_over()))
        tasks.cancel_scope.cancel()
    await node.leave()


async def _now(value: bool) -> bool:
    return value
