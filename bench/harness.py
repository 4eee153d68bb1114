# ruff: noqa: RUF001, RUF002
"""One harness for the same-run benchmarks: command line, round scheduler, result model, report and JSON.

A benchmark is a `Bench` subclass that declares its targets (which client kind drives which server), its
comparisons (one target's calls/s ÷ another's, measured in the same round, with an optional goal) and its
defaults; the harness starts the servers, verifies every target, warms up, runs the rounds, and prints one
markdown report. A minimal one::

    class Example(Bench):
        prog = "bench.example"
        title = "DataPulse vs the SDK's sse_app"
        targets = (
            Target("dp-sse", "DataPulse /sse 2024-11-05", server="datapulse", kind="sse"),
            Target("sdk-sse", "SDK sse_app()", server="sdk-sse", kind="sse"),
        )
        comparisons = (Compare("/sse ÷ SDK sse_app", "dp-sse", "sdk-sse", goal=2.0),)

    if __name__ == "__main__":
        Example.main()

Servers are `bench.servers.Server` objects (by default ``Server(target.server)``); a `Phase` groups servers and
the targets measured on them, and its methods are the hooks for what a benchmark measures on its own (a custom
cell, a check at verification, figures added to a cell's ``extra``). See "The harness" in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import uvloop

from bench.loadgen import CellResult, Endpoint, run_cell
from bench.servers import REPO, Server, log, pin_client, raise_fd_limit, versions, wait_idle

T = TypeVar("T")
Runs = list[CellResult]
Metric = Callable[[CellResult], float]


# --- declarations -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One thing measured: a `bench.loadgen` client kind driving one server."""

    key: str
    label: str
    server: str = "datapulse"
    """The phase's server name (by default also its kind: ``datapulse``, ``sdk-http``, ...)."""
    kind: str = "modern"
    parts: tuple[str, ...] = ()
    """The ``--only`` parts this target belongs to; () : it runs whenever another target of its phase runs."""
    setup_parallel: int = 64


@dataclass(frozen=True)
class Compare:
    """``ours`` ÷ ``theirs`` (calls/s, same round, same concurrency): a row of the ratio table and, with a goal, a
    target line (MET when the median passes at every judged concurrency and no cell involved was flagged)."""

    label: str
    ours: str
    theirs: str
    goal: float | None = None
    goal_text: str = ""
    """The target line's text before the figures (default: the label and the goal)."""
    judge: str = "all"
    """Concurrencies the goal is judged at: ``all``, ``max`` or ``min`` (the others are shown for information)."""
    p50_delta: bool = False
    """Judge ours p50 − theirs p50 in ms (≤ goal) instead of the calls/s ratio (≥ goal)."""
    row: bool = True
    """Show a row in the ratio table (False: a target line only)."""


@dataclass(frozen=True)
class Column:
    """An extra column of the per-target table: ``show`` renders the runs of one target at one concurrency."""

    header: str
    show: Callable[[Runs], str]


@dataclass(frozen=True)
class Defaults:
    rounds: int = 5
    duration: float = 5.0
    warmup: float = 2.0
    concurrency: str = "32,256"
    """Unused in `Bench.quick` (``--quick`` keeps the default concurrencies)."""


@dataclass(frozen=True)
class Verdict:
    """A target line: ``text → **MET**`` (or NOT MET), then figures shown for information."""

    text: str
    met: bool
    info: str = ""

    def line(self) -> str:
        info = f" (info: {self.info})" if self.info else ""
        return f"{self.text} → **{'MET' if self.met else 'NOT MET'}**{info}"


