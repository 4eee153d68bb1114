"""What forwarding keeps: the caller's identity, principal binding, server-to-client requests and their
answers, and change notifications — each crossing from one instance to another."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CreateMessageRequestParams, CreateMessageResult, TextContent

from tests.support.cluster import cluster_behind_proxy, spawn_cluster
from tests.support.mcp_http import legacy_call, legacy_headers, legacy_initialize, modern_call
from tests.support.redis_server import RedisServer
from tests.support.servers import ALICE_TOKEN, BOB_TOKEN, ServerProcess, bearer
from tests.support.sse import open_sse

pytestmark = pytest.mark.anyio

APP = ["tests.support.apps:BEHAVIOUR_APP"]


@pytest.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    async with spawn_cluster(redis_server.url, n=2, args=APP) as (first, second):
        yield first, second


def as_(token: str, process: ServerProcess) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=process.url, headers=bearer(token), timeout=10.0)


def tool_text(response: httpx2.Response) -> str:
    result = response.json()["result"]
    text: str = result["content"][0]["text"]
    return text


async def test_a_forwarded_call_runs_as_the_caller(pair: tuple[ServerProcess, ServerProcess]) -> None:
    owner, other = pair
    async with as_(ALICE_TOKEN, owner) as at_owner, as_(ALICE_TOKEN, other) as elsewhere:
        session_id = await legacy_initialize(at_owner)
        forwarded = await legacy_call(elsewhere, session_id, "tools/call", {"name": "whoami", "arguments": {}})
        assert tool_text(forwarded) == "alice"


async def test_another_principal_gets_404_for_a_session_on_every_instance_and_transport(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    owner, other = pair
    async with (
        as_(ALICE_TOKEN, owner) as alice,
        as_(BOB_TOKEN, owner) as bob_at_owner,
        as_(BOB_TOKEN, other) as bob_elsewhere,
    ):
        session_id = await legacy_initialize(alice)
        api_session = "alices-api-session"
        opened = await alice.post(
            f"/message?session_id={api_session}", json={"type": "list_tools", "request_id": "a", "data": {}}
        )
        assert opened.status_code == 202, "alice's first message opens her DataPulse API session"
        async with open_sse(alice, "GET", "/sse") as stream:
            endpoint = (await stream.next_event()).data
            for bob in (bob_at_owner, bob_elsewhere):
                call = await legacy_call(bob, session_id, "tools/call", {"name": "whoami", "arguments": {}})
                assert call.status_code == 404, call.text
                get = await bob.get("/mcp", headers=legacy_headers(session_id, accept="text/event-stream"))
                assert get.status_code == 404
                assert (await bob.delete("/mcp", headers={"Mcp-Session-Id": session_id})).status_code == 404
                post = await bob.post(endpoint, content="{}", headers={"Content-Type": "application/json"})
                assert post.status_code == 404, post.text
                message = {"type": "list_tools", "request_id": "x", "data": {}}
                api = await bob.post(f"/message?session_id={api_session}", json=message)
                assert api.status_code == 404, api.text
        assert tool_text(await legacy_call(alice, session_id, "tools/call", {"name": "whoami", "arguments": {}})) == (
            "alice"
        )


async def _answer(context: ClientRequestContext, params: CreateMessageRequestParams) -> CreateMessageResult:
    question = params.messages[0].content
    text = question.text if isinstance(question, TextContent) else "?"
    return CreateMessageResult(role="assistant", content=TextContent(type="text", text=f"answer to {text}"), model="t")


async def test_a_sampling_request_and_the_clients_answer_cross_instances(redis_server: RedisServer) -> None:
    async with (
        cluster_behind_proxy(redis_server.url, n=2, args=APP) as (_, proxy),
        httpx2.AsyncClient(headers=bearer(ALICE_TOKEN), timeout=10) as http,
        Client(
            streamable_http_client(f"{proxy.url}/mcp", http_client=http), mode="legacy", sampling_callback=_answer
        ) as client,
    ):
        with anyio.fail_after(30):
            for question in ("one", "two", "three"):
                result = await client.call_tool("ask_model", {"question": question})
                block = result.content[0]
                assert isinstance(block, TextContent)
                assert block.text == f"answer to {question}"


async def test_a_list_change_published_on_one_instance_reaches_sessions_on_another(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    owner, other = pair
    async with as_(ALICE_TOKEN, owner) as at_owner, as_(ALICE_TOKEN, other) as elsewhere:
        session_id = await legacy_initialize(at_owner)
        headers = legacy_headers(session_id, accept="text/event-stream")
        async with open_sse(at_owner, "GET", "/mcp", headers=headers) as stream:
            await stream.next_event()  # priming event
            published = await modern_call(elsewhere, "tools/call", {"name": "publish_tools_changed", "arguments": {}})
            assert published.status_code == 200, published.text
            event = await stream.next_event()
        message: dict[str, Any] = json.loads(event.data)
        assert message["method"] == "notifications/tools/list_changed"
