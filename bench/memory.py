"""Server memory per idle 2024-11-05 SSE session, and many concurrent idle sessions on one DataPulse process.

Idle-session memory (method of the baseline research, shared/research/SSE-MEMORY.md): a fresh server per
measurement; 50 warm-up sessions opened and closed; RSS sampled after a settle pause; N sessions opened 64 at a
time, each doing GET /sse + ``endpoint`` event + POST initialize (result read from the stream) + POST
``notifications/initialized``, after which the client closes its POST keep-alive connection and holds only the
GET stream; RSS sampled again after a settle pause. Figure: ΔRSS ÷ N (KiB). RSS excludes kernel socket buffers.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bench.httpclient import build_request, connect
from bench.loadgen import IDS, Endpoint, SseClient, gather_limited
from bench.servers import Server, wait_idle

OPEN_PARALLEL = 64
WARMUP_SESSIONS = 50


async def open_idle_sessions(endpoint: Endpoint, n: int) -> tuple[list[SseClient], list[str]]:
    """Open ``n`` initialized SSE sessions, 64 at a time, each left holding only its GET stream."""
    clients = [SseClient(endpoint) for _ in range(n)]

    async def one(client: SseClient) -> None:
        await client.open_session()
        client.close_post()

    outcomes = await gather_limited([one(c) for c in clients], OPEN_PARALLEL)
    errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    return clients, errors


async def close_all(clients: list[SseClient]) -> None:
    for client in clients:
        await client.teardown()
    await asyncio.sleep(0)


async def idle_session_memory(kind: str, n: int, settle_s: float = 2.0) -> dict[str, Any]:
    """KiB of server RSS per idle SSE session for ``n`` sessions on a fresh ``kind`` server."""
    server = Server(kind)
    server.start()
    try:
        await server.wait_ready()
        endpoint = Endpoint("127.0.0.1", server.port, server.token)
        warm, warm_errors = await open_idle_sessions(endpoint, WARMUP_SESSIONS)
        await close_all(warm)
        await asyncio.sleep(settle_s * 0.75)
        await wait_idle([server])
        rss_before = server.rss()
        fds_before = server.num_fds()
        started = time.perf_counter()
        clients, errors = await open_idle_sessions(endpoint, n)
        open_s = time.perf_counter() - started
        await asyncio.sleep(settle_s)
        rss_after = server.rss()
        fds_after = server.num_fds()
        alive = sum(1 for c in clients if c.stream_alive())
        opened = n - len(errors)
        await close_all(clients)
        return {
            "server": kind,
            "n": n,
            "opened": opened,
            "alive": alive,
            "errors": (warm_errors + errors)[:5],
            "rss_before": rss_before,
            "rss_after": rss_after,
            "fds_before": fds_before,
            "fds_after": fds_after,
            "kib_per_session": (rss_after - rss_before) / n / 1024,
            "open_s": round(open_s, 2),
            "ok": opened == n and alive == n,
        }
    finally:
        server.stop()
        server.discard_log()
        server.remove_audit()


async def _health(endpoint: Endpoint) -> Any:
    conn = await connect(endpoint.host, endpoint.port)
    try:
        response = await conn.request(build_request("GET", "/health", endpoint.authority, endpoint.headers()))
        return json.loads(response.body)
    finally:
        conn.close()


async def many_sessions(n: int, settle_s: float = 2.0) -> dict[str, Any]:
    """Open ``n`` idle SSE sessions on one DataPulse process and show each is alive: a tools/call on every one.

    Each session gets one ``tools/call`` on a fresh POST connection (closed afterwards), its result read from that
    session's GET stream and checked. Keepalive ``: ping`` comments seen so far are counted too (informative: the
    default interval is 15 s).
    """
    server = Server("datapulse")
    server.start()
    try:
        await server.wait_ready()
        endpoint = Endpoint("127.0.0.1", server.port, server.token)
        warm, _ = await open_idle_sessions(endpoint, WARMUP_SESSIONS)
        await close_all(warm)
        await asyncio.sleep(settle_s * 0.75)
        await wait_idle([server])
        rss_before = server.rss()
        started = time.perf_counter()
        clients, open_errors = await open_idle_sessions(endpoint, n)
        open_s = time.perf_counter() - started
        errors = list(open_errors[:3])
        await asyncio.sleep(settle_s)
        rss_idle = server.rss()
        fds = server.num_fds()
        health = await _health(endpoint)
        open_clients = [c for c in clients if c.stream_alive()]

        async def call_one(client: SseClient) -> bool:
            try:
                ok, _latency, _done = await asyncio.wait_for(client.call(next(IDS)), 30)
            finally:
                client.close_post()
            return ok

        started = time.perf_counter()
        outcomes = await gather_limited([call_one(c) for c in open_clients], OPEN_PARALLEL)
        call_s = time.perf_counter() - started
        calls_ok = sum(1 for o in outcomes if o is True)
        alive_after = sum(1 for c in clients if c.stream_alive())
        pinged = sum(1 for c in clients if c.stream is not None and c.stream.decoder and c.stream.decoder.comments)
        rss_after_calls = server.rss()
        errors += [repr(o) for o in outcomes if isinstance(o, BaseException)][:3]
        for client in clients:
            errors += client.errors[:1]
        await close_all(clients)
        sse_streams = (health.get("streams") or {}).get("sse") if isinstance(health, dict) else None
        return {
            "n": n,
            "opened": n - len(open_errors),
            "alive_before_calls": len(open_clients),
            "health_sse_streams": sse_streams,
            "calls_ok": calls_ok,
            "alive_after_calls": alive_after,
            "keepalive_pinged": pinged,
            "rss_before": rss_before,
            "rss_idle": rss_idle,
            "rss_after_calls": rss_after_calls,
            "kib_per_session": (rss_idle - rss_before) / n / 1024,
            "fds": fds,
            "open_s": round(open_s, 2),
            "call_s": round(call_s, 2),
            "errors": errors[:5],
            "ok": len(open_clients) == n and calls_ok == n and alive_after == n,
        }
    finally:
        server.stop()
        server.discard_log()
        server.remove_audit()
