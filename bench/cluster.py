# ruff: noqa: RUF001
"""Cluster forwarding: tools/call on the owning instance vs forwarded to it through Redis, in the same run.

Usage (from the repository root)::

    .venv/bin/python -m bench.cluster                  # full run: 5 rounds x 3 s cells, about 5 min
    .venv/bin/python -m bench.cluster --quick          # smoke run, < 90 s; figures are not for conclusions
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
import os
import platform
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/cluster.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import redis
import uvloop

from bench.httpclient import build_request, connect, post_prefix
from bench.loadgen import (
    CLIENTS,
    ApiClient,
    CellResult,
    Client,
    Endpoint,
    SessionClient,
    SseClient,
    StreamClient,
    run_cell,
)
from bench.run import fmt_ratio, log, spread
from bench.servers import REPO, TOKEN, Server, _clean_env, free_port, pin_client, raise_fd_limit, versions, wait_idle

PATHS: dict[str, tuple[str, type[Client]]] = {
    "session": ("/mcp 2025-11-25 session (Mcp-Session-Id)", SessionClient),
    "sse": ("/sse 2024-11-05 (stream on A, POST /messages)", SseClient),
    "api": ("DataPulse API (/events on A, POST /message)", ApiClient),
}
MODES = ("local", "forwarded")
THROUGHPUT_GOAL = 0.5
"""Forwarded calls/s ÷ local calls/s, judged at the highest concurrency (saturation)."""
ADDED_P50_GOAL_MS = 2.0
"""Forwarded p50 − local p50, judged at the lowest concurrency (pure latency)."""

LAYOUTS = {
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


# --- processes ----------------------------------------------------------------------------------------------------
@dataclass
class Instance(Server):
    """One DataPulse process in cluster mode (``datapulse serve`` with the Redis URL and request-state keys)."""

    name: str = "A"
    cpus: str | None = "0"
    cluster_env: dict[str, str] = field(default_factory=dict)

    def command(self) -> str:
        names = " ".join(f"{k}=***" for k in ("DATAPULSE_TOKEN", *self.cluster_env))
        pin = f"taskset -c {self.cpus} " if self.cpus else ""
        return f"{names} {pin}datapulse {' '.join(self.argv[1:])}"

    def start(self) -> None:
        env = _clean_env()
        env["DATAPULSE_TOKEN"] = TOKEN
        env.update(self.cluster_env)
        fd, path = tempfile.mkstemp(prefix=f"bench-cluster-{self.name}-", suffix=".log")
        self.log_path = Path(path)
        argv = ["taskset", "-c", self.cpus, *self.argv] if self.cpus else self.argv
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        os.close(fd)
        self.ps = psutil.Process(self.proc.pid)


class RedisProcess:
    """A throw-away ``redis-server`` (no persistence) on a free loopback port."""

    def __init__(self, cpus: str | None) -> None:
        self.port = free_port()
        self.cpus = cpus
        self.dir = tempfile.mkdtemp(prefix="bench-cluster-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> str:
        pin = f"taskset -c {self.cpus} " if self.cpus else ""
        return f'{pin}redis-server --port {self.port} --bind 127.0.0.1 --save "" --appendonly no'

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not on PATH")
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", self.dir]
        if self.cpus:
            argv = ["taskset", "-c", self.cpus, *argv]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client.ping():
                    return
            except redis.RedisError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def cpu_seconds(self) -> float:
        assert self.ps is not None
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def counters(self) -> tuple[int, int]:
        """(commands processed, PUBLISH commands) since start."""
        stats = self.client.info("commandstats")
        total = sum(int(v["calls"]) for v in stats.values())
        return total, int(stats.get("cmdstat_publish", {}).get("calls", 0))

    def version(self) -> str:
        return str(self.client.info("server").get("redis_version", "?"))


# --- clients ------------------------------------------------------------------------------------------------------
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


def kind_of(path: str, mode: str) -> str:
    return path if mode == "local" else f"{path}-fwd"


# --- measuring ----------------------------------------------------------------------------------------------------
@dataclass
class Snapshot:
    a: float
    b: float
    redis: float
    commands: int
    publishes: int


@dataclass
class Cell:
    path: str
    mode: str
    result: CellResult
    a_cpu: float = 0.0
    b_cpu: float = 0.0
    redis_cpu: float = 0.0
    commands_per_call: float = float("nan")
    publishes_per_call: float = float("nan")

    @property
    def other_cpu(self) -> float:
        """CPU busy during the window beyond A, B, redis-server and the client: other processes, kernel work."""
        ours = self.a_cpu + self.b_cpu + self.redis_cpu + self.result.client_cpu
        return max(0.0, sum(self.result.cpu_busy) - ours)

    def summary(self) -> dict[str, Any]:
        return {
            **self.result.summary(),
            "other_cpu": round(self.other_cpu, 3),
            "p90_ms": round(self.result.percentile(0.90), 3),
            "a_cpu": round(self.a_cpu, 3),
            "b_cpu": round(self.b_cpu, 3),
            "redis_cpu": round(self.redis_cpu, 3),
            "redis_commands_per_call": round(self.commands_per_call, 2),
            "redis_publishes_per_call": round(self.publishes_per_call, 2),
        }


class WindowProbe:
    """Passed to `run_cell` as ``server_cpu_seconds``: it calls it exactly twice, at the start and at the end of the
    timed window, so the two snapshots bound the window (CPU of A, B and redis-server, redis command counters)."""

    def __init__(self, a: Instance, b: Instance, store: RedisProcess) -> None:
        self.a, self.b, self.store = a, b, store
        self.snaps: list[Snapshot] = []

    def __call__(self) -> float:
        commands, publishes = self.store.counters()
        snap = Snapshot(self.a.cpu_seconds(), self.b.cpu_seconds(), self.store.cpu_seconds(), commands, publishes)
        self.snaps.append(snap)
        return snap.a + snap.b

    def fill(self, cell: Cell) -> None:
        if len(self.snaps) != 2:
            return
        first, last = self.snaps
        window = cell.result.duration_s
        cell.a_cpu = (last.a - first.a) / window
        cell.b_cpu = (last.b - first.b) / window
        cell.redis_cpu = (last.redis - first.redis) / window
        calls = cell.result.calls
        if calls:
            # minus the one INFO of the closing snapshot (the opening one was counted before it)
            cell.commands_per_call = (last.commands - first.commands - 1) / calls
            cell.publishes_per_call = (last.publishes - first.publishes) / calls


async def health(ep: Endpoint) -> dict[str, Any]:
    conn = await connect(ep.host, ep.port)
    try:
        response = await asyncio.wait_for(conn.request(build_request("GET", "/health", ep.authority, ep.headers())), 10)
        return dict(json.loads(response.body))
    finally:
        conn.close()


async def measure(args: argparse.Namespace, report: dict[str, Any]) -> dict[tuple[str, str, int], list[Cell]]:
    layout = LAYOUTS[args.layout]
    store = RedisProcess(layout["redis"])
    store.start()
    cluster_env = {
        "DATAPULSE_REDIS_URL": store.url,
        "DATAPULSE_REQUEST_STATE_KEYS": secrets.token_urlsafe(48),
    }
    a = Instance("datapulse", name="A", cpus=layout["A"], cluster_env=cluster_env)
    b = Instance("datapulse", name="B", cpus=layout["B"], cluster_env=cluster_env)
    instances = [a, b]
    try:
        for inst in instances:
            inst.start()
        for inst in instances:
            await inst.wait_ready()
        ep_a = Endpoint("127.0.0.1", a.port, TOKEN)
        ep_b = Endpoint("127.0.0.1", b.port, TOKEN)
        health_a, health_b = await health(ep_a), await health(ep_b)
        report["processes"] = {
            "redis": {"command": store.command(), "version": store.version()},
            "A": {"command": a.command(), "fast_stack": a.fast_stack(), "node_id": health_a.get("node_id")},
            "B": {"command": b.command(), "fast_stack": b.fast_stack(), "node_id": health_b.get("node_id")},
        }
        if not health_a.get("node_id") or health_a.get("node_id") == health_b.get("node_id"):
            raise SystemExit(f"the instances are not two cluster nodes: A {health_a}, B {health_b}")
        for path in args.paths:
            CLIENTS[kind_of(path, "forwarded")] = forwarded(PATHS[path][1], ep_a)
        endpoints = {"local": ep_a, "forwarded": ep_b}
        everyone: list[Any] = [a, b, store]

        async def cell(path: str, mode: str, conc: int, duration: float) -> Cell:
            probe = WindowProbe(a, b, store)
            result = await run_cell(kind_of(path, mode), endpoints[mode], conc, duration, server_cpu_seconds=probe)
            out = Cell(path, mode, result)
            probe.fill(out)
            return out

        log("verify: one client per cell kind for 0.3 s, every answer checked; forwarded calls must cross Redis")
        for path in args.paths:
            for mode in MODES:
                await wait_idle(everyone)
                c = await cell(path, mode, 1, 0.3)
                log(
                    f"  {path:8} {mode:9} {c.result.ok} ok / {c.result.bad} bad, "
                    f"{c.publishes_per_call:.1f} PUBLISH/call, {c.commands_per_call:.1f} redis cmds/call"
                )
                if c.result.flagged:
                    raise SystemExit(
                        f"{path} {mode} failed verification: {c.result.errors}\n"
                        f"A log:\n{a.log_tail()}\nB log:\n{b.log_tail()}"
                    )
                if mode == "forwarded" and not c.publishes_per_call >= 2:
                    raise SystemExit(f"{path}: forwarded calls did not go through Redis pub/sub ({c.summary()})")
        if args.warmup > 0:
            log(f"warm-up: {args.warmup:g} s per cell kind at c={max(args.concurrencies)}")
            for path in args.paths:
                for mode in MODES:
                    await wait_idle(everyone)
                    await cell(path, mode, max(args.concurrencies), args.warmup)

        cells: dict[tuple[str, str, int], list[Cell]] = {
            (p, m, c): [] for p in args.paths for m in MODES for c in args.concurrencies
        }
        for rnd in range(args.rounds):
            paths = args.paths[rnd % len(args.paths) :] + args.paths[: rnd % len(args.paths)]
            concs = args.concurrencies if rnd % 2 == 0 else list(reversed(args.concurrencies))
            log(f"round {rnd + 1}/{args.rounds}")
            turn = rnd
            for conc in concs:
                for path in paths:
                    modes = MODES if turn % 2 == 0 else tuple(reversed(MODES))
                    turn += 1
                    for mode in modes:
                        await wait_idle(everyone)
                        c = await cell(path, mode, conc, args.duration)
                        cells[(path, mode, conc)].append(c)
                        r = c.result
                        flag = "  FLAGGED " + "; ".join(r.errors[:2]) if r.flagged else ""
                        log(
                            f"  c={conc:<3} {path:8} {mode:9} {r.rate:8,.0f} calls/s  p50 {r.percentile(0.5):6.2f}"
                            f"  p99 {r.percentile(0.99):6.2f} ms  A {c.a_cpu:4.0%} B {c.b_cpu:4.0%}"
                            f" redis {c.redis_cpu:4.0%} cli {r.client_cpu:4.0%} other {c.other_cpu:4.0%}"
                            f"  {r.ok} ok/{r.bad} bad{flag}"
                        )
        health_a, health_b = await health(ep_a), await health(ep_b)
        report["health_after"] = {"A": health_a, "B": health_b}
        return cells
    finally:
        for inst in instances:
            inst.stop()
        store.stop()
        for inst in instances:
            text = inst.log_tail(1_000_000)
            if "Traceback" in text or "ERROR" in text or "WARNING" in text:
                report.setdefault("server_logs", {})[inst.name] = text[-3000:]
                log(f"{inst.name} logged warnings or errors: {inst.log_path}")
            else:
                inst.discard_log()


# --- report -------------------------------------------------------------------------------------------------------
def pct(runs: list[Cell], q: float) -> float:
    return statistics.median(c.result.percentile(q) for c in runs)


def lat3(runs: list[Cell]) -> str:
    return f"{pct(runs, 0.5):.2f} / {pct(runs, 0.9):.2f} / {pct(runs, 0.99):.2f}"


def okbad(runs: list[Cell]) -> str:
    r = [c.result for c in runs]
    return f"{sum(x.ok for x in r):,}/{sum(x.bad + x.timeouts + x.setup_failed for x in r)}"


def rate_ratios(cells: dict[tuple[str, str, int], list[Cell]], path: str, conc: int) -> list[float]:
    local, fwd = cells[(path, "local", conc)], cells[(path, "forwarded", conc)]
    return [f.result.rate / lo.result.rate for lo, f in zip(local, fwd, strict=True) if lo.result.rate > 0]


def p50_deltas(cells: dict[tuple[str, str, int], list[Cell]], path: str, conc: int) -> list[float]:
    local, fwd = cells[(path, "local", conc)], cells[(path, "forwarded", conc)]
    return [f.result.percentile(0.5) - lo.result.percentile(0.5) for lo, f in zip(local, fwd, strict=True)]


def fmt_delta(values: list[float]) -> str:
    med, lo, hi = spread(values)
    return f"**{med:+.2f}** [{lo:+.2f}–{hi:+.2f}]"


def flagged(cells: dict[tuple[str, str, int], list[Cell]], path: str, conc: int) -> bool:
    return any(c.result.flagged for m in MODES for c in cells[(path, m, conc)])


def render(args: argparse.Namespace, report: dict[str, Any], cells: dict[tuple[str, str, int], list[Cell]]) -> str:
    v = report["versions"]
    procs = report["processes"]
    out = [
        "# DataPulse cluster forwarding: local vs forwarded tools/call, same run",
        "",
        f"* Versions: python {v['python']}, datapulse {v['datapulse']}, mcp {v['mcp']}, uvicorn {v['uvicorn']}, "
        f"uvloop {v['uvloop']}, httptools {v['httptools']}, redis-server {procs['redis']['version']}, "
        f"redis-py {redis.__version__}; {platform.platform()}; {os.cpu_count()} CPUs",
        f"* Command: `{report['command']}`",
        f"* Rounds: {args.rounds} × {args.duration:g} s per cell at concurrency "
        f"{', '.join(map(str, args.concurrencies))}; local and forwarded cells of a path run back to back, "
        f"alternating which goes first; idle wait before every cell",
        f"* Layout `{args.layout}`: {LAYOUTS[args.layout]['note']}; {report['pinning']}; fd limit {report['fd_limit']}",
        f"* redis: `{procs['redis']['command']}`",
        f"* A (owner, node {procs['A']['node_id']}): `{procs['A']['command']}` ({procs['A']['fast_stack']} loaded)",
        f"* B (forwarder, node {procs['B']['node_id']}): `{procs['B']['command']}` ({procs['B']['fast_stack']} loaded)",
        "* Every session is opened on A. local = calls sent to A; forwarded = calls sent to B, which forwards them "
        "to A through Redis pub/sub (on /sse and the API the result event arrives on the stream held on A).",
        "",
        "## Results (median over rounds; ratio and Δ from the two cells of the same round)",
        "",
        "| path | c | local calls/s | forwarded calls/s | fwd ÷ local [min–max] | local p50 / p90 / p99 ms "
        "| fwd p50 / p90 / p99 ms | Δp50 ms [min–max] | local ok/bad | fwd ok/bad |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    add = out.append
    for path in args.paths:
        for conc in args.concurrencies:
            local, fwd = cells[(path, "local", conc)], cells[(path, "forwarded", conc)]
            warn = " ⚠ bad responses" if flagged(cells, path, conc) else ""
            add(
                f"| {PATHS[path][0]}{warn} | {conc} "
                f"| {statistics.median(c.result.rate for c in local):,.0f} "
                f"| {statistics.median(c.result.rate for c in fwd):,.0f} "
                f"| {fmt_ratio(rate_ratios(cells, path, conc))} | {lat3(local)} | {lat3(fwd)} "
                f"| {fmt_delta(p50_deltas(cells, path, conc))} | {okbad(local)} | {okbad(fwd)} |"
            )
    add("")
    add("## Where the CPU goes (median over rounds; % of one CPU during the window)")
    add("")
    add(
        "| path | c | cell | calls/s [min–max] | A CPU | B CPU | redis CPU | client CPU | other CPU "
        "| A+B+redis CPU µs/call | redis cmds/call | PUBLISH/call |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for path in args.paths:
        for conc in args.concurrencies:
            for mode in MODES:
                runs = cells[(path, mode, conc)]
                med, lo, hi = spread([c.result.rate for c in runs])
                us = statistics.median(
                    (c.a_cpu + c.b_cpu + c.redis_cpu) * 1e6 / c.result.rate for c in runs if c.result.rate > 0
                )
                add(
                    f"| {path} | {conc} | {mode} | {med:,.0f} [{lo:,.0f}–{hi:,.0f}] "
                    f"| {statistics.median(c.a_cpu for c in runs):.0%} "
                    f"| {statistics.median(c.b_cpu for c in runs):.0%} "
                    f"| {statistics.median(c.redis_cpu for c in runs):.0%} "
                    f"| {statistics.median(c.result.client_cpu for c in runs):.0%} "
                    f"| {statistics.median(c.other_cpu for c in runs):.0%} | {us:,.0f} "
                    f"| {statistics.median(c.commands_per_call for c in runs):.2f} "
                    f"| {statistics.median(c.publishes_per_call for c in runs):.2f} |"
                )
    add("")
    add("## Targets")
    add("")
    for line in goals(args, cells):
        add(f"* {line}")
    total_ok = sum(c.result.ok for runs in cells.values() for c in runs)
    total_bad = sum(c.result.bad + c.result.timeouts + c.result.setup_failed for runs in cells.values() for c in runs)
    add("")
    add(f"Correctness: {total_ok:,} calls checked ok, {total_bad} bad (every response parsed: id, echo text, no error)")
    after = report.get("health_after", {})
    if after:
        held = {name: sum((h.get("sessions") or {}).values()) for name, h in after.items()}
        add(
            f"After the run (/health): A holds {held['A']} sessions {after['A'].get('sessions')}, "
            f"B holds {held['B']} (B must hold none: it never took a session over). The DataPulse API client does "
            "not end its sessions, so they stay on A until their idle TTL."
        )
    if report.get("server_logs"):
        add(f"Server logs with warnings or errors: {', '.join(report['server_logs'])} (see the JSON file).")
    add(f"Wall time: {report['wall_s']:.0f} s.")
    return "\n".join(out)


def goals(args: argparse.Namespace, cells: dict[tuple[str, str, int], list[Cell]]) -> list[str]:
    lines = []
    top, low = max(args.concurrencies), min(args.concurrencies)
    for path in args.paths:
        name = PATHS[path][0].split(" (")[0]
        bad = any(flagged(cells, path, c) for c in args.concurrencies)
        note = " (bad responses in a cell)" if bad else ""
        ratio = statistics.median(rate_ratios(cells, path, top))
        others = ", ".join(
            f"c={c}: {statistics.median(rate_ratios(cells, path, c)):.2f}×" for c in args.concurrencies if c != top
        )
        verdict = "MET" if ratio >= THROUGHPUT_GOAL and not bad else "NOT MET"
        lines.append(
            f"{name}: forwarded throughput ≥ {THROUGHPUT_GOAL}× local (judged at c={top}): {ratio:.2f}× "
            f"→ **{verdict}**{note}" + (f" (info: {others})" if others else "")
        )
        delta = statistics.median(p50_deltas(cells, path, low))
        others = ", ".join(
            f"c={c}: {statistics.median(p50_deltas(cells, path, c)):+.2f} ms" for c in args.concurrencies if c != low
        )
        verdict = "MET" if delta <= ADDED_P50_GOAL_MS and not bad else "NOT MET"
        lines.append(
            f"{name}: forwarding adds ≤ {ADDED_P50_GOAL_MS:g} ms at p50 (judged at c={low}): {delta:+.2f} ms "
            f"→ **{verdict}**{note}" + (f" (info, queueing included: {others})" if others else "")
        )
    return lines


# --- main ---------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="measurement rounds (default 5; quick: 1)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per cell (default 3; quick: 0.8)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per cell kind (default 1.5)")
    parser.add_argument("--concurrency", default="1,32", help="comma-separated client counts (default 1,32)")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="shared", help="CPU pinning (default shared)")
    parser.add_argument("--quick", action="store_true", help="short smoke run (< 90 s), not for conclusions")
    parser.add_argument(
        "--only", action="append", default=[], help=f"paths (repeatable or comma-separated): {', '.join(PATHS)}"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every raw figure to this JSON file")
    args = parser.parse_args(argv)
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 5)
    args.duration = args.duration if args.duration is not None else (0.8 if args.quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.5)
    args.concurrencies = sorted({int(c) for c in args.concurrency.split(",") if c})
    only = {p.strip() for item in args.only for p in item.split(",") if p.strip()}
    if only - set(PATHS):
        parser.error(f"--only: unknown path(s) {', '.join(sorted(only - set(PATHS)))}; choose from {', '.join(PATHS)}")
    args.paths = [p for p in PATHS if not only or p in only]
    if args.rounds < 1 or not args.concurrencies:
        parser.error("need at least one round and one concurrency")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    report: dict[str, Any] = {
        "versions": versions(),
        "command": shlex.join([sys.executable, "-m", "bench.cluster", *(sys.argv[1:] if argv is None else argv)]),
        "pinning": pin_client() if LAYOUTS[args.layout]["client"] else "client not pinned",
        "fd_limit": raise_fd_limit()[0],
        "config": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrencies": args.concurrencies,
            "layout": args.layout,
            "paths": args.paths,
        },
    }
    cells = uvloop.run(measure(args, report))
    report["wall_s"] = time.monotonic() - started
    print(render(args, report, cells), flush=True)
    if args.json is not None:
        report["cells"] = {f"{p}/{m}@{c}": [x.summary() for x in runs] for (p, m, c), runs in cells.items()}
        report["ratios"] = {f"{p}@{c}": rate_ratios(cells, p, c) for p in args.paths for c in args.concurrencies}
        report["p50_deltas_ms"] = {f"{p}@{c}": p50_deltas(cells, p, c) for p in args.paths for c in args.concurrencies}
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
