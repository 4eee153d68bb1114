"""Session lifetime: idle expiry after the TTL, cleanup on disconnect, and a bounded shutdown that ends
open streams (an open SSE stream must not hang Ctrl-C)."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator

import anyio
import httpx2
import pytest

from datapulse.sessions.registry import SessionKind
from tests.support.mcp_http import jsonrpc, legacy_call, legacy_initialize, modern_params
from tests.support.servers import TOKEN, RunningServer, bearer, make_settings, serve_in_process, spawn_datapulse
from tests.support.sse import open_sse

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with serve_in_process(make_settings(session_idle_ttl_s=60)) as running:
        yield running


async def test_idle_sessions_expire_after_the_ttl_and_then_are_not_found(server: RunningServer) -> None:
    clock = FakeClock()
    server.runtime.sessions.clock = clock
    async with server.client() as client:
        idle_mcp = await legacy_initialize(client)
        assert (
            await client.post("/message?session_id=idle-api", json={"type": "list_tools", "request_id": "1"})
        ).status_code == 202
        busy_mcp = await legacy_initialize(client)
        clock.now += 59
        assert (await legacy_call(client, busy_mcp, "tools/list")).status_code == 200
        async with open_sse(client, "GET", "/events?session_id=streaming") as reader:
            await reader.next_event()
            clock.now += 2
            assert await server.runtime.sessions.reap() == 2
            counts = await server.runtime.sessions.registry.counts()
            assert counts[SessionKind.DATAPULSE_API] == 1
            assert counts[SessionKind.STREAMABLE_HTTP] == 1
            assert server.runtime.sessions.peek("idle-api") is None
            assert (await legacy_call(client, idle_mcp, "tools/list")).status_code == 404
            # the session whose stream is open, and the one used within the TTL, are still there
            assert (await legacy_call(client, busy_mcp, "tools/list")).status_code == 200
        sessions = server.runtime.sessions
        with anyio.fail_after(5):
            await sessions.wait_until(lambda: sessions.stream_counts()[SessionKind.DATAPULSE_API] == 0)
        clock.now += 61
        assert await server.runtime.sessions.reap() == 2
        assert (await legacy_call(client, busy_mcp, "tools/list")).status_code == 404


async def test_an_sse_session_is_cleaned_up_when_its_client_disconnects(server: RunningServer) -> None:
    async with server.client() as client:
        async with open_sse(client, "GET", "/sse") as reader:
            endpoint = (await reader.next_event()).data
            health = (await client.get("/health")).json()
            assert health["sessions"]["sse"] == 1
            assert health["streams"]["sse"] == 1
        sessions = server.runtime.sessions
        with anyio.fail_after(5):
            await sessions.wait_until(lambda: sessions.peek(endpoint.split("session_id=")[1]) is None)
        assert (await client.get("/health")).json()["sessions"]["sse"] == 0
        gone = await client.post(endpoint, content=jsonrpc("ping"), headers={"Content-Type": "application/json"})
        assert gone.status_code == 404


async def test_health_reports_status_version_uptime_and_counts_without_auth(server: RunningServer) -> None:
    async with server.client(token=None) as anonymous:
        health = (await anonymous.get("/health")).json()
    assert health["status"] == "ok"
    assert health["version"]
    assert health["uptime_s"] >= 0
    assert set(health["sessions"]) == set(health["streams"]) == {"streamable_http", "sse", "datapulse_api"}


async def test_ctrl_c_with_open_streams_exits_within_the_bound_and_tells_clients_when_to_retry() -> None:
    env = {"DATAPULSE_TOKEN": TOKEN, "DATAPULSE_GRACEFUL_SHUTDOWN_TIMEOUT_S": "5", "DATAPULSE_RETRY_MS": "1234"}
    async with spawn_datapulse(env=env) as proc:
        async with httpx2.AsyncClient(base_url=proc.url, headers=bearer(), timeout=10) as client:
            session_id = await legacy_initialize(client)
            listen = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "subscriptions/listen",
                "params": modern_params({"notifications": {"toolsListChanged": True}}),
            }
            modern = {
                "MCP-Protocol-Version": "2026-07-28",
                "Mcp-Method": "subscriptions/listen",
                "Content-Type": "application/json",
            }
            async with (
                open_sse(client, "GET", "/sse") as sse,
                open_sse(client, "GET", "/events?session_id=bye") as events,
                open_sse(client, "GET", "/mcp", headers={"Mcp-Session-Id": session_id}) as standalone,
                open_sse(
                    client,
                    "POST",
                    "/mcp",
                    content=json.dumps(listen),
                    headers={**modern, "Accept": "application/json, text/event-stream"},
                ) as listener,
            ):
                await sse.next_event()
                await events.next_event()
                await standalone.next_event()
                ack = json.loads((await listener.next_event()).data)
                assert ack["method"] == "notifications/subscriptions/acknowledged"
                proc.signal(signal.SIGINT)
                for reader in (sse, events, standalone, listener):
                    tail = await reader.read_to_end(timeout_s=10)
                    assert any(event.retry_ms == 1234 for event in tail), tail
        with anyio.fail_after(15):
            code = await proc.process.wait()
        assert code == 0
        assert any("closing SSE stream: server shutting down" in line for line in proc.stderr_lines)
