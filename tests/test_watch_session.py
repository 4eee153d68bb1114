"""Watching a session (``GET /dashboard/api/watch``) on a real server: every message both ways on each session
transport, who may watch, a slow watcher, and how a watch stream ends."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import pytest

from tests.support.apps import Gates, build_behaviour_server
from tests.support.mcp_http import CLIENT_INFO, jsonrpc, legacy_headers, legacy_initialize
from tests.support.polling import eventually
from tests.support.servers import (
    ALICE_TOKEN,
    BOB_TOKEN,
    TOKEN,
    RunningServer,
    bearer,
    make_settings,
    serve_in_process,
    spawn_datapulse,
)
from tests.support.sse import open_sse, watch_frames

pytestmark = pytest.mark.anyio

WATCH = "/dashboard/api/watch"
JSON = {"Content-Type": "application/json"}
APP = "tests.support.apps:BEHAVIOUR_APP"
BLOB_BYTES = 1_000_000
MAX_BLOB_CALLS = 200
"""Calls of 1 MB each are enough to fill any socket buffers between a server and a client that reads nothing."""


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    settings = make_settings(dashboard_admins=["alice"], keepalive_interval_s=0.2)
    async with serve_in_process(settings, server=build_behaviour_server(Gates())) as running:
        yield running


def watch_url(session_id: str) -> str:
    return f"{WATCH}?session_id={session_id}"


def api(message_type: str, request_id: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": message_type, "request_id": request_id, "data": data or {}}


async def big_events(response: httpx2.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` of a watch stream whose frames are megabytes long (`SseReader` decodes byte by
    byte); comments are skipped. The watch stream's events are ``event:`` and one ``data:`` line, LF-separated."""
    buffer = b""
    async for chunk in response.aiter_raw():
        buffer += chunk
        while (end := buffer.find(b"\n\n")) != -1:
            block, buffer = buffer[:end], buffer[end + 2 :]
            fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if not line.startswith(b":"))
            if fields:
                yield fields[b"event"].decode(), json.loads(fields[b"data"])


def summary(frame: dict[str, Any]) -> tuple[str, str, str | None, str | int | None]:
    return frame["dir"], frame["kind"], frame["method"], frame["id"]


async def test_watching_a_datapulse_api_session_shows_the_call_and_its_result_with_elapsed_ms(
    server: RunningServer,
) -> None:
    async with server.client(ALICE_TOKEN) as alice:
        opened = await alice.post("/message?session_id=watched-api", json=api("list_tools", "r1"))
        assert opened.status_code == 202
        async with open_sse(alice, "GET", watch_url("watched-api")) as watch:
            assert watch.response.status_code == 200
            assert watch.response.headers["content-type"].startswith("text/event-stream")
            call = api("call_tool", "r2", {"name": "echo", "arguments": {"message": "hi"}})
            assert (await alice.post("/message?session_id=watched-api", json=call)).status_code == 202
            inbound, outbound = await watch_frames(watch, 2)
    assert summary(inbound) == ("in", "request", "call_tool", "r2")
    assert inbound["message"] == call
    assert summary(outbound) == ("out", "response", None, "r2")
    assert outbound["message"]["type"] == "tool_result"
    assert outbound["elapsed_ms"] is not None
    assert outbound["elapsed_ms"] >= 0
    assert inbound["t"] <= outbound["t"]


async def test_watching_a_2025_streamable_http_session_shows_the_call_its_progress_and_its_response(
    server: RunningServer,
) -> None:
    async with server.client(ALICE_TOKEN) as alice:
        session_id = await legacy_initialize(alice)
        async with open_sse(alice, "GET", watch_url(session_id)) as watch:
            assert watch.response.status_code == 200
            params = {"name": "report_then_work", "arguments": {"seconds": 0}, "_meta": {"progressToken": "p"}}
            body = jsonrpc("tools/call", params, 5)
            async with open_sse(alice, "POST", "/mcp", content=body, headers=legacy_headers(session_id)) as post:
                answered = [json.loads(event.data) for event in await post.read_to_end() if event.data]
            assert answered[-1]["result"]["content"][0]["text"] == "worked 0 s"
            call, progress, response = await watch_frames(watch, 3)
    assert summary(call) == ("in", "request", "tools/call", 5)
    assert call["message"] == json.loads(body)
    assert summary(progress) == ("out", "notification", "notifications/progress", None)
    assert progress["message"]["params"]["progressToken"] == "p"
    assert summary(response) == ("out", "response", None, 5)
    assert response["message"] == answered[-1]
    assert response["elapsed_ms"] is not None
    assert response["elapsed_ms"] >= 0


