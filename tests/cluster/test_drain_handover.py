"""Drain in cluster mode: SIGTERM to the instance holding the sessions; its in-flight call completes, and the
sessions go on at once on the other instance (no new handshake, nothing lost)."""

from __future__ import annotations

import json
import signal

import anyio
import httpx2
import pytest

from tests.http.test_drain import result_text, slow_call, until_progress
from tests.support.cluster import spawn_cluster
from tests.support.mcp_http import legacy_call, legacy_headers, legacy_initialize
from tests.support.redis_server import RedisServer
from tests.support.servers import ALICE_TOKEN, ServerProcess, bearer
from tests.support.sse import open_sse

pytestmark = pytest.mark.anyio

ARGS = ["tests.support.apps:BEHAVIOUR_APP", "--graceful-shutdown-timeout-s", "5"]


def as_alice(process: ServerProcess) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=process.url, headers=bearer(ALICE_TOKEN), timeout=30.0)


async def test_sessions_of_a_draining_instance_continue_on_another_instance(redis_server: RedisServer) -> None:
    async with spawn_cluster(redis_server.url, n=2, args=ARGS) as (first, second):
        async with as_alice(first) as on_first:
            session_id = await legacy_initialize(on_first)
            listed = {"type": "list_tools", "request_id": "r1", "data": {}}
            async with open_sse(on_first, "GET", "/events?session_id=api-1") as events:
                await events.next_event()  # retry hint: the stream is open
                assert (await on_first.post("/message?session_id=api-1", json=listed)).status_code == 202
                first_result = await events.next_event()
                assert json.loads(first_result.data)["request_id"] == "r1"
                headers = legacy_headers(session_id)
                async with open_sse(on_first, "POST", "/mcp", content=slow_call(1.0), headers=headers) as call:
                    await until_progress(call)
                    first.signal(signal.SIGTERM)
                    assert result_text(await call.read_to_end()) == "worked 1 s"
                await events.read_to_end()  # the drain ends the stream
        with anyio.fail_after(20):
            assert await first.process.wait() == 0

        async with as_alice(second) as on_second:
            echoed = await legacy_call(
                on_second, session_id, "tools/call", {"name": "echo", "arguments": {"message": "still here"}}, 8
            )
            assert echoed.status_code == 200, echoed.text
            assert "still here" in echoed.text
            resume = {"Last-Event-ID": first_result.event_id or ""}
            async with open_sse(on_second, "GET", "/events?session_id=api-1", headers=resume) as events:
                assert events.response.status_code == 200
                called = {"type": "call_tool", "request_id": "r2", "data": {"name": "echo", "message": "moved"}}
                assert (await on_second.post("/message?session_id=api-1", json=called)).status_code == 202
                while True:
                    event = await events.next_event()
                    if event.data:
                        message = json.loads(event.data)
                        assert message["request_id"] == "r2", message  # r1 is not replayed: it was delivered
                        break
