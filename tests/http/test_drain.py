"""Graceful drain on a real `datapulse serve` process: SIGTERM with open streams and an in-flight tool call."""

from __future__ import annotations

import json
import signal
from typing import Any

import anyio
import httpx2
import pytest

from tests.support.mcp_http import legacy_headers, legacy_initialize, modern_headers, modern_params
from tests.support.servers import TOKEN, bearer, make_settings, serve_in_process, spawn_datapulse
from tests.support.sse import SseReader, open_sse

pytestmark = pytest.mark.anyio

APP = "tests.support.apps:BEHAVIOUR_APP"
DRAIN_BOUND_S = 5
EXIT_WAIT_S = 3 * DRAIN_BOUND_S  # our drain, then uvicorn's wait for connections, each bounded


def slow_call(seconds: float) -> str:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "report_then_work", "arguments": {"seconds": seconds}, "_meta": {"progressToken": "p"}},
        }
    )


def modern_slow_call(seconds: float) -> str:
    """`slow_call` as a 2026-07-28 stateless request (send with `MODERN_CALL` headers)."""
    body = json.loads(slow_call(seconds))
    body["params"] = modern_params(body["params"])
    return json.dumps(body)


MODERN_CALL = modern_headers("tools/call", "report_then_work")


async def until_progress(reader: SseReader) -> None:
    while True:
        event = await reader.next_event()
        if event.data and json.loads(event.data).get("method") == "notifications/progress":
            return


def result_text(events: list[Any]) -> str:
    for event in events:
        if event.data:
            message = json.loads(event.data)
            if message.get("id") == 7:
                return str(message["result"]["content"][0]["text"])
    raise AssertionError(f"no result among {events}")


async def test_sigterm_finishes_the_in_flight_call_ends_streams_with_a_retry_hint_and_exits_in_time() -> None:
    args = [APP, "--graceful-shutdown-timeout-s", str(DRAIN_BOUND_S)]
    async with (
        spawn_datapulse(args, env={"DATAPULSE_TOKEN": TOKEN}) as server,
        httpx2.AsyncClient(base_url=server.url, headers=bearer(TOKEN), timeout=30) as client,
    ):
        session_id = await legacy_initialize(client)
        async with open_sse(client, "GET", "/sse") as idle_stream:
            await idle_stream.next_event()  # the endpoint event: the stream is open
            headers = legacy_headers(session_id)
            async with (
                open_sse(client, "POST", "/mcp", content=slow_call(1.5), headers=headers) as call,
                open_sse(client, "POST", "/mcp", content=modern_slow_call(1.5), headers=MODERN_CALL) as stateless,
            ):
                await until_progress(call)  # the calls are in flight on the server: one of a session,
                await until_progress(stateless)  # one stateless (2026-07-28)
                server.signal(signal.SIGTERM)
                assert result_text(await call.read_to_end()) == "worked 1.5 s"
                assert result_text(await stateless.read_to_end()) == "worked 1.5 s"
            ended = await idle_stream.read_to_end()
            assert idle_stream.ended
            assert any(event.retry_ms == 3000 for event in ended), ended
        with anyio.fail_after(EXIT_WAIT_S):
            assert await server.process.wait() == 0


async def test_ready_is_200_when_serving_and_503_while_draining_and_health_says_draining() -> None:
    async with serve_in_process(make_settings()) as running, running.client(token=None) as client:
        ready = await client.get("/ready")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready", "problems": []})
        running.runtime.draining = True
        draining = await client.get("/ready")
        assert draining.status_code == 503
        assert draining.json() == {"status": "not ready", "problems": ["draining"]}
        assert draining.headers["retry-after"] == "1"
        assert (await client.get("/health")).json()["status"] == "draining"
        running.runtime.draining = False