async def test_watching_a_2024_sse_session_shows_a_server_to_client_request_and_the_clients_answer(
    server: RunningServer,
) -> None:
    async with server.client(ALICE_TOKEN) as alice, open_sse(alice, "GET", "/sse") as stream:
        endpoint = await stream.next_event()
        (session_id,) = parse_qs(urlsplit(endpoint.data).query)["session_id"]
        async with open_sse(alice, "GET", watch_url(session_id)) as watch:
            assert watch.response.status_code == 200

            async def post(message: str) -> None:
                assert (await alice.post(endpoint.data, content=message, headers=JSON)).status_code == 202

            init = {"protocolVersion": "2024-11-05", "capabilities": {"sampling": {}}, "clientInfo": CLIENT_INFO}
            await post(jsonrpc("initialize", init, 0))
            assert json.loads((await stream.next_event()).data)["id"] == 0
            await post(jsonrpc("notifications/initialized", request_id=None))
            await post(jsonrpc("tools/call", {"name": "ask_model", "arguments": {"question": "2+2?"}}, 2))
            asked = json.loads((await stream.next_event()).data)
            assert asked["method"] == "sampling/createMessage"
            answer = {"role": "assistant", "content": {"type": "text", "text": "4"}, "model": "test"}
            await post(json.dumps({"jsonrpc": "2.0", "id": asked["id"], "result": answer}))
            assert json.loads((await stream.next_event()).data)["result"]["content"][0]["text"] == "4"
            seen = await watch_frames(watch, 7)
    assert [summary(frame) for frame in seen] == [
        ("in", "request", "initialize", 0),
        ("out", "response", None, 0),
        ("in", "notification", "notifications/initialized", None),
        ("in", "request", "tools/call", 2),
        ("out", "request", "sampling/createMessage", asked["id"]),
        ("in", "response", None, asked["id"]),
        ("out", "response", None, 2),
    ]
    assert seen[5]["elapsed_ms"] is not None, "the answer is timed against the request that went out"
    assert seen[6]["elapsed_ms"] is not None
    assert seen[6]["elapsed_ms"] >= seen[5]["elapsed_ms"]


async def test_a_principal_cannot_watch_another_principals_session_but_an_admin_can(server: RunningServer) -> None:
    async with server.client(ALICE_TOKEN) as alice, server.client(BOB_TOKEN) as bob, server.client(TOKEN) as local:
        for client, session_id in ((alice, "alices-session"), (bob, "bobs-session")):
            opened = await client.post(f"/message?session_id={session_id}", json=api("list_tools", "r1"))
            assert opened.status_code == 202
        foreign = await bob.get(watch_url("alices-session"), headers={"Accept": "text/event-stream"})
        unknown = await bob.get(watch_url("nobodys-session"), headers={"Accept": "text/event-stream"})
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.json() == unknown.json(), "a foreign session looks exactly like an unknown one"
        not_listed = await local.get(watch_url("bobs-session"), headers={"Accept": "text/event-stream"})
        assert not_listed.status_code == 404, "dashboard_admins names alice only"
        async with open_sse(bob, "GET", watch_url("bobs-session")) as own:
            assert own.response.status_code == 200
        async with open_sse(alice, "GET", watch_url("bobs-session")) as admin:
            assert admin.response.status_code == 200
            call = api("call_tool", "r2", {"name": "whoami"})
            assert (await bob.post("/message?session_id=bobs-session", json=call)).status_code == 202
            inbound, outbound = await watch_frames(admin, 2)
            assert (inbound["id"], outbound["id"]) == ("r2", "r2")
            assert "bob" in json.dumps(outbound["message"]["data"])


async def test_a_watch_without_a_session_id_is_a_bad_request(server: RunningServer) -> None:
    async with server.client(ALICE_TOKEN) as alice:
        missing = await alice.get(WATCH, headers={"Accept": "text/event-stream"})
        assert missing.status_code == 400
        assert missing.json()["error"]["code"] == -32600
        refused = await alice.get(watch_url("x"), headers={"Accept": "application/json"})
        assert refused.status_code == 406


