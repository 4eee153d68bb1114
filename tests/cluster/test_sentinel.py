"""Redis behind Sentinel: ``kill -9`` of the master while two instances serve a workload.

A real deployment (`tests.support.sentinel`: master, replica, three sentinels, quorum 2, down after 1 s) and two
``datapulse serve`` processes on its ``redis+sentinel://`` URL. While a DataPulse API client posts ``call_tool``
echo messages one after another to both instances (its event stream open on the session's owner) and a 2025
client calls tools on both, the master is killed. Every request answers within its client timeout: 200/202, or a
503 with ``Retry-After``; never a 500, and no request hangs: the other instance keeps forwarding to the owner
throughout, also while their channel readers resubscribe. Once the sentinels promote the replica, both instances
reach it by
themselves (no restart): ``/ready`` is 200 again, new sessions open, and every message accepted after the
recovery reaches the open stream once, in order. Rate limits and the audit stream live on the new master.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import anyio
import httpx2
import pytest
import redis.asyncio as aioredis

from datapulse.cluster.redis_api import xrange_entries
from datapulse.cluster.store import Keys
from tests.support.cluster import spawn_cluster
from tests.support.mcp_http import legacy_call, legacy_initialize
from tests.support.polling import eventually
from tests.support.sentinel import SentinelDeployment, run_sentinel
from tests.support.servers import ServerProcess, bearer
from tests.support.sse import SseReader, open_sse

pytestmark = pytest.mark.anyio

HEARTBEAT_TTL_S = 10
"""Longer than the failover (about 2-3 s here): a heartbeat written just before the kill is still on the promoted
replica afterwards, so no instance mistakes the other for dead (see the README's Sentinel section)."""
ARGS = [
    "--node-heartbeat-ttl-s",
    str(HEARTBEAT_TTL_S),
    "--redis-timeout-s",
    "1",
    "--forward-timeout-s",
    "2",
    "--keepalive-interval-s",
    "2",
]
ENV = {"DATAPULSE_AUDIT_SINKS": "redis", "DATAPULSE_TOOL_RATE_LIMITS": "add=3/minute"}
REQUEST_TIMEOUT_S = 10.0
"""Each request's bound (the httpx client timeout): a request that hangs longer fails the test."""
FAILOVER_TIMEOUT_S = 30.0
RECOVERY_TIMEOUT_S = 20.0
MESSAGES_AFTER_RECOVERY = 10
OWNER_RECONNECTING = (
    "Service Unavailable: the instance holding this session is reconnecting to the cluster; retry shortly"
)
"""The one 503 that does not name Redis: a request forwarded to the session's owner while the owner's channel reader
is still resubscribing (its backoff reaches 2 s), just after the promotion."""


def client(process: ServerProcess) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=process.url, headers=bearer(), timeout=REQUEST_TIMEOUT_S)


@dataclass
class Outcomes:
    """What the workload saw: status codes, and every 503's Retry-After and message."""

    statuses: dict[int, int] = field(default_factory=dict)
    unavailable: set[str] = field(default_factory=set)

    def record(self, response: httpx2.Response) -> httpx2.Response:
        status = response.status_code
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == 503:
            assert response.headers.get("retry-after"), response.text
            message = error_message(response)
            assert "Redis" in message or message == OWNER_RECONNECTING, message
            self.unavailable.add(message)
        return response


def error_message(response: httpx2.Response) -> str:
    """The message of a JSON error body (JSON-RPC ``error.message``, or the API's ``error``), for assertions."""
    body = response.json()
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("message"))
    return str(error if error is not None else body)


def api_message(n: int) -> dict[str, Any]:
    return {"type": "call_tool", "request_id": f"r{n}", "data": {"name": "echo", "message": f"m{n}"}}


async def read_results(stream: SseReader, into: list[tuple[int, int]]) -> None:
    """Append ``(message number, event seq)`` for every result on ``stream`` until cancelled."""
    while True:
        event = await stream.next_event(timeout_s=3600)  # ended by cancellation; keepalives are comments
        if not event.data:
            continue  # the retry: preamble
        body = json.loads(event.data)
        assert body["type"] == "tool_result", body
        n = int(body["request_id"][1:])
        assert body["data"] == {"result": f"m{n}"}, body
        assert event.event_id is not None
        into.append((n, int(event.event_id.rsplit(".", 1)[1])))


async def ready(http: httpx2.AsyncClient, outcomes: Outcomes) -> bool:
    response = outcomes.record(await http.get("/ready"))
    if response.status_code == 503:
        assert any("Redis" in problem for problem in response.json()["problems"]), response.text
    return response.status_code == 200


async def master_client(sentinel: SentinelDeployment) -> aioredis.Redis:
    return aioredis.Redis(host="127.0.0.1", port=await sentinel.master_port(), socket_timeout=2)


