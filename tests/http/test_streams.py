"""SSE stream behaviour: headers, keepalive, Last-Event-ID replay, waiting results, standalone and
server-to-client traffic, and session ends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CreateMessageRequestParams, CreateMessageResult, TextContent

from tests.support.apps import Gates, build_behaviour_server
from tests.support.mcp_http import jsonrpc, legacy_headers, legacy_initialize
from tests.support.servers import TOKEN, RunningServer, bearer, make_settings, serve_in_process
from tests.support.sse import SseReader, open_sse

pytestmark = pytest.mark.anyio

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def gates() -> Gates:
    return Gates()


@pytest.fixture
async def server(gates: Gates) -> AsyncIterator[RunningServer]:
    settings = make_settings(keepalive_interval_s=0.05, outbound_queue_max_messages=3)
    async with serve_in_process(settings, server=build_behaviour_server(gates)) as running:
        yield running


def api(message_type: str, request_id: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": message_type, "request_id": request_id, "data": data or {}}


async def test_every_stream_is_unbuffered_uncached_and_kept_alive(server: RunningServer) -> None:
    async with server.client() as client:
        session_id = await legacy_initialize(client)
        for path, headers in (
            ("/sse", {}),
            ("/events?session_id=keepalive", {}),
            ("/mcp", {"Mcp-Session-Id": session_id}),
        ):
            async with open_sse(client, "GET", path, headers=headers) as reader:
                response = reader.response
                assert response.status_code == 200, path
                assert response.headers["content-type"].startswith("text/event-stream")
                assert "no-cache" in response.headers["cache-control"]
                assert response.headers["x-accel-buffering"] == "no"
                assert await reader.next_comment() == "ping"


async def _events_until(reader: SseReader, predicate: Any) -> list[Any]:
    seen = []
    while True:
        event = await reader.next_event()
        seen.append(event)
        if predicate(event):
            return seen


async def test_a_2025_post_stream_resumes_from_last_event_id_after_a_dropped_connection(
    server: RunningServer, gates: Gates
) -> None:
    async with server.client() as client:
        session_id = await legacy_initialize(client)
        call = jsonrpc(
            "tools/call",
            {"name": "progress_then_wait", "arguments": {"steps": 3, "gate": "g1"}, "_meta": {"progressToken": "p"}},
            5,
        )
        async with open_sse(client, "POST", "/mcp", content=call, headers=legacy_headers(session_id)) as reader:
            assert reader.response.headers["content-type"].startswith("text/event-stream")
            priming = await reader.next_event()
            assert priming.data == ""
            assert priming.event_id is not None
            assert priming.retry_ms == 3000
            first = await reader.next_event()
            assert json.loads(first.data)["params"]["progress"] == 1
        with anyio.fail_after(5):
            await gates.entered["g1"].wait()
        resume = {"Mcp-Session-Id": session_id, "Last-Event-ID": first.event_id or ""}
        async with open_sse(client, "GET", "/mcp", headers=resume) as reader:
            assert reader.response.status_code == 200
            missed = [json.loads((await reader.next_event()).data) for _ in range(2)]
            assert [m["params"]["progress"] for m in missed] == [2, 3]
            gates.open("g1")
            rest = await reader.read_to_end()
            assert [json.loads(e.data) for e in rest] == [
                {"jsonrpc": "2.0", "id": 5, "result": json.loads(rest[0].data)["result"]}
            ]
            assert json.loads(rest[0].data)["result"]["content"][0]["text"] == "done g1"


async def test_an_unknown_last_event_id_is_refused_without_losing_the_session(server: RunningServer) -> None:
    async with server.client() as client:
        session_id = await legacy_initialize(client)
        stale = await client.get(
            "/mcp", headers={"Mcp-Session-Id": session_id, "Last-Event-ID": "r99.1", "Accept": "text/event-stream"}
        )
        assert stale.status_code == 400
        assert "Last-Event-ID" in stale.json()["error"]["message"]
        assert (await client.delete("/mcp", headers={"Mcp-Session-Id": session_id})).status_code == 200


async def test_the_events_stream_replays_exactly_what_the_client_missed(server: RunningServer) -> None:
    async with server.client() as client:
        async with open_sse(client, "GET", "/events?session_id=replay") as reader:
            assert (await reader.next_event()).retry_ms == 3000
            for n in (1, 2):
                posted = await client.post(
                    "/message?session_id=replay", json=api("call_tool", f"r{n}", {"name": "echo", "message": f"m{n}"})
                )
                assert posted.status_code == 202
                assert posted.json() == {"status": "queued", "request_id": f"r{n}"}
            first = await reader.next_event()
            assert first.event_id is not None
            assert first.event_id.endswith("e.1")
            key = first.event_id.removesuffix(".1")
            assert len(key) == 9, "a random 8-character prefix makes event ids unguessable"
            assert json.loads(first.data) == {"type": "tool_result", "request_id": "r1", "data": {"result": "m1"}}
        for n in (3,):
            assert (
                await client.post(
                    "/message?session_id=replay",
                    json=api("call_tool", f"r{n}", {"name": "echo", "arguments": {"message": f"m{n}"}}),
                )
            ).status_code == 202
        async with open_sse(
            client, "GET", "/events?session_id=replay", headers={"Last-Event-ID": first.event_id}
        ) as reader:
            await reader.next_event()  # retry hint
            replayed = [await reader.next_event() for _ in range(2)]
            assert [e.event_id for e in replayed] == [f"{key}.2", f"{key}.3"]
            assert [json.loads(e.data)["request_id"] for e in replayed] == ["r2", "r3"]
            assert (await client.post("/message?session_id=replay", json=api("list_tools", "r4"))).status_code == 202
            live = await reader.next_event()
            assert live.event_id == f"{key}.4"
            listed = json.loads(live.data)
            assert listed["type"] == "list_tools"
            assert "echo" in [t["name"] for t in listed["data"]["tools"]]


async def test_results_wait_for_a_stream_and_the_wait_is_bounded(server: RunningServer) -> None:
    async with server.client() as client:
        for n in range(3):
            queued = await client.post(
                "/message?session_id=waiting", json=api("call_tool", f"w{n}", {"name": "echo", "message": str(n)})
            )
            assert queued.status_code == 202
        full = await client.post("/message?session_id=waiting", json=api("list_tools", "w3"))
        assert full.status_code == 503
        assert full.headers["retry-after"] == "1"
        assert "GET /events" in full.json()["error"]["message"]
        async with open_sse(client, "GET", "/events?session_id=waiting") as reader:
            await reader.next_event()
            delivered = [json.loads((await reader.next_event()).data) for _ in range(3)]
            assert [d["data"]["result"] for d in delivered] == ["0", "1", "2"]
            again = await client.post("/message?session_id=waiting", json=api("list_tools", "w4"))
            assert again.status_code == 202
            assert json.loads((await reader.next_event()).data)["request_id"] == "w4"


async def test_the_standalone_get_stream_carries_server_notifications_and_is_exclusive(server: RunningServer) -> None:
    async with server.client() as client:
        session_id = await legacy_initialize(client)
        async with open_sse(client, "GET", "/mcp", headers={"Mcp-Session-Id": session_id}) as reader:
            priming = await reader.next_event()
            assert priming.data == ""
            assert priming.event_id is not None
            second = await client.get("/mcp", headers={"Mcp-Session-Id": session_id, "Accept": "text/event-stream"})
            assert second.status_code == 409
            call = jsonrpc("tools/call", {"name": "announce_tools_changed", "arguments": {}}, 2)
            result = await client.post("/mcp", content=call, headers=legacy_headers(session_id))
            assert result.json()["result"]["content"][0]["text"] == "announced"
            note = json.loads((await reader.next_event()).data)
            assert note == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}


async def test_delete_ends_the_session_and_its_open_stream(server: RunningServer) -> None:
    async with server.client() as client:
        session_id = await legacy_initialize(client)
        async with open_sse(client, "GET", "/mcp", headers={"Mcp-Session-Id": session_id}) as reader:
            await reader.next_event()
            assert (await client.delete("/mcp", headers={"Mcp-Session-Id": session_id})).status_code == 200
            tail = await reader.read_to_end()
            assert all(e.data == "" for e in tail)
        after = await client.post("/mcp", content=jsonrpc("tools/list"), headers=legacy_headers(session_id))
        assert after.status_code == 404


async def test_a_newer_events_stream_replaces_the_older_one(server: RunningServer) -> None:
    async with server.client() as client, open_sse(client, "GET", "/events?session_id=twice") as old:
        await old.next_event()
        async with open_sse(client, "GET", "/events?session_id=twice") as new:
            await new.next_event()
            await old.read_to_end()
            assert (await client.post("/message?session_id=twice", json=api("list_tools", "t1"))).status_code == 202
            assert json.loads((await new.next_event()).data)["request_id"] == "t1"


async def _answer_sampling(context: ClientRequestContext, params: CreateMessageRequestParams) -> CreateMessageResult:
    question = params.messages[0].content
    text = question.text if isinstance(question, TextContent) else "?"
    return CreateMessageResult(
        role="assistant", content=TextContent(type="text", text=f"answer to {text}"), model="test"
    )


async def test_sampling_requests_reach_the_client_and_its_answer_reaches_the_tool(server: RunningServer) -> None:
    async with httpx2.AsyncClient(headers=bearer(TOKEN), timeout=10) as http:
        transport = streamable_http_client(f"{server.url}/mcp", http_client=http)
        async with Client(transport, mode="legacy", sampling_callback=_answer_sampling) as client:
            result = await client.call_tool("ask_model", {"question": "life"})
            assert result.content[0].text == "answer to life"  # type: ignore[union-attr]
    async with Client(
        sse_client(f"{server.url}/sse", headers=bearer(TOKEN)), mode="legacy", sampling_callback=_answer_sampling
    ) as client:
        result = await client.call_tool("ask_model", {"question": "sse"})
        assert result.content[0].text == "answer to sse"  # type: ignore[union-attr]


async def test_tools_see_the_calling_principal_on_every_transport(server: RunningServer) -> None:
    from tests.support.servers import ALICE_TOKEN

    async with httpx2.AsyncClient(headers=bearer(ALICE_TOKEN), timeout=10) as http:
        for mode in ("legacy", "2026-07-28"):
            async with Client(streamable_http_client(f"{server.url}/mcp", http_client=http), mode=mode) as client:
                result = await client.call_tool("whoami", {})
                assert result.content[0].text == "alice", mode  # type: ignore[union-attr]
    async with Client(sse_client(f"{server.url}/sse", headers=bearer(ALICE_TOKEN)), mode="legacy") as client:
        assert (await client.call_tool("whoami", {})).content[0].text == "alice"  # type: ignore[union-attr]
    async with server.client(ALICE_TOKEN) as client:
        async with open_sse(client, "GET", "/events?session_id=who") as reader:
            await reader.next_event()
            await client.post("/message?session_id=who", json=api("call_tool", "w", {"name": "whoami"}))
            assert json.loads((await reader.next_event()).data)["data"] == {"result": "alice"}
        direct = await client.post(
            "/message", content=jsonrpc("tools/call", {"name": "whoami", "arguments": {}}), headers=JSON
        )
        assert direct.json()["result"]["content"][0]["text"] == "alice"


async def test_delete_ends_a_datapulse_api_session_and_frees_its_slot(server: RunningServer) -> None:
    async with server.client() as client:
        assert (await client.post("/message?session_id=done", json=api("list_tools", "d1"))).status_code == 202
        assert server.runtime.sessions.peek("done") is not None
        assert (await client.delete("/events?session_id=done")).status_code == 200
        assert server.runtime.sessions.peek("done") is None
        assert (await client.delete("/events?session_id=done")).status_code == 404


async def test_notifications_cancelled_stops_a_2025_request_and_ends_its_exchange(
    server: RunningServer, gates: Gates
) -> None:
    async with server.client() as client:
        session_id = await legacy_initialize(client)
        answers: list[dict[str, Any]] = []

        async def call() -> None:
            body = jsonrpc("tools/call", {"name": "wait_for", "arguments": {"gate": "never"}}, 41)
            answers.append((await client.post("/mcp", content=body, headers=legacy_headers(session_id))).json())

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call)
            with anyio.fail_after(5):
                await gates.entered["never"].wait()
            cancel = jsonrpc("notifications/cancelled", {"requestId": 41}, request_id=None)
            assert (await client.post("/mcp", content=cancel, headers=legacy_headers(session_id))).status_code == 202
        assert answers == [{"jsonrpc": "2.0", "id": 41, "error": {"code": -32800, "message": "Request cancelled"}}]
