"""Two versions of DataPulse and the SDK's matching baseline, interleaved in the same rounds: throughput and server
CPU per call of each, for measuring one change on a machine whose speed drifts.

``--before`` is another checkout's ``src`` directory (``git worktree add /tmp/before <rev>``), put first on the
``PYTHONPATH`` of the "before" server; the "after" server is this checkout. Each round starts every server afresh
(a process's own speed differs from another's of the same code), warms it up and runs it once, in an order reversed
every other round; every response is checked, and a bad one stops the run.

    .venv/bin/python -m bench.ab --before /tmp/before/src --kind modern --rounds 4 --duration 4 --concurrency 32

Kinds and their baselines: ``modern`` (2026-07-28 ``/mcp``) against the SDK's ``json_response=True,
stateless_http=True`` app, ``session`` (2025-11-25) against the SDK's default app, ``sse`` and ``api`` (the DataPulse
API) against the SDK's ``sse_app()``. Not a report (see ``bench.run`` for that): a line per server, with the median
rate, the median server CPU per call (µs) and each round's rate, then the per-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import Endpoint, run_cell
from bench.servers import Server, pin_client, raise_fd_limit

BASELINES = {"modern": "sdk-http-json", "session": "sdk-http", "sse": "sdk-sse", "api": "sdk-sse"}
"""The SDK server each kind is compared with (`bench.sdk_server` kinds)."""
BASELINE_CLIENTS = {"modern": "modern", "session": "session", "sse": "sse", "api": "sse"}
"""The load client the baseline is driven with (the SDK has no DataPulse API: its ``sse`` stands in)."""


async def compare(before: str, kind: str, rounds: int, duration_s: float, concurrency: int) -> None:
    pin_client()
    raise_fd_limit()
    servers = {
        "before": Server("datapulse", name="before", env={"PYTHONPATH": before}),
        "after": Server("datapulse", name="after"),
        "sdk": Server(BASELINES[kind], name="sdk"),
    }
    clients = {"before": kind, "after": kind, "sdk": BASELINE_CLIENTS[kind]}
    rates: dict[str, list[float]] = {name: [] for name in servers}
    cpu_us: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for round_number in range(rounds):
            # fresh processes every round: a process's own speed (hash seed, memory layout) differs from the
            # next one's of the same code by up to 12%, for its whole life
            for server in servers.values():
                server.stop()
                server.remove_audit()
                server.discard_log()
                server.start()
            for server in servers.values():
                await server.wait_ready()
            for name, server in servers.items():  # warm-up
                await run_cell(clients[name], Endpoint("127.0.0.1", server.port, server.token), concurrency, 1.0)
            order = list(servers) if round_number % 2 == 0 else list(reversed(servers))
            for name in order:
                server = servers[name]
                endpoint = Endpoint("127.0.0.1", server.port, server.token)
                cell = await run_cell(
                    clients[name], endpoint, concurrency, duration_s, server_cpu_seconds=server.cpu_seconds
                )
                if cell.bad or cell.timeouts:
                    raise SystemExit(f"{name}: {cell.bad} bad answers, {cell.timeouts} timeouts: {cell.errors[:3]}")
                rates[name].append(cell.rate)
                cpu_us[name].append(cell.cpu_per_call_us)
        for name in servers:
            print(
                f"{name:7s} rate median {statistics.median(rates[name]):8.0f}/s  "
                f"cpu/call {statistics.median(cpu_us[name]):6.0f} µs  rates {[round(r) for r in rates[name]]}"
            )
        for ours, theirs in (("after", "before"), ("after", "sdk"), ("before", "sdk")):
            ratios = [a / b for a, b in zip(rates[ours], rates[theirs], strict=True)]
            print(f"{ours}/{theirs}: median {statistics.median(ratios):.3f}, per round {[round(r, 3) for r in ratios]}")
    finally:
        for server in reversed(servers.values()):
            server.stop()
            server.remove_audit()
            server.discard_log()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, metavar="SRC", help="the other checkout's src directory")
    parser.add_argument("--kind", choices=sorted(BASELINES), default="modern")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per cell (default 4)")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(compare(args.before, args.kind, args.rounds, args.duration, args.concurrency))


if __name__ == "__main__":
    main()
