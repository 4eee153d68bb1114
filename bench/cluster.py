# ruff: noqa: RUF001
"""Cluster forwarding: tools/call on the owning instance vs forwarded to it through Redis, in the same run.

Usage (from the repository root)::

    .venv/bin/python -m bench.cluster                  # full run: 5 rounds x 3 s cells, about 5 min
    .venv/bin/python -m bench.cluster --quick          # smoke run; figures are not for conclusions
    .venv/bin/python -m bench.cluster --only session --rounds 7 --duration 5 --json out.json
    .venv/bin/python -m bench.cluster --layout split   # A on CPU 0, B on CPU 1, client and redis unpinned

One ``redis-server`` and two DataPulse processes, A and B, in cluster mode. Every session is opened on A.
A ``local`` cell sends its calls to A; a ``forwarded`` cell sends them to B, which forwards them to A
through Redis pub/sub and relays the answer. See the "Cluster forwarding" section of bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/cluster.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from bench.harness import Bench, Column, Compare, Defaults, Phase, Target, extra_median
from bench.httpclient import build_request, connect, post_prefix
from bench.loadgen import CLIENTS, ApiClient, CellResult, Client, Endpoint, SessionClient, SseClient, StreamClient
from bench.loadgen import run_cell as run_loadgen_cell
from bench.servers import TOKEN, RedisProcess, Server

PATHS: dict[str, tuple[str, type[Client]]] = {
    "session": ("/mcp 2025-11-25 session (Mcp-Session-Id)", SessionClient),
    "sse": ("/sse 2024-11-05 (stream on A, POST /messages)", SseClient),
    "api": ("DataPulse API (/events on A, POST /message)", ApiClient),
}
THROUGHPUT_GOAL = 0.5
"""Forwarded calls/s ÷ local calls/s, judged at the highest concurrency (saturation)."""
ADDED_P50_GOAL_MS = 2.0
"""Forwarded p50 − local p50, judged at the lowest concurrency (pure latency)."""

LAYOUTS: dict[str, dict[str, Any]] = {
    "shared": {
        "A": "0",
        "B": "0",
        "redis": "1",
        "client": True,
        "note": "A and B both pinned to CPU 0 (both cells get the same server CPU: one core), "
        "redis-server and the load client pinned to CPU 1",
    },
    "split": {
        "A": "0",
        "B": "1",
        "redis": None,
        "client": False,
        "note": "A pinned to CPU 0, B to CPU 1, redis-server and the load client unpinned",
    },
}

TARGETS = tuple(
    Target(f"{path}-{mode}", f"{label}, {mode}", "A" if mode == "local" else "B", f"{path}-{mode}", (path,))
    for path, (label, _client) in PATHS.items()
    for mode in ("local", "fwd")
)
COMPARISONS = tuple(
    compare
    for path, (label, _client) in PATHS.items()
    for compare in (
        Compare(
            f"{label}: fwd ÷ local",
            f"{path}-fwd",
            f"{path}-local",
            THROUGHPUT_GOAL,
            f"{label.split(' (')[0]}: forwarded throughput ≥ {THROUGHPUT_GOAL}× local",
            judge="max",
        ),
        Compare(
            label,
            f"{path}-fwd",
            f"{path}-local",
            ADDED_P50_GOAL_MS,
            f"{label.split(' (')[0]}: forwarding adds ≤ {ADDED_P50_GOAL_MS:g} ms at p50",
            judge="min",
            p50_delta=True,
            row=False,
        ),
    )
)


def forwarded(base: type[Client], owner: Endpoint) -> type[Client]:
    """``base``'s client that opens its session on ``owner`` (A), then sends every later POST to the endpoint it
    was created with (B); the SSE/API streams stay on A."""

    class Forwarded(base):  # type: ignore[valid-type,misc]
        kind = f"{base.kind}-fwd"

        def __init__(self, endpoint: Endpoint) -> None:
            super().__init__(owner)
            self.via = endpoint

        async def setup(self) -> None:
            await super().setup()  # initialize (and the stream) on A, untimed
            via = self.via
            if isinstance(self, StreamClient):
                target = self.prefix.split(b" ", 2)[1].decode("latin-1")  # /messages?session_id=… or /message?…
                if self.post is not None:
                    self.post.close()
                self.endpoint = via
                self.post = await connect(via.host, via.port)
                self.prefix = post_prefix(target, via.authority, via.headers(("Content-Type", "application/json")))
            else:
                assert self.conn is not None
                self.conn.close()
                self.endpoint = via
                self.conn = await connect(via.host, via.port)
                self.prefix = post_prefix(self.path, via.authority, self._headers())

    Forwarded.__name__ = Forwarded.__qualname__ = f"Forwarded{base.__name__}"
    return Forwarded


class WindowProbe:
    """Passed to `run_cell` as ``server_cpu_seconds``: it is called exactly twice, at the start and at the end of
    the timed window, so the two snapshots bound the window (CPU of A, B and redis-server, redis counters)."""

    def __init__(self, a: Server, b: Server, store: RedisProcess) -> None:
        self.a, self.b, self.store = a, b, store
        self.snaps: list[tuple[float, float, float, int, int]] = []

    def __call__(self) -> float:
        commands, publishes = self.store.counters()
        snap = (self.a.cpu_seconds(), self.b.cpu_seconds(), self.store.cpu_seconds(), commands, publishes)
        self.snaps.append(snap)
        return snap[0] + snap[1]

    def fill(self, cell: CellResult) -> None:
        if len(self.snaps) != 2:
            return
        (a0, b0, r0, c0, p0), (a1, b1, r1, c1, p1) = self.snaps
        window = cell.duration_s
        cell.extra.update(a_cpu=(a1 - a0) / window, b_cpu=(b1 - b0) / window, aux_cpu=(r1 - r0) / window)
        if cell.calls:
            # minus the one INFO of the closing snapshot (the opening one was counted before it)
            cell.extra["redis_cmds_per_call"] = (c1 - c0 - 1) / cell.calls
            cell.extra["publish_per_call"] = (p1 - p0) / cell.calls
            cell.extra["abr_cpu_us_per_call"] = (a1 - a0 + b1 - b0 + r1 - r0) / cell.calls * 1e6


async def health(ep: Endpoint) -> dict[str, Any]:
    conn = await connect(ep.host, ep.port)
    try:
        response = await asyncio.wait_for(conn.request(build_request("GET", "/health", ep.authority, ep.headers())), 10)
        return dict(json.loads(response.body))
    finally:
        conn.close()


class ClusterPhase(Phase):
    verify_s = 0.3

    async def started(self) -> None:
        a, b = self.servers["A"], self.servers["B"]
        self.ep_a = Endpoint("127.0.0.1", a.port, TOKEN)
        self.ep_b = Endpoint("127.0.0.1", b.port, TOKEN)
        health_a, health_b = await health(self.ep_a), await health(self.ep_b)
        if not health_a.get("node_id") or health_a.get("node_id") == health_b.get("node_id"):
            raise SystemExit(f"the instances are not two cluster nodes: A {health_a}, B {health_b}")
        servers = self.bench.report["servers"]
        servers["A"]["note"] = f"owner, node {health_a.get('node_id')}"
        servers["B"]["note"] = f"forwarder, node {health_b.get('node_id')}"
        for path, (_label, client) in PATHS.items():
            CLIENTS[f"{path}-local"] = client
            CLIENTS[f"{path}-fwd"] = forwarded(client, self.ep_a)

    async def cell(self, target: Target, conc: int, duration_s: float, timed: bool) -> CellResult:
        store = self.servers["redis"]
        assert isinstance(store, RedisProcess)
        probe = WindowProbe(self.servers["A"], self.servers["B"], store)
        ep = self.ep_a if target.server == "A" else self.ep_b
        result = await run_loadgen_cell(target.kind, ep, conc, duration_s, server_cpu_seconds=probe)
        probe.fill(result)
        return result

    def verify_problem(self, target: Target, cell: CellResult) -> str | None:
        if cell.flagged:
            return f"{cell.errors}"
        if target.server == "B" and not cell.extra.get("publish_per_call", 0) >= 2:
            return f"forwarded calls did not go through Redis pub/sub ({cell.summary()})"
        return None

    def describe(self, cell: CellResult) -> str:
        e = cell.extra
        return (
            f"  A {e.get('a_cpu', 0):4.0%} B {e.get('b_cpu', 0):4.0%} redis {e.get('aux_cpu', 0):4.0%}"
            f"  {e.get('publish_per_call', float('nan')):.1f} PUBLISH/call"
            f" {e.get('redis_cmds_per_call', float('nan')):.1f} redis cmds/call"
        )

    async def finished(self) -> None:
        self.bench.report["health_after"] = {"A": await health(self.ep_a), "B": await health(self.ep_b)}


class Cluster(Bench):
    prog = "bench.cluster"
    title = "DataPulse cluster forwarding: local vs forwarded tools/call, same run"
    defaults = Defaults(rounds=5, duration=3.0, warmup=1.5, concurrency="1,32")
    quick = Defaults(rounds=1, duration=0.8, warmup=0.3)
    targets = TARGETS
    comparisons = COMPARISONS
    ours, theirs, ratio_header = "forwarded", "local", "fwd ÷ local"
    percentiles = (0.5, 0.9, 0.99)
    order_note = "; the local and forwarded cells of a path run back to back, in alternating order"
    columns = (
        Column("A CPU", extra_median("a_cpu", "{:.0%}")),
        Column("B CPU", extra_median("b_cpu", "{:.0%}")),
        Column("redis CPU", extra_median("aux_cpu", "{:.0%}")),
        Column("A+B+redis CPU µs/call", extra_median("abr_cpu_us_per_call", "{:,.0f}")),
        Column("redis cmds/call", extra_median("redis_cmds_per_call")),
        Column("PUBLISH/call", extra_median("publish_per_call")),
    )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--layout", choices=sorted(LAYOUTS), default="shared", help="CPU pinning (default shared)")

    def check_args(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
        args.concurrencies.sort()

    def pin_client(self) -> bool:
        return bool(LAYOUTS[self.args.layout]["client"])

    def phases(self) -> list[Phase]:
        layout = LAYOUTS[self.args.layout]
        store = RedisProcess(cpus=layout["redis"])
        env = {"DATAPULSE_REDIS_URL": store.url, "DATAPULSE_REQUEST_STATE_KEYS": secrets.token_urlsafe(48)}
        # the token only, as in every cluster figure so far (no scopes, rate limits or audit: see bench/README.md)
        a, b = (Server("datapulse", name=n, cpus=layout[n], env=env, protections=False) for n in ("A", "B"))
        return [
            ClusterPhase(
                self,
                TARGETS,
                servers={"redis": store, "A": a, "B": b},
                support=("redis",),
                blocks=[(f"{path}-local", f"{path}-fwd") for path in PATHS],
                pinned=self.args.layout == "shared",
            )
        ]

    def header_lines(self) -> list[str]:
        return [
            f"* Layout `{self.args.layout}`: {LAYOUTS[self.args.layout]['note']}; redis-py {redis.__version__}",
            "* Every session is opened on A. local = calls sent to A; forwarded = calls sent to B, which forwards "
            "them to A through Redis pub/sub (on /sse and the API the result event arrives on the stream held on A). "
            "Server CPU = A + B; other load = CPU busy beyond A, B, redis-server and the client.",
        ]

    def footer_lines(self) -> list[str]:
        after = self.report.get("health_after")
        if not after:
            return []
        held = {name: sum((h.get("sessions") or {}).values()) for name, h in after.items()}
        warn = "" if held["B"] == 0 else " ⚠"
        return [
            f"After the run (/health): A holds {held['A']} sessions {after['A'].get('sessions')}, "
            f"B holds {held['B']}{warn} (B must hold none: it never took a session over). The DataPulse API client "
            "does not end its sessions, so they stay on A until their idle TTL."
        ]

    def problems(self) -> list[str]:
        after = self.report.get("health_after")
        if after and sum((after["B"].get("sessions") or {}).values()):
            return [f"B holds sessions: {after['B'].get('sessions')}"]
        return []


def main(argv: list[str] | None = None) -> None:
    Cluster.main(argv)


if __name__ == "__main__":
    main()