async def test_a_sentinel_failover_under_load_gives_clear_errors_then_both_instances_serve_again_by_themselves(
    tmp_path: Path,
) -> None:
    outcomes = Outcomes()
    session = f"sentinel-{secrets.token_hex(6)}"
    message_url = f"/message?session_id={session}"
    results: list[tuple[int, int]] = []
    accepted: list[int] = []  # message numbers answered 202, in posting order
    posted = 0

    async def post(http: httpx2.AsyncClient) -> httpx2.Response:
        nonlocal posted
        posted += 1
        response = outcomes.record(await http.post(message_url, json=api_message(posted)))
        assert response.status_code in (202, 503), response.text
        if response.status_code == 202:
            accepted.append(posted)
        return response

    async with (
        run_sentinel(tmp_path) as sentinel,
        spawn_cluster(sentinel.url, n=2, args=ARGS, env=ENV) as (owner, other),
        client(owner) as at_owner,
        client(other) as elsewhere,
    ):
        instances = (at_owner, elsewhere)
        legacy = await legacy_initialize(at_owner)
        async with (
            open_sse(at_owner, "GET", f"/events?session_id={session}") as stream,
            anyio.create_task_group() as tg,
        ):
            assert stream.response.status_code == 200
            tg.start_soon(read_results, stream, results)
            for n in range(4):
                assert (await post(instances[n % 2])).status_code == 202
            old_master = sentinel.master.port
            node_ids = [(await http.get("/health")).json()["node_id"] for http in instances]

            await sentinel.master.kill()

            # The workload goes on through the failover: API messages and 2025 calls, served by the owner and
            # forwarded from the other instance, also while their channels resubscribe on the new master.
            with anyio.fail_after(FAILOVER_TIMEOUT_S):
                n = 0
                while True:
                    ports = await sentinel.master_ports()
                    if old_master not in ports and await _both_ready(instances, outcomes):
                        break
                    for http in instances:
                        await post(http)
                        call = await legacy_call(http, legacy, "tools/call", echo(f"f{n}"), request_id=n)
                        assert outcomes.record(call).status_code in (200, 503), call.text
                        n += 1
            promoted = await sentinel.wait_for_promotion(old_master, FAILOVER_TIMEOUT_S)
            assert promoted is sentinel.replica
            assert 503 in outcomes.statuses, "the workload saw the outage"
            store = await master_client(sentinel)
            try:  # every pub/sub reader resubscribed on the promoted master: the bus and each instance's channel
                channels = [Keys("dp").bus_channel, *(Keys("dp").node_channel(node_id) for node_id in node_ids)]
                await eventually(lambda: _subscribers_are(store, channels, [2, 1, 1]), RECOVERY_TIMEOUT_S)
            finally:
                await store.aclose()

            # Recovered: every message posted from now on, to either instance, is accepted and delivered.
            first_after = posted + 1
            for n in range(MESSAGES_AFTER_RECOVERY):
                response = await post(instances[n % 2])
                assert response.status_code == 202, response.text
            after = [number for number in accepted if number >= first_after]
            assert after == list(range(first_after, posted + 1))
            await eventually(lambda: _holds(set(after) <= {number for number, _ in results}), RECOVERY_TIMEOUT_S)
            tg.cancel_scope.cancel()

        numbers = [number for number, _ in results]
        seqs = [seq for _, seq in results]
        assert numbers == sorted(set(numbers)), f"in posting order, each once: {numbers}"
        assert seqs == sorted(set(seqs)), f"event ids in order, none repeated: {seqs}"
        assert set(accepted) <= set(numbers), f"every accepted message was delivered: {accepted} vs {numbers}"
        assert set(numbers) <= set(range(1, posted + 1))

        for http in instances:  # new sessions on both instances, each used from the other one
            fresh = await legacy_initialize(http)
            answer = await legacy_call(instances[1 - instances.index(http)], fresh, "tools/call", echo("new"))
            assert answer.status_code == 200, answer.text
            assert answer.json()["result"]["structuredContent"] == {"result": "new"}
        assert (await legacy_call(elsewhere, legacy, "tools/call", echo("old"), request_id=99)).status_code == 200

        # Rate-limit counts are shared through the new master: the fourth `add`, on either instance, is refused.
        calls = [await legacy_call(instances[n % 2], legacy, "tools/call", add(), request_id=100 + n) for n in range(4)]
        assert [call.status_code for call in calls] == [200] * 4
        assert [call.json().get("error", {}).get("code") for call in calls] == [None, None, None, -32000]
        assert "add" in calls[3].json()["error"]["message"]
        store = await master_client(sentinel)
        try:
            audit = await xrange_entries(store, "dp:audit")
            nodes = {json.loads(fields[b"record"])["node_id"] for _, fields in audit}
            assert len(nodes) == 2, "both instances write audit records to the promoted master"
            assert await store.exists(Keys("dp").session(session)) == 1
        finally:
            await store.aclose()
    assert 500 not in outcomes.statuses, outcomes
    assert set(outcomes.statuses) <= {200, 202, 503}, outcomes


def echo(message: str) -> dict[str, Any]:
    return {"name": "echo", "arguments": {"message": message}}


def add() -> dict[str, Any]:
    return {"name": "add", "arguments": {"a": 1, "b": 2}}


async def _subscribers_are(store: aioredis.Redis, channels: list[str], counts: list[int]) -> bool:
    numsub = cast(list[tuple[bytes, int]], await store.pubsub_numsub(*channels))
    return [count for _, count in numsub] == counts


async def _holds(value: bool) -> bool:
    return value


async def _both_ready(instances: tuple[httpx2.AsyncClient, ...], outcomes: Outcomes) -> bool:
    return all([await ready(http, outcomes) for http in instances])
