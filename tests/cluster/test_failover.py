"""Instances and Redis fail for real: ``kill -9`` of a session's owner, and a Redis restart under load.

Instances run with a 1 s heartbeat TTL, so a killed owner is declared dead about a second later; until
then its sessions answer 503 with ``Retry-After`` (a clear, retryable error), and the tests retry.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx2
import pytest

from datapulse.cluster.store import Keys, connect
from datapulse.transports._sse_codec import SseEvent
from tests.support.cluster import spawn_cluster
from tests.support.mcp_http import initialize_request, legacy_call, legacy_initialize
from tests.support.polling import eventually
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerProcess, bearer
from tests.support.sse import open_sse

pytestmark = pytest.mark.anyio

FAST_FAILOVER = ["--node-heartbeat-ttl-s", "1", "--redis-timeout-s", "1", "--forward-timeout-s", "2"]
RECOVERY_TIMEOUT_S = 20.0


def client(process: ServerProcess) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=process.url, headers=bearer(), timeout=10.0)


async def until_not_503(attempt: Callable[[], Awaitable[httpx2.Response]]) -> httpx2.Response:
    """Repeat ``attempt`` while it answers 503 (each 503 must say when to retry); bounded."""
    with anyio.fail_after(RECOVERY_TIMEOUT_S):
        while True:
            response = await attempt()
            if response.status_code != 503:
                return response
            assert response.headers.get("retry-after"), response.text
            await anyio.sleep(0.1)


async def kill(process: ServerProcess) -> None:
    process.process.kill()
    with anyio.fail_after(10):
        await process.process.wait()


async def _at_least(value: Awaitable[int], minimum: int) -> bool:
    return await value >= minimum


def echo(message: str) -> dict[str, Any]:
    return {"name": "echo", "arguments": {"message": message}}


async def test_a_2025_session_goes_on_on_another_instance_after_its_owner_is_killed(
    redis_server: RedisServer,
) -> None:
    async with (
        spawn_cluster(redis_server.url, n=2, args=FAST_FAILOVER) as (owner, other),
        client(owner) as at_owner,
        client(other) as elsewhere,
    ):
        session_id = await legacy_initialize(at_owner)
        forwarded = await legacy_call(elsewhere, session_id, "tools/call", echo("before"))
        assert forwarded.json()["result"]["structuredContent"] == {"result": "before"}

        await kill(owner)

        taken_over = await until_not_503(
            lambda: legacy_call(elsewhere, session_id, "tools/call", echo("after"), request_id=2)
        )
        assert taken_over.status_code == 200, taken_over.text
        assert taken_over.headers["mcp-session-id"] == session_id
        assert taken_over.json() == {
            "jsonrpc": "2.0",
            "id": 2,
            "result": {
                "content": [{"type": "text", "text": "after"}],
                "structuredContent": {"result": "after"},
                "isError": False,
            },
        }
        health = (await elsewhere.get("/health")).json()
        assert health["sessions"]["streamable_http"] == 1
        assert (await elsewhere.delete("/mcp", headers={"Mcp-Session-Id": session_id})).status_code == 200


def api_call(request_id: str, message: str) -> dict[str, Any]:
    return {"type": "call_tool", "request_id": request_id, "data": {"name": "echo", "message": message}}


def result_of(event: SseEvent) -> tuple[str, str]:
    payload = json.loads(event.data)
    assert payload["type"] == "tool_result", payload
    return payload["request_id"], payload["data"]["result"]


async def test_a_datapulse_api_client_gets_every_result_exactly_once_in_order_after_its_owner_is_killed(
    redis_server: RedisServer,
) -> None:
    session = "failover-api"
    events_url = f"/events?session_id={session}"
    message_url = f"/message?session_id={session}"
    store = connect(redis_server.url, 2.0)
    async with (
        spawn_cluster(redis_server.url, n=2, args=FAST_FAILOVER) as (owner, other),
        client(owner) as at_owner,
        client(other) as elsewhere,
    ):
        async with open_sse(at_owner, "GET", events_url) as stream:
            assert (await stream.next_event()).retry_ms is not None
            for n in (1, 2):
                posted = await elsewhere.post(message_url, json=api_call(f"r{n}", f"m{n}"))
                assert posted.status_code == 202, posted.text
            seen = [await stream.next_event() for _ in range(2)]
        assert [result_of(event) for event in seen] == [("r1", "m1"), ("r2", "m2")]
        last_seen = seen[-1].event_id
        assert last_seen is not None

        # The client is away: these results are produced on the owner and wait for a stream.
        for n in (3, 4):
            posted = await elsewhere.post(message_url, json=api_call(f"r{n}", f"m{n}"))
            assert posted.status_code == 202, posted.text
        journal = Keys("dp").events(session)
        await eventually(lambda: _at_least(store.xlen(journal), 4))

        await kill(owner)

        def reconnect() -> Any:
            return open_sse(elsewhere, "GET", events_url, headers={"Last-Event-ID": last_seen})

        with anyio.fail_after(RECOVERY_TIMEOUT_S):
            while True:
                probe = await elsewhere.get(events_url, headers={"Accept": "application/json"})
                if probe.status_code != 503:
                    break
                await anyio.sleep(0.1)
        async with reconnect() as resumed:
            assert (await resumed.next_event()).retry_ms is not None
            replayed = [await resumed.next_event() for _ in range(2)]
            assert [result_of(event) for event in replayed] == [("r3", "m3"), ("r4", "m4")]
            posted = await elsewhere.post(message_url, json=api_call("r5", "m5"))
            assert posted.status_code == 202, posted.text
            live = await resumed.next_event()
        assert result_of(live) == ("r5", "m5")
        ids = [last_seen, *(event.event_id for event in replayed), live.event_id]
        key = last_seen.rpartition(".")[0]
        assert ids == [f"{key}.{n}" for n in (2, 3, 4, 5)], "one stream, ids in order, none repeated"
    await store.aclose()


async def _lease_lapsed(http: httpx2.AsyncClient) -> bool:
    return bool((await http.get("/health")).json()["cluster"] == {"lease_held": False})


async def test_requests_fail_clearly_while_redis_is_down_and_the_cluster_recovers_by_itself(
    redis_server: RedisServer,
) -> None:
    async with (
        spawn_cluster(redis_server.url, n=2, args=FAST_FAILOVER) as (owner, other),
        client(owner) as at_owner,
        client(other) as elsewhere,
    ):
        session_id = await legacy_initialize(at_owner)
        assert (await legacy_call(elsewhere, session_id, "tools/call", echo("up"))).status_code == 200

        await redis_server.stop()
        with anyio.fail_after(10):
            down = await legacy_call(elsewhere, session_id, "tools/call", echo("down"))
            opening = await elsewhere.post(
                "/mcp",
                content=initialize_request(),
                headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream"},
            )
        # With a 1 s heartbeat TTL the owner's lease on its sessions runs out at once: past it, the owner cannot
        # know that no other instance took the session over, so it refuses too rather than serve a stale copy.
        await eventually(lambda: _lease_lapsed(at_owner))
        with anyio.fail_after(10):
            local = await legacy_call(at_owner, session_id, "tools/call", echo("local"))
        for refused in (down, opening, local):
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"]
            assert "Redis" in refused.json()["error"]["message"]

        await redis_server.start()
        # The restarted Redis is empty; the owner writes its sessions back on its next heartbeat.
        store = connect(redis_server.url, 2.0)
        await eventually(lambda: _at_least(store.exists(Keys("dp").session(session_id)), 1))
        await store.aclose()
        recovered = await until_not_503(
            lambda: legacy_call(elsewhere, session_id, "tools/call", echo("again"), request_id=3)
        )
        assert recovered.status_code == 200, recovered.text
        assert recovered.json()["result"]["structuredContent"] == {"result": "again"}
        fresh = await legacy_initialize(elsewhere)
        assert (await legacy_call(at_owner, fresh, "tools/call", echo("new"))).status_code == 200