# --- figures ------------------------------------------------------------------------------------------------------
def spread(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def median(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else float("nan")


def fmt_ratio(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    med, lo, hi = spread(values)
    return f"**{med:.2f}×** [{lo:.2f}–{hi:.2f}]"


def fmt_delta(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    med, lo, hi = spread(values)
    return f"**{med:+.2f}** [{lo:+.2f}–{hi:+.2f}]"


def ratio_short(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f}×" if values else "n/a"


def metric(name: str) -> Metric:
    """A figure of a cell by name: ``rate``, ``p50``, ``p99`` (any ``pNN``), ``cpu_per_call_us`` or an ``extra``."""
    if name == "rate":
        return lambda c: c.rate
    if name == "cpu_per_call_us":
        return lambda c: c.cpu_per_call_us
    if name.startswith("p") and name[1:].isdigit():
        q = int(name[1:]) / 100
        return lambda c: c.percentile(q)
    return lambda c: float(c.extra.get(name, float("nan")))


def okbad(runs: Runs) -> str:
    return f"{sum(c.ok for c in runs):,}/{sum(c.failed for c in runs)}"


def pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.0%}"


def extra_median(name: str, fmt: str = "{:.2f}") -> Callable[[Runs], str]:
    """A `Column` renderer: the median over rounds of ``cell.extra[name]``."""

    def show(runs: Runs) -> str:
        value = median([float(c.extra[name]) for c in runs if name in c.extra])
        return "n/a" if math.isnan(value) else fmt.format(value)

    return show


def round_order(items: Sequence[T], rnd: int) -> list[T]:
    """Round ``rnd``'s order: rotated by one every two rounds and reversed in odd rounds, so over any two
    consecutive rounds (0-1, 2-3, ...) every pair of items runs once in each order, and each item leads as often."""
    if not items:
        return []
    k = (rnd // 2) % len(items)
    order = [*items[k:], *items[:k]]
    return order[::-1] if rnd % 2 else order


class Results:
    """Every timed cell, by (target key, concurrency), one per round in round order."""

    def __init__(self) -> None:
        self.cells: dict[tuple[str, int], Runs] = {}
        self.phase_of: dict[str, int] = {}
        """Which phase measured a target: only targets of one phase share rounds."""

    def add(self, key: str, conc: int, cell: CellResult, phase: int = 0) -> None:
        self.cells.setdefault((key, conc), []).append(cell)
        self.phase_of[key] = phase

    def runs(self, key: str, conc: int) -> Runs:
        return self.cells.get((key, conc), [])

    def concurrencies(self, key: str) -> list[int]:
        return [c for k, c in self.cells if k == key]

    def pairs(self, ours: str, theirs: str, conc: int) -> list[tuple[CellResult, CellResult]]:
        mine, other = self.runs(ours, conc), self.runs(theirs, conc)
        if len(mine) != len(other) or self.phase_of.get(ours) != self.phase_of.get(theirs):
            return []
        return list(zip(mine, other, strict=True))

    def ratios(self, ours: str, theirs: str, conc: int, of: Metric | None = None) -> list[float]:
        """``of(ours) / of(theirs)`` per round (default: calls/s)."""
        of = of or metric("rate")
        out = []
        for a, b in self.pairs(ours, theirs, conc):
            x, y = of(a), of(b)
            if y > 0 and not math.isnan(x):
                out.append(x / y)
        return out

    def deltas(self, ours: str, theirs: str, conc: int, q: float = 0.5) -> list[float]:
        """ours − theirs at percentile ``q``, in ms, per round."""
        out = [a.percentile(q) - b.percentile(q) for a, b in self.pairs(ours, theirs, conc)]
        return [d for d in out if not math.isnan(d)]

    def flagged(self, keys: Sequence[str], concs: Sequence[int]) -> bool:
        return any(c.flagged for k in keys for conc in concs for c in self.runs(k, conc))

    def totals(self) -> tuple[int, int]:
        runs = [c for cells in self.cells.values() for c in cells]
        return sum(c.ok for c in runs), sum(c.failed for c in runs)


# --- the scheduler ------------------------------------------------------------------------------------------------
class WindowCpu:
    """`run_cell`'s ``server_cpu_seconds`` (called at the start and the end of the window): the target server's
    CPU, and the support servers' CPU over the same window as ``extra["aux_cpu"]``."""

    def __init__(self, server: Server, support: Sequence[Server]) -> None:
        self.server, self.support = server, support
        self.marks: list[float] = []

    def __call__(self) -> float:
        self.marks.append(sum(s.cpu_seconds() for s in self.support))
        return self.server.cpu_seconds()

    def fill(self, cell: CellResult) -> None:
        if self.support and len(self.marks) == 2:
            cell.extra["aux_cpu"] = (self.marks[1] - self.marks[0]) / cell.duration_s


class Phase:
    """Servers and the targets measured on them: start, verify, warm up, rounds, stop.

    Verification runs one client per target for ``verify_s`` and aborts the run on any wrong answer. Warm-up
    runs every target for ``--warmup`` seconds at the top concurrency. Each round runs every target at every
    concurrency: the blocks (by default one per target; targets of a block run back to back) in `round_order`,
    the targets of a block likewise, the concurrency order reversed in odd rounds, and before every cell a wait
    until every server of the phase is idle (`bench.servers.wait_idle`).
    """

    verify_s: float = 0.2
    ready_timeout_s: float = 60.0

    def __init__(
        self,
        bench: Bench,
        targets: Sequence[Target],
        *,
        servers: Mapping[str, Server] | None = None,
        support: Sequence[str] = (),
        blocks: Sequence[Sequence[str]] | None = None,
        concurrencies: Sequence[int] | None = None,
        pinned: bool = True,
        title: str = "",
    ) -> None:
        self.bench = bench
        self.targets = list(targets)
        self.all_servers = dict(servers) if servers is not None else {t.server: Server(t.server) for t in targets}
        self.support = list(support)
        """Servers started with the phase though no target drives them (a ``redis-server``)."""
        self.block_keys = [list(b) for b in blocks] if blocks is not None else [[t.key] for t in self.targets]
        self.concurrencies = list(concurrencies) if concurrencies is not None else list(bench.args.concurrencies)
        self.pinned = pinned
        """Servers on CPU 0 and the client on CPU 1 (then "other load" is shown per CPU)."""
        self.title = title
        self.servers: dict[str, Server] = {}

    # hooks ---------------------------------------------------------------------------------------------------------
    def select(self) -> list[Target]:
        """The targets ``--only`` selects (a target without parts comes along with any other)."""
        parts = set(self.bench.args.parts)
        with_parts = [t for t in self.targets if t.parts]
        if with_parts and not any(set(t.parts) & parts for t in with_parts):
            return []
        return [t for t in self.targets if not t.parts or set(t.parts) & parts]

    def endpoint(self, target: Target) -> Endpoint:
        server = self.servers[target.server]
        return Endpoint("127.0.0.1", server.port, server.token)

    async def started(self) -> None:
        """After every server is ready, before verification."""

    async def before_rounds(self) -> None:
        """After verification, before the warm-up."""

    async def finished(self) -> None:
        """After the last round, before the servers stop."""

    async def stopping(self) -> None:
        """Always, before the servers stop."""

    async def cell(self, target: Target, conc: int, duration_s: float, timed: bool) -> CellResult:
        """One cell; ``timed`` is False for verification and warm-up."""
        probe = WindowCpu(self.servers[target.server], [self.servers[name] for name in self.support])
        result = await run_cell(
            target.kind,
            self.endpoint(target),
            conc,
            duration_s,
            server_cpu_seconds=probe if timed else None,
            setup_parallel=target.setup_parallel,
            prepare=lambda clients: self.prepare(target, clients),
        )
        probe.fill(result)
        return result

    async def prepare(self, target: Target, clients: list[Any]) -> None:
        """After every client's setup, before the window (untimed; an exception fails the cell's setup)."""

    def measures(self, target: Target, conc: int) -> bool:
        """Whether ``target`` runs at concurrency ``conc`` (default: every target at every concurrency of the phase;
        a target left out at the top one warms up at the highest it runs at)."""
        return True

    def verify_problem(self, target: Target, cell: CellResult) -> str | None:
        """Why a verification cell fails (None: it passed)."""
        return f"{cell.ok} ok, {cell.failed} bad: {cell.errors}" if cell.flagged else None

    def describe(self, cell: CellResult) -> str:
        """More text for a cell's progress line."""
        return ""

    # the schedule --------------------------------------------------------------------------------------------------
    @property
    def everyone(self) -> list[Server]:
        return list(self.servers.values())

    async def run(self) -> None:
        targets = self.select()
        if not targets:
            return
        bench = self.bench
        names = [*self.support, *dict.fromkeys(t.server for t in targets)]
        self.servers = {name: self.all_servers[name] for name in names}
        try:
            for server in self.servers.values():
                server.start()
            for server in self.servers.values():
                await server.wait_ready(self.ready_timeout_s)
            for name, server in self.servers.items():
                bench.report["servers"][name] = {"command": server.command(), "describe": server.describe()}
            await self.started()
            await self.verify(targets)
            await self.before_rounds()
            await self.rounds(targets)
            await self.finished()
        finally:
            await self.stopping()
            self.stop()

    async def verify(self, targets: list[Target]) -> None:
        log(f"{self.title}verify: one client per target for {self.verify_s:g} s, every answer checked")
        for target in targets:
            await wait_idle(self.everyone)
            cell = await self.cell(target, 1, self.verify_s, False)
            problem = self.verify_problem(target, cell)
            log(f"  {target.key:18} {cell.ok} ok / {cell.failed} bad  {problem or 'ok'}{self.describe(cell)}")
            if problem:
                tail = self.servers[target.server].log_tail()
                raise SystemExit(f"{target.key} failed verification: {problem}\nserver log:\n{tail}")

    async def rounds(self, targets: list[Target]) -> None:
        args = self.bench.args
        chosen = {t.key: t for t in targets}
        blocks = [[chosen[k] for k in block if k in chosen] for block in self.block_keys]
        blocks = [b for b in blocks if b]
        await self.warm_up(targets)
        for rnd in range(args.rounds):
            if rnd > 0 and args.fresh_servers:
                await self.restart(targets)
            order = round_order(blocks, rnd)
            log(f"{self.title}round {rnd + 1}/{args.rounds}: order {' '.join(t.key for b in order for t in b)}")
            turn = rnd
            for conc in self.concurrencies if rnd % 2 == 0 else self.concurrencies[::-1]:
                for block in order:
                    for target in round_order(block, turn):
                        if not self.measures(target, conc):
                            continue
                        await wait_idle(self.everyone)
                        cell = await self.cell(target, conc, args.duration, True)
                        cell.extra["other_cpu"] = self.other_cpu(cell)
                        self.bench.results.add(target.key, conc, cell, id(self))
                        self.log_cell(target, conc, cell)
                    turn += 1

    async def warm_up(self, targets: list[Target]) -> None:
        args = self.bench.args
        if args.warmup <= 0:
            return
        top = max(self.concurrencies)
        log(f"{self.title}warm-up: {args.warmup:g} s per target at c={top}")
        for target in targets:
            runs_at = [c for c in self.concurrencies if self.measures(target, c)]
            if runs_at:
                await wait_idle(self.everyone)
                await self.cell(target, max(runs_at), args.warmup, False)

    async def restart(self, targets: list[Target]) -> None:
        """Stop every server of the phase but the support ones, start each afresh (same port, same command), and
        warm them up again (``--fresh-servers``): two processes of the same code differ in speed by several per
        cent for their whole life (hash seed, memory layout), so a run that kept one process per target would carry
        one draw of that for every round."""
        names = [name for name in self.servers if name not in self.support]
        log(f"{self.title}fresh servers: restarting {' '.join(names)}")
        for name in reversed(names):
            self.servers[name].stop()
            self.retire(name)
        for name in names:
            self.servers[name].start()
        for name in names:
            await self.servers[name].wait_ready(self.ready_timeout_s)
        await self.warm_up(targets)

    def other_cpu(self, cell: CellResult) -> list[float]:
        """CPU busy during the window beyond the server(s), the client and ``extra["aux_cpu"]`` (other processes,
        kernel work: the noise on a shared machine); per CPU (0, 1) when pinned, else over every CPU."""
        busy, aux = cell.cpu_busy, float(cell.extra.get("aux_cpu", 0.0))
        if self.pinned and self.bench.client_pinned and len(busy) > 1:
            return [max(0.0, busy[0] - cell.server_cpu), max(0.0, busy[1] - cell.client_cpu - aux)]
        return [max(0.0, sum(busy) - cell.server_cpu - cell.client_cpu - aux)]

    def log_cell(self, target: Target, conc: int, cell: CellResult) -> None:
        flag = "  FLAGGED " + "; ".join(cell.errors[:2]) if cell.flagged else ""
        other = " / ".join(f"{v:.0%}" for v in cell.extra["other_cpu"])
        log(
            f"  c={conc:<4} {target.key:18} {cell.rate:9,.0f} calls/s  p50 {cell.percentile(0.5):7.2f}  "
            f"p99 {cell.percentile(0.99):7.2f} ms  srv {cell.server_cpu:4.0%} cli {cell.client_cpu:4.0%} "
            f"other {other}  {cell.ok} ok/{cell.failed} bad{self.describe(cell)}{flag}"
        )

    def stop(self) -> None:
        for server in reversed(self.servers.values()):  # started first, stopped last: Redis outlives its users
            server.stop()
        for name in self.servers:
            self.retire(name)

    def retire(self, name: str) -> None:
        """After a server stopped: add up its audit records, keep its log if it holds a problem (the first such
        log of a restarted server is the one reported), else delete it."""
        report = self.bench.report
        server = self.servers[name]
        records = server.remove_audit()
        if records is not None:
            report["audit_records"][name] = report["audit_records"].get(name, 0) + records
        if server.log_problems():
            report["server_logs"].setdefault(
                name,
                {
                    "path": str(server.log_path),
                    "traceback": "Traceback" in server.log_tail(10_000_000),
                    "tail": server.log_tail(3000),
                },
            )
            log(f"{name} logged a warning, an error or a traceback: {server.log_path}")
        server.discard_log()


# --- the benchmark ------------------------------------------------------------------------------------------------
class Bench:
    """A benchmark: declarations (class attributes) and hooks (methods); `main` runs it."""

    prog: ClassVar[str] = "bench.?"
    title: ClassVar[str] = "?"
    defaults: ClassVar[Defaults] = Defaults()
    quick: ClassVar[Defaults] = Defaults(rounds=1, duration=0.8, warmup=0.2)
    targets: ClassVar[Sequence[Target]] = ()
    """The targets of the default single phase (see `phases`)."""
    comparisons: ClassVar[Sequence[Compare]] = ()
    parts: ClassVar[Sequence[str]] = ()
    """The names ``--only`` takes (default: the targets' parts, then `extra_parts`)."""
    extra_parts: ClassVar[Sequence[str]] = ()
    """Parts measured by `measure_part` rather than in cells (after every phase)."""
    ours: ClassVar[str] = "DataPulse"
    theirs: ClassVar[str] = "baseline"
    ratio_header: ClassVar[str] = "ratio"
    reference: ClassVar[str | None] = None
    """A target every other one is divided by, same round, in the per-target table (``÷ceiling``)."""
    percentiles: ClassVar[tuple[float, ...]] = (0.5, 0.99)
    columns: ClassVar[Sequence[Column]] = ()
    """Extra columns of the per-target table."""
    ratio_extras: ClassVar[Sequence[tuple[str, str]]] = ()
    """Extra columns of the ratio table: (header, `metric` name), shown as the median per-round ratio."""
    order_note: ClassVar[str] = ""
    """Said after "target order rotated ..." in the header (how blocks run)."""
    fresh_servers: ClassVar[bool] = False
    """Default of ``--fresh-servers``: start every server afresh before each round after the first."""

    def __init__(self, argv: Sequence[str] | None = None) -> None:
        self.argv = list(sys.argv[1:] if argv is None else argv)
        self.args = self.parse_args(self.argv)
        self.results = Results()
        self.client_pinned = False
        self._phases: list[Phase] | None = None
        self.report: dict[str, Any] = {
            "bench": self.prog,
            "command": shlex.join([python_shown(), "-m", self.prog, *self.argv]),
            "config": {k: v for k, v in vars(self.args).items() if not isinstance(v, Path)},
            "servers": {},
            "notes": [],
            "audit_records": {},
            "server_logs": {},
        }

    # options -------------------------------------------------------------------------------------------------------
    @classmethod
    def part_names(cls) -> list[str]:
        if cls.parts:
            return list(cls.parts)
        return list(dict.fromkeys([p for t in cls.targets for p in t.parts] + list(cls.extra_parts)))

    def parse_args(self, argv: Sequence[str]) -> argparse.Namespace:
        d, q = self.defaults, self.quick
        doc = (sys.modules[type(self).__module__].__doc__ or self.title).split("\n\n")[0]
        parser = argparse.ArgumentParser(prog=f"python -m {self.prog}", description=doc)
        parser.add_argument("--rounds", type=int, help=f"measurement rounds (default {d.rounds}; quick: {q.rounds})")
        parser.add_argument(
            "--duration", type=float, help=f"seconds per cell (default {d.duration:g}; quick: {q.duration:g})"
        )
        parser.add_argument(
            "--warmup", type=float, help=f"warm-up seconds per target (default {d.warmup:g}; quick: {q.warmup:g})"
        )
        parser.add_argument("--concurrency", default=d.concurrency, help=f"client counts (default {d.concurrency})")
        parser.add_argument("--quick", action="store_true", help="short smoke run; figures are not for conclusions")
        names = self.part_names()
        if names:
            parser.add_argument(
                "--only", action="append", default=[], help=f"parts (repeatable or comma-separated): {', '.join(names)}"
            )
        parser.add_argument(
            "--fresh-servers",
            action=argparse.BooleanOptionalAction,
            default=self.fresh_servers,
            help="start every server afresh (and warm it up) before each round after the first, so each round has "
            "its own processes: two processes of the same code differ in speed by several per cent for their whole "
            f"life (default: {'on' if self.fresh_servers else 'off'})",
        )
        parser.add_argument("--json", type=Path, help="also write every raw figure to this JSON file")
        parser.add_argument("--markdown", type=Path, help="also write the report to this file")
        self.add_options(parser)
        args = parser.parse_args(argv)
        chosen = q if args.quick else d
        args.rounds = chosen.rounds if args.rounds is None else args.rounds
        args.duration = chosen.duration if args.duration is None else args.duration
        args.warmup = chosen.warmup if args.warmup is None else args.warmup
        args.concurrencies = list(dict.fromkeys(int(c) for c in args.concurrency.split(",") if c.strip()))
        only = {p.strip() for item in getattr(args, "only", []) for p in item.split(",") if p.strip()}
        if only - set(names):
            parser.error(f"--only: unknown part(s) {', '.join(sorted(only - set(names)))}; choose from {names}")
        args.explicit = bool(only)
        args.parts = [p for p in names if not only or p in only]
        if args.rounds < 1 or args.duration <= 0 or not args.concurrencies:
            parser.error("need --rounds ≥ 1, --duration > 0 and at least one concurrency")
        self.check_args(args, parser)
        return args

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        """More options."""

    def check_args(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
        """Derive or check more options (``parser.error`` to refuse)."""

    # hooks ---------------------------------------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        return [Phase(self, self.targets)]

    def pin_client(self) -> bool:
        """Whether the runner (the load client) pins itself to CPU 1."""
        return True

    async def measure_part(self, part: str) -> None:
        """Measure one of `extra_parts`."""

    def header_lines(self) -> list[str]:
        """More bullet lines for the header (each starting with ``* ``)."""
        return []

    def extra_rows(self) -> list[list[str]]:
        """More rows of the ratio table (its first 10 columns)."""
        return []

    def extra_verdicts(self) -> list[Verdict]:
        return []

    def extra_correctness(self) -> tuple[int, int]:
        """(ok, bad) checked outside the cells."""
        return 0, 0

    def footer_lines(self) -> list[str]:
        return []

    def problems(self) -> list[str]:
        """Why the run failed its checks, beyond flagged cells and server tracebacks (exit status 1)."""
        return []

    # running -------------------------------------------------------------------------------------------------------
    @classmethod
    def main(cls, argv: Sequence[str] | None = None) -> None:
        sys.exit(cls(argv).execute())

    def execute(self) -> int:
        started = time.monotonic()
        self.client_pinned = self.pin_client()
        self.report.update(
            versions=versions(),
            machine=machine(),
            pinning=pin_client() if self.client_pinned else "client not pinned",
            fd_limit=raise_fd_limit()[0],
        )
        self.client_pinned = self.client_pinned and self.report["pinning"].startswith("client pinned")
        uvloop.run(self.measure())
        self.report["wall_s"] = time.monotonic() - started
        text = self.render()
        print(text, flush=True)
        if self.args.markdown is not None:
            self.args.markdown.write_text(text + "\n")
        problems = self.all_problems()
        if self.args.json is not None:
            self.args.json.write_text(json.dumps(self.json_report(problems), indent=2, default=str))
        for problem in problems:
            log(f"FLAGGED: {problem}")
        return 1 if problems else 0

    async def measure(self) -> None:
        for phase in self.phases_run:
            await phase.run()
        for part in self.extra_parts:
            if part in self.args.parts:
                await self.measure_part(part)

    def all_problems(self) -> list[str]:
        out = [
            f"{key}@{conc}: bad responses {'; '.join(e for c in runs for e in c.errors)[:300]}"
            for (key, conc), runs in self.results.cells.items()
            if any(c.flagged for c in runs)
        ]
        out += [f"{name} logged a traceback" for name, info in self.report["server_logs"].items() if info["traceback"]]
        return out + self.problems()

    # the verdicts --------------------------------------------------------------------------------------------------
    def verdicts(self) -> list[Verdict]:
        out = []
        for comp in self.comparisons:
            if comp.goal is None:
                continue
            concs = self.results.concurrencies(comp.ours)
            figures = {}
            for conc in concs:
                values = (
                    self.results.deltas(comp.ours, comp.theirs, conc)
                    if comp.p50_delta
                    else self.results.ratios(comp.ours, comp.theirs, conc)
                )
                if values:
                    figures[conc] = statistics.median(values)
            if not figures:
                continue
            judged = {"all": list(figures), "max": [max(figures)], "min": [min(figures)]}[comp.judge]
            passed = all(figures[c] <= comp.goal if comp.p50_delta else figures[c] >= comp.goal for c in judged)
            flagged = self.results.flagged([comp.ours, comp.theirs], list(figures))

            def show(value: float, delta: bool = comp.p50_delta) -> str:
                return f"{value:+.2f} ms" if delta else f"{value:.2f}×"

            sign = "≤" if comp.p50_delta else "≥"
            head = comp.goal_text or f"{comp.label} {sign} {comp.goal:g}{' ms' if comp.p50_delta else '×'}"
            if comp.judge == "all":
                text = f"{head}: " + ", ".join(f"c={c}: {show(v)}" for c, v in figures.items())
            else:
                text = f"{head} (judged at c={judged[0]}): {show(figures[judged[0]])}"
            text += " (bad responses in a cell)" if flagged else ""
            others = ", ".join(f"c={c}: {show(v)}" for c, v in figures.items() if c not in judged)
            out.append(Verdict(text, passed and not flagged, others))
        return out + self.extra_verdicts()

    # the report ----------------------------------------------------------------------------------------------------
    def render(self) -> str:
        out = [f"# {self.title}", "", *self.header(), ""]
        rows = self.ratio_rows() + [row + ["—"] * len(self.ratio_extras) for row in self.extra_rows()]
        if rows:
            out += [
                f"## Results (ratio = {self.ours} ÷ {self.theirs} in the same round; median over rounds [min–max])",
                "",
                self.ratio_table_header(),
                "|---" * (10 + len(self.ratio_extras)) + "|",
                *("| " + " | ".join(row) + " |" for row in rows),
                "",
            ]
        if self.results.cells:
            out += [*self.target_table(), ""]
        out += ["## Targets", ""]
        verdicts = self.verdicts()
        out += [f"* {v.line()}" for v in verdicts] or ["* none in this run (what ran is informative)"]
        ok, bad = self.results.totals()
        more_ok, more_bad = self.extra_correctness()
        out += [
            "",
            f"Correctness: {ok + more_ok:,} calls checked ok, {bad + more_bad:,} bad "
            "(every response parsed: id, echo text, no error).",
            *self.footer_lines(),
        ]
        audit = self.report["audit_records"]
        if audit:
            out.append(
                "Audit records written (file sink, JSON lines; rotated files included): "
                + ", ".join(f"{name} {count:,}" for name, count in audit.items())
                + "."
            )
        if self.report["server_logs"]:
            out.append(
                "Server logs with warnings or errors (kept): "
                + ", ".join(f"{name} `{info['path']}`" for name, info in self.report["server_logs"].items())
                + "."
            )
        out.append(f"Wall time: {self.report['wall_s']:.0f} s.")
        return "\n".join(out)

    def header(self) -> list[str]:
        r, a = self.report, self.args
        installed = ", ".join(f"{k} {v}" for k, v in r["versions"].items() if v != "not installed")
        lines = [
            f"* Versions: {installed}",
            f"* Machine: {r['machine']}",
            f"* Command: `{r['command']}`",
            f"* Rounds: {a.rounds} × {a.duration:g} s per cell at concurrency {', '.join(map(str, a.concurrencies))}, "
            f"after a {a.warmup:g} s warm-up per target at the top concurrency; target order rotated and reversed "
            f"from round to round (each pair runs in both orders over two rounds){self.order_note}; "
            f"{'every server started afresh and warmed up again before each round; ' if a.fresh_servers else ''}"
            f"idle wait before every cell; {r['pinning']}; fd limit {r['fd_limit']}",
        ]
        for name, info in r["servers"].items():
            note = f"; {info['note']}" if info.get("note") else ""
            lines.append(f"* Server `{name}`: `{info['command']}` ({info['describe']}{note})")
        return lines + self.header_lines() + [f"* **Note**: {note}" for note in r["notes"]]

    def latency(self, runs: Runs) -> str:
        return " / ".join(f"{median([c.percentile(q) for c in runs]):.2f}" for q in self.percentiles)

    def latency_header(self) -> str:
        return " / ".join(f"p{round(q * 100)}" for q in self.percentiles) + " ms"

    def ratio_table_header(self) -> str:
        lat = self.latency_header()
        cols = [
            "what",
            "c / N",
            self.ours,
            self.theirs,
            self.ratio_header,
            "Δp50 ms",
            f"{self.ours} {lat}",
            f"{self.theirs} {lat}",
            f"{self.ours} ok/bad",
            f"{self.theirs} ok/bad",
        ]
        cols += [f"{self.ratio_header} {header}" for header, _ in self.ratio_extras]
        return "| " + " | ".join(cols) + " |"

    def ratio_rows(self) -> list[list[str]]:
        rows = []
        for comp in self.comparisons:
            if not comp.row:
                continue
            for conc in self.results.concurrencies(comp.ours):
                mine, other = self.results.runs(comp.ours, conc), self.results.runs(comp.theirs, conc)
                if not mine or not other:
                    continue
                flag = " ⚠ bad responses" if any(c.flagged for c in mine + other) else ""
                rows.append(
                    [
                        f"{comp.label}{flag}",
                        str(conc),
                        f"{median([c.rate for c in mine]):,.0f} calls/s",
                        f"{median([c.rate for c in other]):,.0f} calls/s",
                        fmt_ratio(self.results.ratios(comp.ours, comp.theirs, conc)),
                        fmt_delta(self.results.deltas(comp.ours, comp.theirs, conc)),
                        self.latency(mine),
                        self.latency(other),
                        okbad(mine),
                        okbad(other),
                        *(
                            ratio_short(self.results.ratios(comp.ours, comp.theirs, conc, metric(name)))
                            for _, name in self.ratio_extras
                        ),
                    ]
                )
        return rows

    def target_table(self) -> list[str]:
        ref = self.reference
        head = ["target", "c", "calls/s [min–max]"]
        head += [f"÷{ref}"] if ref else []
        head += [self.latency_header(), "server CPU", "server CPU µs/call", "client CPU", "other load", "ok/bad"]
        head += [col.header for col in self.columns]
        lines = [
            "## Per target (median over rounds"
            + (f"; ÷{ref} = same round, same concurrency" if ref else "")
            + "; other load: CPU busy beyond the servers and the client, on CPU 0 / CPU 1 when pinned, else on all)",
            "",
            "| " + " | ".join(head) + " |",
            "|---" * len(head) + "|",
        ]
        labels = {t.key: t.label for phase in self.phases_run for t in phase.targets}
        for key in dict.fromkeys(
            [*(k for k in labels if self.results.concurrencies(k)), *(k for k, _ in self.results.cells)]
        ):
            for conc in self.results.concurrencies(key):
                runs = self.results.runs(key, conc)
                med, lo, hi = spread([c.rate for c in runs])
                flag = " ⚠" if any(c.flagged for c in runs) else ""
                row = [f"**{key}** {labels.get(key, '')}{flag}", str(conc), f"{med:,.0f} [{lo:,.0f}–{hi:,.0f}]"]
                if ref:
                    share = median(self.results.ratios(key, ref, conc))
                    row.append("1.000" if key == ref else "—" if math.isnan(share) else f"{share:.3f}")
                others = [c.extra.get("other_cpu", []) for c in runs]
                width = min((len(o) for o in others), default=0)
                other = " / ".join(pct(median([o[i] for o in others])) for i in range(width)) or "n/a"
                row += [
                    self.latency(runs),
                    pct(median([c.server_cpu for c in runs])),
                    f"{median([c.cpu_per_call_us for c in runs]):,.0f}",
                    pct(median([c.client_cpu for c in runs])),
                    other,
                    okbad(runs),
                    *(col.show(runs) for col in self.columns),
                ]
                lines.append("| " + " | ".join(row) + " |")
        return lines

    @property
    def phases_run(self) -> list[Phase]:
        """`phases`, built once."""
        if self._phases is None:
            self._phases = self.phases()
        return self._phases

    # the JSON dump -------------------------------------------------------------------------------------------------
    def json_report(self, problems: list[str]) -> dict[str, Any]:
        out = dict(self.report)
        out["cells"] = {f"{k}@{c}": [x.summary() for x in runs] for (k, c), runs in self.results.cells.items()}
        comparisons: dict[str, Any] = {}
        for comp in self.comparisons:
            for conc in self.results.concurrencies(comp.ours):
                if not self.results.pairs(comp.ours, comp.theirs, conc):
                    continue
                comparisons[f"{comp.ours}/{comp.theirs}@{conc}"] = {
                    "label": comp.label,
                    "calls_per_s_ratios": self.results.ratios(comp.ours, comp.theirs, conc),
                    "p50_deltas_ms": self.results.deltas(comp.ours, comp.theirs, conc),
                    **{
                        f"{name}_ratios": self.results.ratios(comp.ours, comp.theirs, conc, metric(name))
                        for _, name in self.ratio_extras
                    },
                }
        out["comparisons"] = comparisons
        out["targets"] = [{"text": v.text, "met": v.met} for v in self.verdicts()]
        out["ok"], out["bad"] = self.results.totals()
        out["problems"] = problems
        return out


def python_shown() -> str:
    """The interpreter as typed from the repository root (``.venv/bin/python``), else its full path."""
    exe = Path(sys.executable)
    return str(exe.relative_to(REPO)) if exe.is_relative_to(REPO) else sys.executable


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count()
    return f"{platform.platform()}; {cores} CPUs{f' ({model})' if model else ''}; Python {platform.python_version()}"
