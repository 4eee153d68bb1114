"""Security state shared by the cluster through a real Redis: rate limits and stream tickets span instances."""

from __future__ import annotations

import httpx2
import pytest

from tests.support.cluster import spawn_cluster
from tests.support.mcp_http import jsonrpc, modern_call
from tests.support.redis_server import RedisServer
from tests.support.servers import ALICE_TOKEN, BOB_TOKEN, ServerProcess, bearer
from tests.support.sse import open_sse

pytestmark = pytest.mark.anyio


def as_(token: str | None, process: ServerProcess) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=process.url, headers=bearer(token) if token else {}, timeout=10.0)


async def test_a_principals_rate_limit_is_shared_by_two_instances(redis_server: RedisServer) -> None:
    async with spawn_cluster(redis_server.url, n=2, env={"DATAPULSE_RATE_LIMIT": "4/hour"}) as (first, second):
        async with as_(ALICE_TOKEN, first) as on_first, as_(ALICE_TOKEN, second) as on_second:
            statuses = [(await modern_call(client, "tools/list")).status_code for client in (on_first, on_second) * 2]
            assert statuses == [200, 200, 200, 200]
            for client in (on_first, on_second):  # the fifth request is refused wherever it lands
                refused = await modern_call(client, "tools/list")
                assert refused.status_code == 429
                assert 1 <= int(refused.headers["retry-after"]) <= 3600
        async with as_(BOB_TOKEN, second) as bob:
            assert (await modern_call(bob, "tools/list")).status_code == 200


async def test_a_stream_ticket_issued_on_one_instance_opens_a_stream_on_another_once(
    redis_server: RedisServer,
) -> None:
    async with spawn_cluster(redis_server.url, n=2) as (first, second):
        async with as_(ALICE_TOKEN, first) as alice:
            issued = await alice.post("/tickets")
            assert issued.status_code == 201
            ticket = issued.json()["ticket"]
        async with as_(None, second) as browser:
            async with open_sse(browser, "GET", f"/sse?ticket={ticket}") as stream:
                assert stream.response.status_code == 200
                messages_path = (await stream.next_event()).data
                async with as_(ALICE_TOKEN, first) as alice:  # the session is alice's, on every instance
                    posted = await alice.post(
                        messages_path, content=jsonrpc("ping"), headers={"Content-Type": "application/json"}
                    )
                    assert posted.status_code == 202
            again = await browser.get(f"/sse?ticket={ticket}", headers={"Accept": "text/event-stream"})
            assert again.status_code == 401
        async with as_(None, first) as browser:
            assert (
                await browser.get(f"/sse?ticket={ticket}", headers={"Accept": "text/event-stream"})
            ).status_code == 401
