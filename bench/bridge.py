# ruff: noqa: RUF001
"""Stdio bridging: ``datapulse bridge`` vs the PyPI package ``mcp-proxy``, serving the same stdio server, same run.

Usage (from the repository root; install the competitor first with ``bash bench/setup-mcp-proxy.sh``)::

    .venv/bin/python -m bench.bridge                       # full run: 5 rounds x 5 s cells at c = 1, 8, 32
    .venv/bin/python -m bench.bridge --quick               # smoke run; figures are not for conclusions
    .venv/bin/python -m bench.bridge --only mcp-proxy --rounds 1 --duration 1   # the mcp-proxy side alone
    .venv/bin/python -m bench.bridge --only dp-shared,mcp-proxy --json out.json

Both sides bridge ``python -m tests.support.stdio_server`` (tool ``echo``) to Streamable HTTP on ``/mcp`` and are
driven by the same client: a 2025-11-25 session per client connection (``initialize`` +
``notifications/initialized``, then ``tools/call`` with ``Mcp-Session-Id``; ``bench.loadgen.SessionClient``).
See the "Stdio bridging" section of bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/bridge.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # type: ignore[import-untyped,unused-ignore]
import uvloop

from bench.loadgen import CLIENTS, IDS, CallFailed, CellResult, Endpoint, SessionClient, run_cell
from bench.run import fmt_ratio, lat, log, med_of, okbad, other_load, ratios, spread
from bench.servers import (
    REPO,
    SERVER_CPU,
    TOKEN,
    VENV_BIN,
    Server,
    _clean_env,
    pin_client,
    raise_fd_limit,
    versions,
    wait_idle,
)

MCP_PROXY_VENV = REPO / ".bench-venv" / "mcp-proxy"
MCP_PROXY_BIN = MCP_PROXY_VENV / "bin" / "mcp-proxy"
CHILD_ARGV = [sys.executable, "-m", "tests.support.stdio_server"]
"""The stdio server both sides bridge (the project venv's Python, run from the repository root)."""
CLIENT_KIND = "bridge-session"
"""`bench.loadgen` client kind for every target: `PrimedSessionClient` (registered in `bench.loadgen.CLIENTS`)."""
PER_SESSION_SETUP_PARALLEL = 1
"""Sessions set up at once against per-session isolation. Each starts a Python child (about 1 s of CPU on the
server core), so starting them side by side saves no time on one core; one at a time keeps every start within
`bench.loadgen.SETUP_TIMEOUT_S` and makes the session-start figure a clean one."""
SESSION_STARTS: list[float] = []
"""Seconds from ``initialize`` sent to the first ``tools/call`` answered, one per session set up (drained per cell)."""


class PrimedSessionClient(SessionClient):
    """`SessionClient` whose untimed setup also makes one checked ``tools/call``.

    A bridge may start the stdio child lazily (per-session isolation starts one per session): that start belongs to
    opening the session, not to the timed window, so setup includes it and records how long it took.
    """

    kind = CLIENT_KIND

    async def setup(self) -> None:
        started = time.perf_counter()
        await super().setup()
        ok, _latency, done_at = await self.call(next(IDS))
        if not ok:
            raise CallFailed(f"first tools/call: {self.errors[-1:]}")
        SESSION_STARTS.append(done_at - started)


CLIENTS[CLIENT_KIND] = PrimedSessionClient

VERIFY_S = 0.5
"""The verification cell: one client for this long; at least one answer, and every answer right."""


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    isolation: str | None  # None: mcp-proxy


TARGETS = {
    t.key: t
    for t in (
        Target("dp-shared", "DataPulse bridge --isolation shared (auth + audit on)", "shared"),
        Target("dp-per-session", "DataPulse bridge --isolation per-session (auth + audit on)", "per-session"),
        Target("mcp-proxy", "mcp-proxy (one shared child, no auth)", None),
    )
}
COMPARISONS = [
    ("dp-shared", "mcp-proxy", "shared ÷ mcp-proxy (both: one child for every session)"),
    ("dp-per-session", "mcp-proxy", "per-session ÷ mcp-proxy (informative: a child per session vs one)"),
]


# --- processes ----------------------------------------------------------------------------------------------------
@dataclass
class BridgeServer(Server):
    """A bridge process (``kind`` is a target key) pinned to the server CPU; its stdio children inherit the pin.

    CPU figures cover the whole process tree: the bridge, its live children and the children it has reaped.
    """

    @property
    def is_datapulse(self) -> bool:
        return TARGETS[self.kind].isolation is not None

    @property
    def argv(self) -> list[str]:
        isolation = TARGETS[self.kind].isolation
        if isolation is None:
            return [
                str(MCP_PROXY_BIN),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "WARNING",
                "--cwd",
                str(REPO),
                "--",
                *CHILD_ARGV,
            ]
        return [
            str(VENV_BIN / "datapulse"),
            "bridge",
            "--port",
            str(self.port),
            "--token",
            TOKEN,
            "--isolation",
            isolation,
            "--log-level",
            "warning",
            "--audit-sinks",
            f"file:{self.audit_path}",
            "--cwd",
            str(REPO),
            "--",
            *CHILD_ARGV,
        ]

    @property
    def audit_path(self) -> Path:
        """The audit log (JSON lines, one per request and auth decision) of a DataPulse target."""
        return Path(tempfile.gettempdir()) / f"bench-bridge-{self.kind}-{self.port}-audit.jsonl"

    def audit_files(self) -> list[Path]:
        """The audit log and the files it rotated to (``path.1``, ``path.2``, ...); none for mcp-proxy."""
        if not self.is_datapulse:
            return []
        path = self.audit_path
        return [file for file in (path, *path.parent.glob(path.name + ".*")) if file.exists()]

    def audit_lines(self) -> int:
        """How many audit records the run wrote, rotated files included."""
        total = 0
        for file in self.audit_files():
            with file.open("rb") as handle:
                total += sum(1 for _ in handle)
        return total

    def command(self) -> str:
        """The command line as printed in the report (the token value is not shown)."""
        argv = ["***" if a == TOKEN else a for a in self.argv]
        argv[0] = Path(argv[0]).name
        argv = ["python" if a == sys.executable else a for a in argv]
        return f"taskset -c {SERVER_CPU} {shlex.join(argv)}"

    def start(self) -> None:
        fd, path = tempfile.mkstemp(prefix=f"bench-bridge-{self.kind}-", suffix=".log")
        self.log_path = Path(path)
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *self.argv],
            cwd=REPO,
            env=_clean_env(),
            stdout=fd,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        os.close(fd)
        self.ps = psutil.Process(self.proc.pid)

    def children(self) -> list[psutil.Process]:
        assert self.ps is not None
        try:
            return list(self.ps.children(recursive=True))
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        assert self.ps is not None
        times = self.ps.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in self.children():
            try:
                child_times = child.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += child_times.user + child_times.system
        return float(total)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the bridge; a stdio child still alive 5 s after the bridge exited is killed and reported."""
        leftovers = self.children() if self.proc is not None and self.proc.poll() is None else []
        super().stop(timeout_s)
        _gone, alive = psutil.wait_procs(leftovers, timeout=5)
        for child in alive:
            log(f"{self.kind}: child {child.pid} outlived the bridge; killing it")
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def bridge_unavailable_reason() -> str | None:
    """Why ``datapulse bridge`` cannot run here (None: it can)."""
    try:
        done = subprocess.run(
            [str(VENV_BIN / "datapulse"), "bridge", "--help"], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`datapulse bridge --help` failed: {exc}"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()[-1:]
        return f"`datapulse bridge --help` exited with {done.returncode}: {' '.join(tail)}"
    return None


def mcp_proxy_versions() -> dict[str, str]:
    """mcp-proxy's own package versions, read with its venv's Python."""
    code = (
        "import json; from importlib.metadata import version as v\n"
        "out = {}\n"
        "for name in ('mcp-proxy', 'mcp', 'uvicorn', 'uvloop', 'httptools', 'starlette'):\n"
        "    try: out[name] = v(name)\n"
        "    except Exception: out[name] = 'not installed'\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run(
        [str(MCP_PROXY_VENV / "bin" / "python"), "-c", code], capture_output=True, timeout=60, check=True
    )
    return dict(json.loads(done.stdout))


# --- options ------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bridge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="measurement rounds (default 5; quick: 1)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per cell (default 5; quick: 1)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per target (default 2)")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts (default 1,8,32)")
    parser.add_argument("--quick", action="store_true", help="short smoke run, not for conclusions")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help=f"run only these targets (repeatable or comma-separated): {', '.join(TARGETS)}",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every raw figure to this JSON file")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds if args.rounds is not None else (1 if quick else 5)
    args.duration = args.duration if args.duration is not None else (1.0 if quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if quick else 2.0)
    args.concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    only = {part.strip() for item in args.only for part in item.split(",") if part.strip()}
    unknown = only - set(TARGETS)
    if unknown:
        parser.error(f"--only: unknown target(s) {', '.join(sorted(unknown))}; choose from {', '.join(TARGETS)}")
    args.explicit = bool(only)
    args.targets = [key for key in TARGETS if not only or key in only]
    return args


def resolve_targets(args: argparse.Namespace, report: dict[str, Any]) -> list[str]:
    """The targets that can run; the DataPulse ones are dropped (with a note) when ``datapulse bridge`` is missing,
    unless they were asked for by name."""
    keys = list(args.targets)
    if "mcp-proxy" in keys and not MCP_PROXY_BIN.exists():
        raise SystemExit(f"{MCP_PROXY_BIN} is missing: run `bash bench/setup-mcp-proxy.sh` first")
    wanted_dp = [k for k in keys if TARGETS[k].isolation is not None]
    if wanted_dp:
        reason = bridge_unavailable_reason()
        if reason is not None:
            if args.explicit:
                raise SystemExit(f"{reason}; run with --only mcp-proxy to measure the competitor alone")
            note = f"DataPulse targets skipped: {reason}"
            log(note)
            report["notes"].append(note)
            keys = [k for k in keys if k not in wanted_dp]
    if not keys:
        raise SystemExit("nothing to run")
    return keys


# --- measurement --------------------------------------------------------------------------------------------------
async def throughput(
    args: argparse.Namespace, keys: list[str], report: dict[str, Any]
) -> dict[tuple[str, int], list[CellResult]]:
    servers = {key: BridgeServer(key) for key in keys}
    for server in servers.values():
        server.start()
    try:
        for key, server in servers.items():
            await server.wait_ready(60.0)
            report["servers"][key] = {"command": server.command(), "fast_stack": server.fast_stack()}
        everyone: list[Server] = list(servers.values())

        async def cell(key: str, concurrency: int, duration_s: float, timed: bool = True) -> CellResult:
            server = servers[key]
            parallel = PER_SESSION_SETUP_PARALLEL if TARGETS[key].isolation == "per-session" else 64
            SESSION_STARTS.clear()
            result = await run_cell(
                CLIENT_KIND,
                Endpoint("127.0.0.1", server.port, server.token),
                concurrency,
                duration_s,
                server_cpu_seconds=server.cpu_seconds if timed else None,
                setup_parallel=parallel,
            )
            if timed:
                starts = report["session_start_ms"].setdefault(f"{key}@{concurrency}", [])
                starts.extend(round(s * 1000.0, 2) for s in SESSION_STARTS)
            return result

        log("verify: one client, every answer checked")
        for key in keys:
            result = await cell(key, 1, VERIFY_S, timed=False)
            failed = result.bad or result.timeouts or result.setup_failed or not result.ok
            log(f"  {key:15} {result.ok} ok / {result.bad} bad  {result.errors if failed else 'ok'}")
            if failed:
                raise SystemExit(f"{key} failed verification: {result.errors}; log:\n{servers[key].log_tail()}")
        top = max(args.concurrencies)
        if args.warmup > 0:
            log(f"warm-up: {args.warmup:g} s per target at c={top}")
            for key in keys:
                await wait_idle(everyone)
                await cell(key, top, args.warmup, timed=False)

        cells: dict[tuple[str, int], list[CellResult]] = {(k, c): [] for k in keys for c in args.concurrencies}
        for rnd in range(args.rounds):
            order = keys[rnd % len(keys) :] + keys[: rnd % len(keys)]
            if rnd % 2:
                order.reverse()  # so that neither side of a comparison always runs first
            concurrencies = args.concurrencies if rnd % 2 == 0 else list(reversed(args.concurrencies))
            log(f"round {rnd + 1}/{args.rounds}: order {' '.join(order)}")
            for conc in concurrencies:
                for key in order:
                    await wait_idle(everyone)
                    result = await cell(key, conc, args.duration)
                    cells[(key, conc)].append(result)
                    flag = "  FLAGGED " + "; ".join(result.errors[:2]) if result.flagged else ""
                    log(
                        f"  c={conc:<3} {key:15} {result.rate:8,.0f} calls/s  p50 {result.percentile(0.5):7.2f}  "
                        f"p99 {result.percentile(0.99):7.2f} ms  srv {result.server_cpu:4.0%} "
                        f"cli {result.client_cpu:4.0%}  {result.ok} ok/{result.bad} bad{flag}"
                    )
        return cells
    finally:
        for server in servers.values():
            server.stop()
        for key, server in servers.items():
            if server.is_datapulse:
                report["audit_records"][key] = server.audit_lines()
                for file in server.audit_files():
                    file.unlink(missing_ok=True)
            if server.log_path is not None and "Traceback" in server.log_tail(200_000):
                report.setdefault("server_tracebacks", {})[key] = server.log_tail(3000)
                log(f"{key} logged a traceback: {server.log_path}")
            server.discard_log()


# --- report -------------------------------------------------------------------------------------------------------
def result_rows(args: argparse.Namespace, cells: dict[tuple[str, int], list[CellResult]]) -> Iterator[tuple[str, ...]]:
    for ours, theirs, label in COMPARISONS:
        for conc in args.concurrencies:
            mine, other = cells.get((ours, conc), []), cells.get((theirs, conc), [])
            if not mine or not other:
                continue
            flag = " ⚠ bad responses" if any(c.flagged for c in mine + other) else ""
            yield (
                f"{label}{flag}",
                str(conc),
                f"{med_of(mine, 'rate'):,.0f} calls/s",
                f"{med_of(other, 'rate'):,.0f} calls/s",
                fmt_ratio(ratios(cells, ours, theirs, conc)),
                lat(mine),
                lat(other),
                okbad(mine),
                okbad(other),
            )


def session_starts(report: dict[str, Any], key: str, conc: int) -> str:
    starts = report["session_start_ms"].get(f"{key}@{conc}", [])
    return f"{statistics.median(starts):.0f} / {max(starts):.0f}" if starts else "n/a"


def render(args: argparse.Namespace, report: dict[str, Any], cells: dict[tuple[str, int], list[CellResult]]) -> str:
    v, p = report["versions"], report["mcp_proxy_versions"]
    out = [
        "# DataPulse bridge vs mcp-proxy: same stdio server, same run",
        "",
        f"* DataPulse side: python {v['python']}, datapulse {v['datapulse']}, mcp {v['mcp']}, uvicorn {v['uvicorn']}, "
        f"uvloop {v['uvloop']}, httptools {v['httptools']}; {platform.platform()}",
        f"* mcp-proxy side ({MCP_PROXY_VENV.relative_to(REPO)}): "
        + (", ".join(f"{name} {version}" for name, version in p.items()) or "not run"),
        f"* Stdio server (both sides): `{shlex.join(['python', *CHILD_ARGV[1:]])}`, tool `echo`",
        "* Client: a 2025-11-25 session per connection (`initialize` + `notifications/initialized`, then "
        "`tools/call` with `Mcp-Session-Id`), the same code for every target; `Authorization: Bearer` on DataPulse",
        f"* Command: `{report['command']}`",
        f"* Rounds: {args.rounds} × {args.duration:g} s per cell at concurrency "
        f"{', '.join(map(str, args.concurrencies))}; target order rotated each round; idle wait before every cell; "
        f"{report['pinning']} (the stdio children inherit the server pin); fd limit {report['fd_limit']}",
    ]
    for key, info in report["servers"].items():
        out.append(f"* `{key}`: `{info['command']}` ({info['fast_stack']} loaded)")
    out.extend(f"* **Note**: {note}" for note in report["notes"])
    rows = list(result_rows(args, cells))
    if rows:
        out += [
            "",
            "## Results (ratio = DataPulse ÷ mcp-proxy in the same round; median over rounds [min–max])",
            "",
            "| what | c | DataPulse | mcp-proxy | DP÷mcp-proxy | DP p50 / p99 ms | mcp-proxy p50 / p99 ms "
            "| DP ok/bad | mcp-proxy ok/bad |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        out += ["| " + " | ".join(row) + " |" for row in rows]
    out += [
        "",
        "## Per target (median over rounds; server CPU = the bridge and its stdio children, as a share of one CPU)",
        "",
        "| target | c | calls/s [min–max] | p50 / p99 ms | server CPU | client CPU | other load CPU0 / CPU1 | ok/bad "
        "| session start ms, median / max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, target in TARGETS.items():
        for conc in args.concurrencies:
            runs = cells.get((key, conc), [])
            if not runs:
                continue
            med, lo, hi = spread([c.rate for c in runs])
            out.append(
                f"| **{key}** {target.label} | {conc} | {med:,.0f} [{lo:,.0f}–{hi:,.0f}] | {lat(runs)} "
                f"| {statistics.median(c.server_cpu for c in runs):.0%} "
                f"| {statistics.median(c.client_cpu for c in runs):.0%} | {other_load(runs)} | {okbad(runs)} "
                f"| {session_starts(report, key, conc)} |"
            )
    total_ok = sum(c.ok for runs in cells.values() for c in runs)
    total_bad = sum(c.bad + c.timeouts + c.setup_failed for runs in cells.values() for c in runs)
    out += [
        "",
        f"Correctness: {total_ok:,} calls checked ok, {total_bad} bad "
        "(every response parsed: id, echo text, no error).",
        "Audit records written (file sink, JSON lines): "
        + (", ".join(f"{key} {count:,}" for key, count in report["audit_records"].items()) or "none"),
        f"Wall time: {report['wall_s']:.0f} s.",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    report: dict[str, Any] = {
        "versions": versions(),
        "mcp_proxy_versions": {},
        "command": shlex.join([sys.executable, "-m", "bench.bridge", *(sys.argv[1:] if argv is None else argv)]),
        "pinning": pin_client(),
        "fd_limit": raise_fd_limit()[0],
        "config": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrencies": args.concurrencies,
        },
        "servers": {},
        "notes": [],
        "session_start_ms": {},
        "audit_records": {},
    }
    keys = resolve_targets(args, report)
    report["config"]["targets"] = keys
    if "mcp-proxy" in keys:
        report["mcp_proxy_versions"] = mcp_proxy_versions()
    cells = uvloop.run(throughput(args, keys, report))
    report["wall_s"] = time.monotonic() - started
    print(render(args, report, cells), flush=True)
    if args.json is not None:
        report["cells"] = {f"{key}@{conc}": [c.summary() for c in runs] for (key, conc), runs in cells.items()}
        report["ratios"] = {
            f"{ours}/{theirs}@{conc}": ratios(cells, ours, theirs, conc)
            for ours, theirs, _label in COMPARISONS
            for conc in args.concurrencies
            if (ours, conc) in cells and (theirs, conc) in cells
        }
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
