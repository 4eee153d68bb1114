"""Where one call's time goes: the DataPulse app driven in-process (no sockets), µs per call, with a profile.

Not a throughput benchmark (see ``bench.run``): it calls the ASGI app directly with a 2026-07-28 ``tools/call``
echo, the same request ``bench.run`` sends, so what it measures is the app's own work per call, without the HTTP
server and the kernel. ``--profile`` prints the functions that take the most time (cProfile, cumulative).

    .venv/bin/python -m bench.layers                   # µs per call, fast path on and off
    .venv/bin/python -m bench.layers --profile 25      # and the 25 costliest functions of each
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

MODERN_BODY = (
    b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi %d"},'
    b'"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
    b'"io.modelcontextprotocol/clientCapabilities":{},'
    b'"io.modelcontextprotocol/clientInfo":{"name":"datapulse-bench","version":"1.0"}}}}'
)
TOKEN = "bench-layers-token-0123456789abcdef"

ASGIApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]],
    Awaitable[None],
]


def _scope(body_len: int) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/mcp",
        "raw_path": b"/mcp",
        "root_path": "",
        "query_string": b"",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
            (b"authorization", b"Bearer " + TOKEN.encode()),
            (b"mcp-protocol-version", b"2026-07-28"),
            (b"mcp-method", b"tools/call"),
            (b"mcp-name", b"echo"),
            (b"content-length", str(body_len).encode()),
        ],
        "state": {},
    }


async def _call(app: ASGIApp, n: int, drop: list[tuple[bytes, bytes]] | None = None) -> bytes:
    body = MODERN_BODY % (n, n)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = _scope(len(body))
    if drop:
        scope["headers"] = [h for h in scope["headers"] if h not in drop]
    await app(scope, receive, send)
    status = sent[0]["status"]
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    if status != 200 or b'"hi %d"' % n not in payload:
        raise RuntimeError(f"bad answer: {status} {payload!r}")
    return payload


LAYERS: list[tuple[str, dict[str, Any]]] = [
    ("bare: no auth, no scopes, no limits, no audit", {"insecure_no_auth": True}),
    ("+ bearer token (static)", {"insecure_no_auth": False, "token": TOKEN}),
    ("+ scope policy", {"scopes": "tool:*=bench:call"}),
    ("+ rate limits (per principal, per tool)", {"rate_limit": "50000/second", "tool_rate_limits": "*=50000/second"}),
    ("+ audit log (file)", {"audit_sinks": "file:{audit}"}),
]
"""Each configuration adds one layer to the one before; the last has everything `bench.run` turns on."""


async def _measure(options: dict[str, Any], fast_path: bool, calls: int, profile: int) -> float:
    from bench.echo_app import app as server
    from datapulse.app import create_app, lifespan, runtime_of
    from datapulse.config import Settings

    settings = Settings(log_level="warning", fast_path=fast_path, **options)
    app: Any = create_app(settings, server=server)
    headers = None if "token" in options else [(b"authorization", b"Bearer " + TOKEN.encode())]
    async with lifespan(runtime_of(app)):
        for i in range(500):
            await _call(app, i, drop=headers)
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        started = time.perf_counter()
        for i in range(calls):
            await _call(app, i, drop=headers)
        elapsed = time.perf_counter() - started
        if profiler is not None:
            profiler.disable()
            stats = pstats.Stats(profiler, stream=sys.stdout)
            stats.sort_stats(os.environ.get("BENCH_SORT", "cumulative")).print_stats(profile)
    return elapsed / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many measurements per row")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the N costliest functions")
    args = parser.parse_args()
    import tempfile

    import uvloop

    audit = Path(tempfile.mkdtemp(prefix="bench-layers-")) / "audit.jsonl"
    options: dict[str, Any] = {}
    rows: list[tuple[str, float, float]] = []
    for label, extra in LAYERS:
        options = {**options, **{k: v.format(audit=audit) if isinstance(v, str) else v for k, v in extra.items()}}
        fast = min(uvloop.run(_measure(options, True, args.calls, 0)) for _ in range(args.rounds))
        full = min(uvloop.run(_measure(options, False, args.calls, 0)) for _ in range(args.rounds))
        rows.append((label, fast, full))
    print("| layers (each row adds one) | fast path µs/call | Δ | full path µs/call | Δ |")
    print("|---|---:|---:|---:|---:|")
    previous: tuple[float, float] | None = None
    for label, fast, full in rows:
        d_fast = "" if previous is None else f"{fast - previous[0]:+.1f}"
        d_full = "" if previous is None else f"{full - previous[1]:+.1f}"
        print(f"| {label} | {fast:.1f} | {d_fast} | {full:.1f} | {d_full} |")
        previous = (fast, full)
    if args.profile:
        uvloop.run(_measure(options, True, args.calls, args.profile))


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
