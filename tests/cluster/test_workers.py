"""``datapulse serve --workers 2`` as a real process tree on a real Redis: sessions go on whichever worker a
request reaches, /metrics on any worker counts every worker, a worker that dies is replaced without losing
counts, and SIGTERM to the supervisor drains every worker."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from datapulse.workers import STARTUP_FAILURE
from tests.http.test_drain import MODERN_CALL, modern_slow_call, result_text, until_progress
from tests.support.cluster import cluster_env
from tests.support.mcp_http import modern_call
from tests.support.processes import run_collecting
from tests.support.prometheus import scrape, value
from tests.support.redis_server import RedisServer
from tests.support.servers import REPO_ROOT, TOKEN, ServerProcess, bearer, spawn_datapulse
from tests.support.sse import open_sse

pytestmark = pytest.mark.anyio

APP = "tests.support.apps:BEHAVIOUR_APP"
DRAIN_BOUND_S = 5
MAX_ATTEMPTS = 200  # fresh connections until both workers have served one (each lands on either at random)


@asynccontextmanager
async def two_workers(redis_server: RedisServer, *args: str) -> AsyncIterator[ServerProcess]:
    env = cluster_env(redis_server.url, {"DATAPULSE_METRICS_PUBLIC": "1", "DATAPULSE_LOG_LEVEL": "info"})
    async with spawn_datapulse([APP, "--workers", "2", *args], env=env) as server:
        try:
            yield server
        finally:
            if server.process.returncode is None:  # stop the workers too, not only the supervisor
                server.signal(signal.SIGTERM)
                with anyio.fail_after(30):
                    await server.process.wait()


def fresh_connections(url: str) -> httpx2.AsyncClient:
    """A client that opens a new connection per request, so the kernel hands each one to either worker."""
    limits = httpx2.Limits(max_keepalive_connections=0)
    return httpx2.AsyncClient(base_url=url, headers=bearer(TOKEN), timeout=20.0, limits=limits)


def worker_events(server: ServerProcess, event: str) -> list[dict[str, object]]:
    """The supervisor's JSON log records whose event is ``event`` (``worker 0 ready``...)."""
    records = [json.loads(line) for line in server.stderr_lines if line.startswith("{")]
    return [record for record in records if record.get("event") == event]


def is_event(event: str, *, not_pid: object = None) -> Callable[[str], bool]:
    def predicate(line: str) -> bool:
        if not line.startswith("{"):
            return False
        record = json.loads(line)
        return bool(record.get("event") == event and record.get("pid") != not_pid)

    return predicate


def contains(text: str) -> Callable[[str], bool]:
    return lambda line: text in line


async def echo(client: httpx2.AsyncClient, message: str) -> None:
    response = await modern_call(client, "tools/call", {"name": "echo", "arguments": {"message": message}})
    assert response.status_code == 200, response.text
    assert message in response.text


async def calls_until_both_workers_served(client: httpx2.AsyncClient) -> int:
    """Call ``process_id`` on fresh connections until two processes have answered; returns the number of calls."""
    pids: set[str] = set()
    for calls in range(1, MAX_ATTEMPTS + 1):
        response = await modern_call(client, "tools/call", {"name": "process_id", "arguments": {}})
        assert response.status_code == 200, response.text
        pids.add(response.json()["result"]["content"][0]["text"])
        if len(pids) == 2:
            return calls
    raise AssertionError(f"{MAX_ATTEMPTS} calls on fresh connections all reached one worker")


async def test_the_banner_is_printed_once_when_every_worker_serves(redis_server: RedisServer) -> None:
    async with two_workers(redis_server) as server:
        assert "2 worker processes" in server.banner[0]
        assert len(worker_events(server, "worker 0 ready")) == 1
        assert len(worker_events(server, "worker 1 ready")) == 1
        async with fresh_connections(server.url) as client:
            node_ids: set[str] = set()
            for _ in range(MAX_ATTEMPTS):
                node_ids.add((await client.get("/health")).json()["node_id"])
                if len(node_ids) == 2:
                    break
            assert len(node_ids) == 2, "every request reached one worker"


