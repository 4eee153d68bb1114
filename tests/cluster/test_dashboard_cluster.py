"""The dashboard in cluster mode: two `datapulse serve` processes sharing one real redis-server. A dashboard ticket
issued by one instance works on the other; the sessions and figures views answer for the whole cluster (each
instance filtering by the caller's principal), naming an instance that cannot answer."""

from __future__ import annotations

import signal

import httpx2
import pytest

from tests.support.cluster import spawn_cluster
from tests.support.redis_server import RedisServer
from tests.support.servers import ALICE_TOKEN, BOB_TOKEN, TOKEN, ServerProcess, bearer

pytestmark = pytest.mark.anyio


def client(process: ServerProcess, token: str) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=process.url, headers=bearer(token), timeout=10.0)


async def open_api_session(process: ServerProcess, token: str, session_id: str) -> None:
    async with client(process, token) as http:
        answer = await http.post(
            f"/message?session_id={session_id}",
            json={"type": "call_tool", "request_id": "r1", "data": {"name": "echo", "arguments": {"message": "x"}}},
        )
    assert answer.status_code == 202, answer.text


async def test_the_dashboard_answers_for_every_instance_of_the_cluster(redis_server: RedisServer) -> None:
    async with spawn_cluster(redis_server.url, n=2) as (first, second):
        await open_api_session(first, ALICE_TOKEN, "alice-on-first")
        await open_api_session(second, ALICE_TOKEN, "alice-on-second")
        await open_api_session(second, BOB_TOKEN, "bob-on-second")
        async with client(first, ALICE_TOKEN) as http:
            ticket = (await http.post("/dashboard/api/sign-in")).json()["ticket"]
        async with client(second, ticket) as http:  # issued by the first, accepted by the second
            overview = (await http.get("/dashboard/api/overview")).json()
            alice_sessions = (await http.get("/dashboard/api/sessions")).json()
            stats = (await http.get("/dashboard/api/stats")).json()
        async with client(first, TOKEN) as http:
            admin_sessions = (await http.get("/dashboard/api/sessions")).json()
    assert overview["cluster"] is True
    assert len(overview["nodes"]) == 2
    assert overview["node_id"] in overview["nodes"]
    rows = {row["session_id"]: row for row in alice_sessions["sessions"]}
    assert set(rows) == {"alice-on-first", "alice-on-second"}
    assert rows["alice-on-first"]["node_id"] != rows["alice-on-second"]["node_id"]
    assert alice_sessions["nodes_unreachable"] == []
    assert {row["session_id"] for row in admin_sessions["sessions"]} == {
        "alice-on-first",
        "alice-on-second",
        "bob-on-second",
    }
    echo = next(tool for tool in stats["tools"] if tool["name"] == "echo")
    assert echo["calls"] == 3  # one call on the first instance, two on the second


async def test_an_instance_that_does_not_answer_is_named_not_hidden(redis_server: RedisServer) -> None:
    async with spawn_cluster(redis_server.url, n=2) as (first, second):
        await open_api_session(first, ALICE_TOKEN, "alice-on-first")
        second.process.send_signal(signal.SIGSTOP)  # alive in Redis for its heartbeat TTL, but answering nothing
        try:
            async with client(first, ALICE_TOKEN) as http:
                answer = (await http.get("/dashboard/api/sessions")).json()
        finally:
            second.process.send_signal(signal.SIGCONT)
    assert [row["session_id"] for row in answer["sessions"]] == ["alice-on-first"]
    assert len(answer["nodes_unreachable"]) == 1
