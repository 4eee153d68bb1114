"""Where a DataPulse server's CPU goes under load: py-spy samples of a real server, grouped by layer, in µs per call.

Starts DataPulse as ``bench.run`` does (pinned to CPU 0, every layer on: `bench.servers.datapulse_env`), drives it
with the bench's own load client for a warm-up and then ``--duration`` seconds at ``--concurrency``, while py-spy
(``--py-spy``, not a project dependency: ``python3 -m venv /tmp/tools && /tmp/tools/bin/pip install py-spy``)
samples it. Each sample goes to the layer of its innermost matching frame (`CATEGORIES`); a layer's share of the
samples times the measured µs per call (1 / calls per second, the server at one full CPU) is its cost.

    .venv/bin/python -m bench.profile --py-spy /tmp/tools/bin/py-spy              # modern (2026-07-28) tools/call
    .venv/bin/python -m bench.profile --py-spy /tmp/tools/bin/py-spy --kind api   # the DataPulse API

To compare with older code, ``--against <checkout>/src`` profiles both, interleaved (this code, that code, that code,
this code, ... for ``--runs`` runs each: the machine's drift then falls on both columns alike), and prints each
layer's mean per column.

    .venv/bin/python -m bench.profile --py-spy /tmp/tools/bin/py-spy --against /tmp/before/src --runs 2
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvloop

from bench.loadgen import Endpoint, run_cell
from bench.servers import Server, pin_client

CATEGORIES = [
    ("audit log", ["Auditor.record", "FileSink", "AuditRecord", "arguments_digest"]),
    ("rate limits", ["RateLimiter", "limits/"]),
    ("metrics", ["prometheus_client"]),
    (
        "tool: validation, call, conversion (SDK Tool.run)",
        ["Tool.run", "FuncMetadata", "ToolManager", "call_plain_tool"],
    ),
    ("result shaping (SDK _serialize)", ["_serialize", "serialize_server_result", "_stamp_server_info"]),
    (
        "SDK kernel: context, session, middleware chain",
        [
            "ServerRunner",
            "serve_one",
            "runner.py",
            "_otel",
            "request_state.py",
            "ServerSession",
            "Connection.",
            "connection.py",
            "context.py",
            "Context.",
            "_handle_call_tool",
            "MCPServer.call_tool",
            "validate_client_request",
            "model_validate",
        ],
    ),
    ("scopes + authorization", ["AuthorizationMiddleware", "authorization.py", "scopes.py"]),
    ("fast path planning", ["FastPath.plan", "plain_tool"]),
    (
        "authentication, Host/Origin",
        ["SecurityMiddleware", "Authenticator", "StaticTokenVerifier", "hosts.py", "resource.py", "static.py"],
    ),
    (
        "observation, ordering (ours)",
        ["ObservationMiddleware", "in_turn", "OrderingMiddleware", "FastPath.serve", "FastPath._"],
    ),
    (
        "2026 request checks (ladder, envelope)",
        ["_ladder", "classify_inbound_request", "inbound.py", "find_duplicated"],
    ),
    ("response writing (ours + uvicorn send)", ["send_bytes", "ModernExchange.finish", "RequestResponseCycle.send"]),
    ("transport: body, JSON, exchange", ["modern.py", "_http.py", "_jsonrpc", "_negotiation", "streamable.py"]),
    ("routing, log context, tracing check", ["app.py", "logs.py", "tracing.py", "fastapi", "starlette"]),
    ("uvicorn, httptools, event loop", ["uvicorn", "httptools", "asyncio", "runners.py", "anyio"]),
]


"""(layer, substrings of a frame): a sample belongs to the layer of its innermost frame that matches."""


def category(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        for name, parts in CATEGORIES:
            if any(part in frame for part in parts):
                return name
    return "other"


def tally(raw: Path) -> tuple[collections.Counter[str], int]:
    """Samples per layer in a py-spy ``--format raw`` file, and the total; idle timer threads are left out."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "Timer.run" in stack or "Condition.wait" in stack:
            continue
        counts[category(stack)] += int(n)
        total += int(n)
    return counts, total


async def profile(
    py_spy: str, kind: str, concurrency: int, duration_s: float, raw: Path, source: str | None = None
) -> float:
    """Profile one DataPulse server (of this checkout, or of the ``source`` directory put first on its
    ``PYTHONPATH``) under ``kind`` load at ``concurrency`` for ``duration_s``; py-spy's raw samples go to ``raw``.
    Returns the calls per second measured while sampling."""
    server = Server("datapulse", env={"PYTHONPATH": source} if source else {})
    server.start()
    try:
        await server.wait_ready()
        pin_client()
        assert server.proc is not None
        endpoint = Endpoint("127.0.0.1", server.port, server.token)
        await run_cell(kind, endpoint, concurrency, 2.0)
        argv = [py_spy, "record", "-p", str(server.proc.pid), "-d", str(int(duration_s)), "-r", "200"]
        spy = await asyncio.create_subprocess_exec(
            *argv, "-f", "raw", "-o", str(raw), "--nonblocking", stdout=subprocess.DEVNULL
        )
        cell = await run_cell(kind, endpoint, concurrency, duration_s)
        await spy.wait()
        if cell.bad or cell.timeouts:
            raise SystemExit(f"bad answers during the profile: {cell.bad} bad, {cell.timeouts} timeouts")
        return cell.calls / duration_s
    finally:
        server.stop()


def per_layer_us(raw: Path, rate: float) -> dict[str, float]:
    """Each layer's µs per call: its share of the samples in ``raw`` times 1 / ``rate``."""
    counts, total = tally(raw)
    return {name: counts[name] / total * 1e6 / rate for name in [name for name, _ in CATEGORIES] + ["other"]}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--py-spy", required=True, help="the py-spy executable")
    parser.add_argument("--kind", default="modern", help="bench.loadgen client kind (default modern)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=12.0, help="seconds sampled (default 12)")
    parser.add_argument("--against", metavar="SRC", help="also profile the code in SRC (a checkout's src directory)")
    parser.add_argument("--runs", type=int, default=1, help="runs per column, interleaved with --against (default 1)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    columns: dict[str, list[dict[str, float]]] = {"this checkout": []}
    if args.against:
        columns[args.against] = []
    order = list(columns)
    for run in range(args.runs):
        for column in order if run % 2 == 0 else reversed(order):
            raw = Path(tempfile.mkdtemp(prefix="bench-profile-")) / "samples.txt"
            source = None if column == "this checkout" else column
            rate = uvloop.run(profile(args.py_spy, args.kind, args.concurrency, args.duration, raw, source))
            print(f"{column}: {args.kind} at c={args.concurrency}: {rate:,.0f} calls/s; samples in {raw}")
            columns[column].append(per_layer_us(raw, rate))
    print(f"| where the server's CPU goes | {' | '.join(f'{name} (µs/call)' for name in columns)} |")
    print("|---|" + "---:|" * len(columns))
    for layer in [name for name, _ in CATEGORIES] + ["other"]:
        cells = " | ".join(f"{sum(run[layer] for run in runs) / len(runs):.0f}" for runs in columns.values())
        print(f"| {layer} | {cells} |")
    totals = " | ".join(f"**{sum(sum(run.values()) for run in runs) / len(runs):.0f}**" for runs in columns.values())
    print(f"| **total** (1 / calls per second) | {totals} |")


if __name__ == "__main__":
    main()