async def test_a_slow_watcher_gets_dropped_counts_and_does_not_slow_the_session() -> None:
    settings = make_settings(dashboard_watch_queue_max_frames=2, slow_client_timeout_s=120)
    async with serve_in_process(settings, server=build_behaviour_server(Gates())) as running:
        taps = running.runtime.taps
        async with running.client(ALICE_TOKEN) as alice, running.client(ALICE_TOKEN) as dashboard:
            session_id = await legacy_initialize(alice)

            async def call(request_id: int, name: str, arguments: dict[str, Any]) -> httpx2.Response:
                body = jsonrpc("tools/call", {"name": name, "arguments": arguments}, request_id)
                response = await alice.post("/mcp", content=body, headers=legacy_headers(session_id))
                assert response.status_code == 200
                return response

            async with open_sse(dashboard, "GET", watch_url(session_id)) as watch:
                assert watch.response.status_code == 200
                (watcher,) = taps.watchers(session_id)
                events = big_events(watch.response)
                calls = 0
                with anyio.fail_after(60):  # the session answers every call while its watcher reads nothing
                    while watcher.dropped < 10 and calls < MAX_BLOB_CALLS:
                        calls += 1
                        answer = await call(calls, "blob", {"size": BLOB_BYTES})
                        assert len(answer.json()["result"]["content"][0]["text"]) == BLOB_BYTES
                assert watcher.dropped >= 10, f"{calls} calls of {BLOB_BYTES} bytes never filled the watcher's queue"
                received = 0
                notices: list[int] = []

                async def read_until(done: Any) -> None:
                    nonlocal received
                    while not done():
                        name, data = await anext(events)
                        if name == "dropped":
                            notices.append(data["dropped"])
                        else:
                            assert name == "frame"
                            received += 1

                with anyio.fail_after(60):
                    await read_until(lambda: received + watcher.dropped == 2 * calls)  # caught up
                    calls += 1
                    await call(calls, "echo", {"message": "after the gap"})
                    await read_until(lambda: received + watcher.dropped == 2 * calls)
    assert notices, "the watcher was told it missed frames"
    assert notices == sorted(notices), "the count is cumulative"
    assert notices[-1] == watcher.dropped
    assert received + notices[-1] == 2 * calls, "every frame was either received or counted as dropped"


async def test_a_watch_stream_ends_with_closed_when_the_session_closes(server: RunningServer) -> None:
    async with server.client(ALICE_TOKEN) as alice:
        session_id = await legacy_initialize(alice)
        async with open_sse(alice, "GET", watch_url(session_id)) as watch:
            assert watch.response.status_code == 200
            assert (await alice.delete("/mcp", headers={"Mcp-Session-Id": session_id})).status_code == 200
            ended = await watch.read_to_end()
        assert watch.ended
    assert [event.event for event in ended] == ["closed"]
    assert json.loads(ended[0].data) == {"session_id": session_id, "reason": "session closed"}
    assert all(event.retry_ms is None for event in ended)
    assert not server.runtime.taps.watching(session_id)


async def test_a_watch_stream_ends_when_its_client_goes_away(server: RunningServer) -> None:
    taps = server.runtime.taps
    async with server.client(ALICE_TOKEN) as alice:
        session_id = await legacy_initialize(alice)
        async with open_sse(alice, "GET", watch_url(session_id)) as watch:
            assert watch.response.status_code == 200
            assert taps.watching(session_id)

        async def unwatched() -> bool:
            return not taps.watching(session_id)

        await eventually(unwatched, timeout_s=10)


async def test_a_watch_stream_ends_when_the_server_shuts_down() -> None:
    async with (
        spawn_datapulse([APP, "--graceful-shutdown-timeout-s", "5"], env={"DATAPULSE_TOKEN": TOKEN}) as process,
        httpx2.AsyncClient(base_url=process.url, headers=bearer(TOKEN), timeout=30) as client,
    ):
        session_id = await legacy_initialize(client)
        async with open_sse(client, "GET", watch_url(session_id)) as watch:
            assert watch.response.status_code == 200
            process.signal(signal.SIGTERM)
            ended = await watch.read_to_end(timeout_s=15)
            assert watch.ended
        assert any(event.retry_ms == 3000 for event in ended), ended
        with anyio.fail_after(15):
            assert await process.process.wait() == 0
