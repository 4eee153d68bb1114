"""Watching a session held by another instance of a cluster: the watch is forwarded to the session's owner."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest

from tests.support.cluster import spawn_cluster
from tests.support.redis_server import RedisServer
from tests.support.servers import ALICE_TOKEN, BOB_TOKEN, TOKEN, ServerProcess, bearer
from tests.support.sse import open_sse, watch_frames

pytestmark = pytest.mark.anyio

APP = ["tests.support.apps:BEHAVIOUR_APP"]


@pytest.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    async with spawn_cluster(redis_server.url, n=2, args=APP) as (first, second):
        yield first, second


def as_(token: str, process: ServerProcess) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=process.url, headers=bearer(token), timeout=10.0)


async def test_a_session_on_one_instance_is_watched_through_another(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    owner, other = pair
    async with as_(ALICE_TOKEN, owner) as at_owner, as_(ALICE_TOKEN, other) as elsewhere:
        opened = await at_owner.post(
            "/message?session_id=watched-elsewhere", json={"type": "list_tools", "request_id": "r1", "data": {}}
        )
        assert opened.status_code == 202
        async with open_sse(elsewhere, "GET", "/dashboard/api/watch?session_id=watched-elsewhere") as watch:
            assert watch.response.status_code == 200
            call = {"type": "call_tool", "request_id": "r2", "data": {"name": "echo", "arguments": {"message": "hi"}}}
            assert (await at_owner.post("/message?session_id=watched-elsewhere", json=call)).status_code == 202
            inbound, outbound = await watch_frames(watch, 2)
    assert (inbound["dir"], inbound["kind"], inbound["method"], inbound["id"]) == ("in", "request", "call_tool", "r2")
    assert inbound["message"] == call
    assert (outbound["dir"], outbound["kind"], outbound["id"]) == ("out", "response", "r2")
    assert outbound["message"]["type"] == "tool_result"
    assert outbound["elapsed_ms"] is not None


async def test_another_principal_cannot_watch_a_session_through_any_instance(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    owner, other = pair
    async with as_(ALICE_TOKEN, owner) as alice, as_(BOB_TOKEN, owner) as bob_at_owner, as_(BOB_TOKEN, other) as bob:
        opened = await alice.post(
            "/message?session_id=alices-watched", json={"type": "list_tools", "request_id": "r1", "data": {}}
        )
        assert opened.status_code == 202
        for client in (bob_at_owner, bob):
            refused = await client.get(
                "/dashboard/api/watch?session_id=alices-watched", headers={"Accept": "text/event-stream"}
            )
            assert refused.status_code == 404


async def test_an_admin_watches_anothers_session_through_either_instance(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    owner, other = pair
    async with as_(ALICE_TOKEN, owner) as alice, as_(TOKEN, other) as admin:  # local: an admin by default
        opened = await alice.post(
            "/message?session_id=admin-watched", json={"type": "list_tools", "request_id": "r1", "data": {}}
        )
        assert opened.status_code == 202
        async with open_sse(admin, "GET", "/dashboard/api/watch?session_id=admin-watched") as watch:
            assert watch.response.status_code == 200
            call = {"type": "list_tools", "request_id": "r2", "data": {}}
            assert (await alice.post("/message?session_id=admin-watched", json=call)).status_code == 202
            inbound, outbound = await watch_frames(watch, 2)
    assert (inbound["dir"], inbound["id"], outbound["dir"], outbound["id"]) == ("in", "r2", "out", "r2")