async def test_a_python_sdk_session_goes_on_whichever_worker_receives_its_requests(redis_server: RedisServer) -> None:
    async with two_workers(redis_server) as server:
        limits = httpx2.Limits(max_keepalive_connections=0)
        async with (
            fresh_connections(server.url) as observer,
            httpx2.AsyncClient(headers=bearer(TOKEN), timeout=20.0, limits=limits) as http,
            Client(streamable_http_client(server.url + "/mcp", http_client=http), mode="legacy") as client,
        ):
            forwarded = 0.0
            for attempt in range(MAX_ATTEMPTS):
                result = await client.call_tool("echo", {"message": f"call {attempt}"})
                assert isinstance(result.content[0], TextContent)
                assert result.content[0].text.endswith(f"call {attempt}")
                forwarded = value(await scrape(observer), "datapulse_forwarded_requests_total", outcome="ok")
                if forwarded > 0 and attempt >= 10:
                    break
            assert forwarded > 0, "no request of the session reached the other worker"


async def test_metrics_on_any_worker_count_every_workers_calls_even_after_one_dies(redis_server: RedisServer) -> None:
    async with two_workers(redis_server) as server, fresh_connections(server.url) as client:
        calls = await calls_until_both_workers_served(client)
        for _ in range(4):  # each scrape lands on either worker; each reports the calls both served
            samples = await scrape(client)
            assert value(samples, "datapulse_tool_calls_total", tool="process_id", outcome="ok") == calls

        (ready,) = worker_events(server, "worker 0 ready")
        seen = len(server.stderr_lines)
        killed = ready["pid"]
        os.kill(int(str(killed)), signal.SIGKILL)
        await server.stderr_lines.wait_for(is_event("worker 0 ready", not_pid=killed), start=seen)
        assert worker_events(server, "worker 0 ready")[-1]["pid"] != killed

        await echo(client, "after")
        samples = await scrape(client)
        assert value(samples, "datapulse_tool_calls_total", tool="process_id", outcome="ok") == calls  # kept
        assert value(samples, "datapulse_tool_calls_total", tool="echo", outcome="ok") == 1


async def test_sigterm_to_the_supervisor_drains_every_worker_and_exits_zero(redis_server: RedisServer) -> None:
    args = ("--graceful-shutdown-timeout-s", str(DRAIN_BOUND_S))
    async with two_workers(redis_server, *args) as server, fresh_connections(server.url) as client:
        async with open_sse(client, "GET", "/sse") as idle_stream:
            await idle_stream.next_event()  # the endpoint event: the stream is open
            body = modern_slow_call(1.5)
            async with (
                open_sse(client, "POST", "/mcp", content=body, headers=MODERN_CALL) as first,
                open_sse(client, "POST", "/mcp", content=body, headers=MODERN_CALL) as second,
            ):
                await until_progress(first)
                await until_progress(second)  # two calls in flight, on either worker
                server.signal(signal.SIGTERM)
                assert result_text(await first.read_to_end()) == "worked 1.5 s"
                assert result_text(await second.read_to_end()) == "worked 1.5 s"
            ended = await idle_stream.read_to_end()
            assert any(event.retry_ms is not None for event in ended), ended
        with anyio.fail_after(3 * DRAIN_BOUND_S):
            assert await server.process.wait() == 0


async def test_a_worker_that_cannot_start_stops_the_supervisor_with_status_3(redis_server: RedisServer) -> None:
    env = {**os.environ, **cluster_env(redis_server.url)}
    command = [str(Path(sys.executable).parent / "datapulse"), "serve", "--port", "0", "--workers", "2"]
    app = "tests.support.apps:FAILS_AT_STARTUP_APP"
    result = await run_collecting([*command, app], env=env, cwd=REPO_ROOT, timeout_s=60)
    assert result.returncode == STARTUP_FAILURE, result.stderr
    assert "this app refuses to start" in result.stderr
    assert "before it started serving; stopping" in result.stderr
    assert "listening on" not in result.stdout


async def test_workers_do_not_outlive_a_killed_supervisor(redis_server: RedisServer) -> None:
    async with two_workers(redis_server) as server:
        pids = {
            record["pid"]
            for record in worker_events(server, "worker 0 ready") + worker_events(server, "worker 1 ready")
        }
        server.signal(signal.SIGKILL)
        for pid in pids:
            await server.stderr_lines.wait_for(contains(f"Finished server process [{pid}]"))
        assert sum("the supervisor is gone" in line for line in server.stderr_lines) == 2
