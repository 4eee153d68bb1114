"""Bad input on every endpoint gets the right HTTP status and JSON-RPC code, a usable message, never a 500."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from tests.support.mcp_http import (
    BOTH,
    MODERN,
    jsonrpc,
    legacy_call,
    legacy_headers,
    legacy_initialize,
    modern_call,
    modern_headers,
    modern_params,
    sse_initialize,
)
from tests.support.servers import ALICE_TOKEN, BOB_TOKEN, RunningServer, make_settings, serve_in_process
from tests.support.sse import open_sse

pytestmark = pytest.mark.anyio

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with serve_in_process(make_settings(max_body_bytes=4096)) as running:
        yield running


def error_of(response: httpx2.Response) -> dict[str, Any]:
    body = response.json()
    assert body["jsonrpc"] == "2.0"
    error: dict[str, Any] = body["error"]
    assert error["message"]
    return error


async def test_malformed_json_is_400_parse_error_on_every_post_endpoint(server: RunningServer) -> None:
    async with server.client() as client:
        session_id = await legacy_initialize(client)
        targets = [
            ("/mcp", legacy_headers()),
            ("/mcp", legacy_headers(session_id)),
            ("/mcp", modern_headers("tools/list")),
            ("/message", JSON),
            ("/message?session_id=abc", JSON),
        ]
        async with open_sse(client, "GET", "/sse") as reader:
            endpoint = (await reader.next_event()).data
            targets.append((endpoint, JSON))
            for path, headers in targets:
                response = await client.post(path, content=b'{"jsonrpc": "2.0", ', headers=headers)
                assert response.status_code == 400, (path, response.text)
                assert error_of(response)["code"] == -32700, path


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]',
        b'"text"',
        b'{"jsonrpc":"1.0","id":1,"method":"ping"}',
        b'{"jsonrpc":"2.0","id":{},"method":"ping"}',
        b'{"jsonrpc":"2.0","id":1,"method":"ping","params":[1,2]}',
    ],
)
async def test_invalid_jsonrpc_is_400_invalid_request(server: RunningServer, body: bytes) -> None:
    async with server.client() as client:
        session_id = await legacy_initialize(client)
        for headers in (legacy_headers(), legacy_headers(session_id), modern_headers("ping")):
            response = await client.post("/mcp", content=body, headers=headers)
            assert response.status_code == 400, (headers, response.text)
            assert error_of(response)["code"] == -32600


async def test_invalid_datapulse_api_messages_are_400_or_404_with_the_problem_named(server: RunningServer) -> None:
    cases: list[tuple[Any, int, int, str]] = [
        ({"type": "call_tool", "data": {"name": "echo"}}, 400, -32600, "request_id"),
        ({"type": "call_tool", "request_id": "r", "data": {}}, 400, -32600, "data.name"),
        ({"type": "call_tool", "request_id": "r", "data": []}, 400, -32600, '"data"'),
        ({"type": "call_tool", "request_id": "r", "data": {"name": "echo", "arguments": 3}}, 400, -32600, "arguments"),
        ({"type": "launch_rockets", "request_id": "r", "data": {}}, 404, -32601, "list_tools, call_tool"),
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, 400, -32600, "without session_id"),
        (["list"], 400, -32600, "object"),
    ]
    async with server.client() as client:
        for body, status, code, fragment in cases:
            response = await client.post("/message?session_id=abc", json=body)
            assert response.status_code == status, (body, response.text)
            error = error_of(response)
            assert error["code"] == code
            assert fragment in error["message"], (fragment, error)


async def test_unknown_methods_are_32601_and_seed_aliases_name_the_mcp_method(server: RunningServer) -> None:
    async with server.client() as client:
        modern = await modern_call(client, "tools/frobnicate")
        assert modern.status_code == 404
        assert error_of(modern)["code"] == -32601

        session_id = await legacy_initialize(client)
        legacy = await legacy_call(client, session_id, "tools/frobnicate")
        assert legacy.status_code == 200
        assert error_of(legacy)["code"] == -32601

        alias = await legacy_call(client, session_id, "listTools")
        error = error_of(alias)
        assert error["code"] == -32601
        assert "'tools/list'" in error["message"]

        body = {"jsonrpc": "2.0", "id": 1, "method": "callTool", "params": modern_params({"name": "echo"})}
        modern_alias = await client.post("/mcp", json=body, headers=modern_headers("callTool"))
        assert modern_alias.status_code == 404
        assert error_of(modern_alias)["code"] == -32601
        assert "'tools/call'" in error_of(modern_alias)["message"]

        stateless = await client.post("/message", content=jsonrpc("tools/frobnicate"), headers=JSON)
        assert stateless.status_code == 200
        assert error_of(stateless)["code"] == -32601


async def test_seed_aliases_work_on_message_and_messages(server: RunningServer) -> None:
    async with server.client() as client:
        direct = await client.post("/message", content=jsonrpc("listTools"), headers=JSON)
        assert direct.status_code == 200
        assert "echo" in [tool["name"] for tool in direct.json()["result"]["tools"]]
        async with open_sse(client, "GET", "/sse") as reader:
            endpoint = (await reader.next_event()).data
            await sse_initialize(client, endpoint, reader)
            call = jsonrpc("callTool", {"name": "uppercase_text", "arguments": {"text": "hi"}}, request_id=7)
            assert (await client.post(endpoint, content=call, headers=JSON)).status_code == 202
            result = json.loads((await reader.next_event()).data)
            assert result["id"] == 7
            assert result["result"]["content"][0]["text"] == "HI"


async def test_unknown_and_foreign_sessions_are_404_on_every_endpoint(server: RunningServer) -> None:
    async with server.client(ALICE_TOKEN) as alice, server.client(BOB_TOKEN) as bob:
        alice_mcp = await legacy_initialize(alice)
        assert (await alice.post("/message?session_id=alices", json=_api("list_tools"))).status_code == 202
        async with open_sse(alice, "GET", "/sse") as reader:
            endpoint = (await reader.next_event()).data
            sse_id = endpoint.split("session_id=")[1]
            for client, mcp_id, api_id, messages_id in (
                (bob, alice_mcp, "alices", sse_id),
                (alice, "nope-" + alice_mcp, "unknown-id", "nope" + sse_id),
            ):
                responses = [
                    await client.post("/mcp", content=jsonrpc("tools/list"), headers=legacy_headers(mcp_id)),
                    await client.get("/mcp", headers={"Mcp-Session-Id": mcp_id, "Accept": "text/event-stream"}),
                    await client.delete("/mcp", headers={"Mcp-Session-Id": mcp_id}),
                    await client.post(f"/messages?session_id={messages_id}", content=jsonrpc("ping"), headers=JSON),
                ]
                if client is bob:
                    responses.append(await client.post(f"/message?session_id={api_id}", json=_api("list_tools")))
                    responses.append(await client.get(f"/events?session_id={api_id}"))
                for response in responses:
                    assert response.status_code == 404, (response.request.method, response.request.url, response.text)
                    assert "Session not found" in error_of(response)["message"]
            # alice's own session still works after bob's attempts
            ok = await legacy_call(alice, alice_mcp, "tools/list")
            assert ok.status_code == 200
            assert "result" in ok.json()


async def test_wrong_content_type_is_415_on_every_post_endpoint(server: RunningServer) -> None:
    async with server.client() as client:
        session_id = await legacy_initialize(client)
        async with open_sse(client, "GET", "/sse") as reader:
            endpoint = (await reader.next_event()).data
            for path, headers in (
                ("/mcp", {**legacy_headers(session_id), "Content-Type": "text/plain"}),
                ("/mcp", {**modern_headers("tools/list"), "Content-Type": "text/plain"}),
                (endpoint, {"Content-Type": "application/x-www-form-urlencoded"}),
                ("/message?session_id=abc", {"Content-Type": "text/plain"}),
                ("/message", {}),
            ):
                response = await client.post(path, content=jsonrpc("tools/list"), headers=headers)
                assert response.status_code == 415, (path, response.text)
                assert "application/json" in error_of(response)["message"]


async def test_bodies_over_the_limit_are_413(server: RunningServer) -> None:
    big = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"x": "y" * 5000}})
    async with server.client() as client:
        session_id = await legacy_initialize(client)
        for path, headers in (
            ("/mcp", legacy_headers(session_id)),
            ("/mcp", modern_headers("tools/call")),
            ("/message?session_id=abc", JSON),
            ("/message", JSON),
        ):
            response = await client.post(path, content=big, headers=headers)
            assert response.status_code == 413, (path, response.text)
            assert "4096" in error_of(response)["message"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 1000

        streamed = await client.post("/mcp", content=chunks(), headers=legacy_headers(session_id))
        assert streamed.status_code == 413


async def test_wrong_accept_is_406(server: RunningServer) -> None:
    async with server.client() as client:
        session_id = await legacy_initialize(client)
        cases = [
            ("POST", "/mcp", legacy_headers(session_id, accept="text/html"), jsonrpc("tools/list")),
            ("POST", "/mcp", modern_headers("tools/list", accept="text/event-stream"), jsonrpc("tools/list")),
            ("GET", "/mcp", {"Mcp-Session-Id": session_id, "Accept": "application/json"}, None),
            ("GET", "/sse", {"Accept": "application/json"}, None),
            ("GET", "/events?session_id=abc", {"Accept": "application/json"}, None),
        ]
        listen = {"jsonrpc": "2.0", "id": 1, "method": "subscriptions/listen", "params": modern_params({})}
        cases.append(
            ("POST", "/mcp", modern_headers("subscriptions/listen", accept="application/json"), json.dumps(listen))
        )
        for method, path, headers, body in cases:
            response = await client.request(method, path, headers=headers, content=body)
            assert response.status_code == 406, (method, path, response.text)
            assert "Accept" in error_of(response)["message"]


async def test_missing_session_ids_and_wrong_methods_are_explained(server: RunningServer) -> None:
    async with server.client() as client:
        no_session = await client.post("/mcp", content=jsonrpc("tools/list"), headers=legacy_headers())
        assert no_session.status_code == 400
        assert "Mcp-Session-Id" in error_of(no_session)["message"]
        no_query = await client.post("/messages", content=jsonrpc("ping"), headers=JSON)
        assert no_query.status_code == 400
        assert "session_id" in error_of(no_query)["message"]
        no_events_id = await client.get("/events")
        assert no_events_id.status_code == 400
        put = await client.put("/mcp", content=b"{}")
        assert put.status_code == 405
        assert put.headers["allow"] == "GET, POST, DELETE"
        modern_get = await client.get("/mcp", headers={"MCP-Protocol-Version": MODERN, "Accept": BOTH})
        assert modern_get.status_code == 405
        assert modern_get.headers["allow"] == "POST"
        sse_post = await client.post("/sse", content=b"{}")
        assert sse_post.status_code == 405
        unsupported = await client.post(
            "/mcp", content=jsonrpc("tools/list"), headers={**legacy_headers(), "MCP-Protocol-Version": "1999-01-01"}
        )
        assert unsupported.status_code == 400
        assert "2026-07-28" in unsupported.json()["error"]["data"]["supported"]


async def test_nothing_in_a_hostile_burst_produces_a_500(server: RunningServer) -> None:
    bodies = [
        b"",
        b"null",
        b"{}",
        b"[]",
        b"\x00\xff",
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}',
        b'{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"nope://x"}}',
        b'{"jsonrpc":"2.0","id":1,"result":{}}',
        b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}',
    ]
    async with server.client() as client:
        session_id = await legacy_initialize(client)
        for body in bodies:
            for path, headers in (
                ("/mcp", legacy_headers()),
                ("/mcp", legacy_headers(session_id)),
                ("/mcp", modern_headers("tools/call", "x")),
                ("/message", JSON),
                ("/message?session_id=abc", JSON),
            ):
                response = await client.post(path, content=body, headers=headers)
                assert response.status_code < 500, (path, body, response.status_code, response.text)


def _api(message_type: str, request_id: str = "r1", data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": message_type, "request_id": request_id, "data": data or {}}


async def test_a_jsonrpc_response_posted_to_message_without_a_session_is_400_invalid_request(
    server: RunningServer,
) -> None:
    async with server.client() as client:
        for response in ({"jsonrpc": "2.0", "id": 1, "result": {}}, {"jsonrpc": "2.0", "id": 2, "error": {"code": 1}}):
            refused = await client.post("/message", json=response)
            assert refused.status_code == 400
            assert error_of(refused)["code"] == -32600
            assert "no request of the server waits for it" in error_of(refused)["message"]
        notification = await client.post("/message", json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert notification.status_code == 202
