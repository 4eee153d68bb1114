"""Era routing: one port, every generation, each connection in exactly one era."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from tests.support.mcp_http import MODERN, jsonrpc, legacy_headers, legacy_initialize, modern_call, modern_params
from tests.support.servers import RunningServer, serve_in_process
from tests.support.sse import open_sse

pytestmark = pytest.mark.anyio
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with serve_in_process() as running:
        yield running


async def test_modern_requests_never_mint_or_need_a_session(server: RunningServer) -> None:
    async with server.client() as client:
        listed = await modern_call(client, "tools/list")
        assert listed.status_code == 200
        assert "mcp-session-id" not in listed.headers
        assert listed.json()["result"]["resultType"] == "complete"
        session_id = await legacy_initialize(client)
        client.headers["Mcp-Session-Id"] = session_id  # a modern request ignores a stray session id
        again = await modern_call(client, "tools/call", {"name": "echo", "arguments": {"message": "m"}})
        assert again.json()["result"]["content"][0]["text"] == "m"


async def test_a_request_without_a_version_header_is_a_2025_03_26_session_request(server: RunningServer) -> None:
    init = {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "old", "version": "1"}}
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    async with server.client() as client:
        response = await client.post("/mcp", content=jsonrpc("initialize", init, 1), headers=headers)
        assert response.status_code == 200
        assert response.json()["result"]["protocolVersion"] == "2025-03-26"
        session_id = response.headers["mcp-session-id"]
        listed = await client.post(
            "/mcp", content=jsonrpc("tools/list", None, 2), headers={**headers, "Mcp-Session-Id": session_id}
        )
        assert "echo" in [tool["name"] for tool in listed.json()["result"]["tools"]]


async def test_a_session_refuses_the_other_era(server: RunningServer) -> None:
    async with server.client() as client:
        session_id = await legacy_initialize(client)
        enveloped = {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": modern_params()}
        refused = await client.post("/mcp", json=enveloped, headers=legacy_headers(session_id))
        assert refused.json()["error"]["code"] == -32600
        assert "MCP-Protocol-Version: 2026-07-28" in refused.json()["error"]["message"]


async def test_the_sse_pipe_serves_whichever_era_its_first_request_opens(server: RunningServer) -> None:
    async with server.client() as client:
        async with open_sse(client, "GET", "/sse") as reader:
            endpoint = (await reader.next_event()).data
            discover = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": modern_params()}
            assert (await client.post(endpoint, json=discover)).status_code == 202
            found = json.loads((await reader.next_event()).data)
            assert MODERN in found["result"]["supportedVersions"]
            init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}
            assert (
                await client.post(endpoint, content=jsonrpc("initialize", init, 2), headers=JSON)
            ).status_code == 202
            refused = json.loads((await reader.next_event()).data)
            assert refused["error"]["code"] == -32022
        async with open_sse(client, "GET", "/sse") as reader:
            endpoint = (await reader.next_event()).data
            init = {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}
            await client.post(endpoint, content=jsonrpc("initialize", init, 1), headers=JSON)
            assert json.loads((await reader.next_event()).data)["result"]["protocolVersion"] == "2024-11-05"
            enveloped = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": modern_params()}
            await client.post(endpoint, json=enveloped)
            assert json.loads((await reader.next_event()).data)["error"]["code"] == -32600
