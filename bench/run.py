# ruff: noqa: RUF001
"""DataPulse vs the official MCP Python SDK, measured side by side in the same run.

Usage (from the repository root)::

    .venv/bin/python -m bench.run                 # full default run (5 rounds x 5 s cells, memory, 10k sessions)
    .venv/bin/python -m bench.run --quick         # smoke run, < 60 s
    .venv/bin/python -m bench.run --only modern,memory --json out.json

See bench/README.md for what is measured and how to read the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvloop

from bench.loadgen import CellResult, Endpoint, run_cell
from bench.memory import idle_session_memory, many_sessions
from bench.servers import Server, pin_client, raise_fd_limit, versions, wait_idle


@dataclass(frozen=True)
class Target:
    key: str
    server: str
    kind: str
    label: str


TARGETS = {
    t.key: t
    for t in (
        Target("ceiling", "ceiling", "ceiling", "CEILING: bare Starlette JSON-RPC route (client calibration)"),
        Target("dp-modern", "datapulse", "modern", "DataPulse /mcp 2026-07-28 stateless (auth on)"),
        Target("sdk-modern", "sdk-http", "modern", "SDK streamable_http_app() defaults, 2026-07-28"),
        Target("sdk-modern-json", "sdk-http-json", "modern", "SDK streamable_http_app(json_response=True), 2026-07-28"),
        Target("dp-session", "datapulse", "session", "DataPulse /mcp 2025-11-25 session (auth on)"),
        Target("sdk-session", "sdk-http", "session", "SDK streamable_http_app() defaults, 2025-11-25 session"),
        Target("dp-sse", "datapulse", "sse", "DataPulse /sse 2024-11-05 (auth on)"),
        Target("sdk-sse", "sdk-sse", "sse", "SDK sse_app(), 2024-11-05"),
        Target("dp-api", "datapulse", "api", "DataPulse API /events + /message (auth on)"),
    )
}

GROUPS: dict[str, list[str]] = {
    "modern": ["dp-modern", "sdk-modern", "sdk-modern-json"],
    "session": ["dp-session", "sdk-session"],
    "sse": ["dp-sse", "sdk-sse"],
    "api": ["dp-api", "sdk-sse"],
    "memory": [],
    "sessions10k": [],
}


@dataclass(frozen=True)
class Comparison:
    group: str
    label: str
    ours: str
    theirs: str
    goal: float | None
    goal_label: str = ""


COMPARISONS = [
    Comparison("modern", "/mcp 2026-07-28 stateless ÷ SDK default", "dp-modern", "sdk-modern", 1.5, "≥1.5× SDK"),
    Comparison("modern", "/mcp 2026-07-28 ÷ SDK json_response=True (info)", "dp-modern", "sdk-modern-json", None),
    Comparison("session", "/mcp 2025-11-25 session ÷ SDK", "dp-session", "sdk-session", 2.0, "≥2× SDK"),
    Comparison("sse", "/sse 2024-11-05 ÷ SDK sse_app", "dp-sse", "sdk-sse", 1.5, "≥1.5× SDK"),
    Comparison("api", "DataPulse API ÷ SDK sse_app (no SDK equivalent)", "dp-api", "sdk-sse", None),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="measurement rounds (default 5; quick: 1)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per cell (default 5; quick: 0.8)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per target (default 2)")
    parser.add_argument("--concurrency", default="32,256", help="comma-separated client counts (default 32,256)")
    parser.add_argument("--memory-n", default=None, help="idle-session counts (default 1000,5000; quick: 300)")
    parser.add_argument("--many", type=int, default=None, help="sessions held at once (default 10000; quick: 500)")
    parser.add_argument("--quick", action="store_true", help="short smoke run (< 60 s), not for conclusions")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help=f"run only these parts (repeatable or comma-separated): {', '.join(GROUPS)}",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every raw figure to this JSON file")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds if args.rounds is not None else (1 if quick else 5)
    args.duration = args.duration if args.duration is not None else (0.8 if quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.2 if quick else 2.0)
    args.concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    memory_n = args.memory_n or ("300" if quick else "1000,5000")
    args.memory_ns = [int(n) for n in memory_n.split(",") if n]
    args.many = args.many if args.many is not None else (500 if quick else 10_000)
    only = {part.strip() for item in args.only for part in item.split(",") if part.strip()}
    unknown = only - set(GROUPS)
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}")
    args.parts = [g for g in GROUPS if not only or g in only]
    return args


# --- throughput ---------------------------------------------------------------------------------------------------
async def throughput(args: argparse.Namespace, report: dict[str, Any]) -> dict[tuple[str, int], list[CellResult]]:
    keys = ["ceiling"]
    for part in args.parts:
        for key in GROUPS[part]:
            if key not in keys:
                keys.append(key)
    if len(keys) == 1:
        return {}
    server_kinds = list(dict.fromkeys(TARGETS[k].server for k in keys))
    servers = {kind: Server(kind) for kind in server_kinds}
    report["servers"] = {}
    for server in servers.values():
        server.start()
    try:
        for kind, server in servers.items():
            await server.wait_ready()
            report["servers"][kind] = {"command": server.command(), "fast_stack": server.fast_stack()}
        everyone = list(servers.values())

        def endpoint(key: str) -> tuple[Server, Endpoint]:
            server = servers[TARGETS[key].server]
            return server, Endpoint("127.0.0.1", server.port, server.token)

        log("verify: one client, every answer checked")
        for key in keys:
            server, ep = endpoint(key)
            cell = await run_cell(TARGETS[key].kind, ep, 1, 0.2)
            status = "ok" if not cell.flagged else f"FAILED {cell.errors}"
            log(f"  {key:16} {cell.ok} ok / {cell.bad} bad  {status}")
            if cell.flagged:
                raise SystemExit(f"{key} failed verification: {cell.errors}; server log:\n{server.log_tail()}")
        if args.warmup > 0:
            log(f"warm-up: {args.warmup:g} s per target at c={args.concurrencies[0]}")
            for key in keys:
                server, ep = endpoint(key)
                await wait_idle(everyone)
                await run_cell(TARGETS[key].kind, ep, args.concurrencies[0], args.warmup)

        cells: dict[tuple[str, int], list[CellResult]] = {(k, c): [] for k in keys for c in args.concurrencies}
        for rnd in range(args.rounds):
            order = keys[rnd % len(keys) :] + keys[: rnd % len(keys)]
            if rnd % 2:
                order.reverse()  # so that neither side of a comparison always runs first
            concurrencies = args.concurrencies if rnd % 2 == 0 else list(reversed(args.concurrencies))
            log(f"round {rnd + 1}/{args.rounds}: order {' '.join(order)}")
            for conc in concurrencies:
                for key in order:
                    server, ep = endpoint(key)
                    await wait_idle(everyone)
                    cell = await run_cell(
                        TARGETS[key].kind, ep, conc, args.duration, server_cpu_seconds=server.cpu_seconds
                    )
                    cells[(key, conc)].append(cell)
                    flag = "  FLAGGED " + "; ".join(cell.errors[:2]) if cell.flagged else ""
                    log(
                        f"  c={conc:<4} {key:16} {cell.rate:9,.0f} calls/s  p50 {cell.percentile(0.5):7.1f}  "
                        f"p99 {cell.percentile(0.99):7.1f} ms  srv {cell.server_cpu:4.0%} cli {cell.client_cpu:4.0%}"
                        f"  {cell.ok} ok/{cell.bad} bad{flag}"
                    )
        return cells
    finally:
        for server in servers.values():
            server.stop()
        for server in servers.values():
            if server.log_path is not None and "Traceback" in server.log_tail(200_000):
                report.setdefault("server_tracebacks", {})[server.kind] = server.log_tail(3000)
                log(f"{server.kind} logged a traceback: {server.log_path}")
            server.discard_log()


def spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def ratios(cells: dict[tuple[str, int], list[CellResult]], ours: str, theirs: str, conc: int) -> list[float]:
    mine, other = cells.get((ours, conc), []), cells.get((theirs, conc), [])
    return [a.rate / b.rate for a, b in zip(mine, other, strict=True) if b.rate > 0]


# --- report -------------------------------------------------------------------------------------------------------
def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fmt_ratio(values: list[float]) -> str:
    if not values:
        return "n/a"
    med, lo, hi = spread(values)
    return f"**{med:.2f}×** [{lo:.2f}–{hi:.2f}]"


def med_of(cells: list[CellResult], attr: str) -> float:
    if attr == "rate":
        return statistics.median(c.rate for c in cells)
    q = 0.5 if attr == "p50" else 0.99
    return statistics.median(c.percentile(q) for c in cells)


def mb(value: int) -> str:
    return f"{value / 2**20:.0f}"


def lat(runs: list[CellResult]) -> str:
    return f"{med_of(runs, 'p50'):.1f} / {med_of(runs, 'p99'):.1f}"


def okbad(runs: list[CellResult]) -> str:
    return f"{sum(c.ok for c in runs):,}/{sum(c.bad + c.timeouts + c.setup_failed for c in runs)}"


def other_load(runs: list[CellResult]) -> str:
    """Median CPU used by other processes on the server core / the client core during the window."""
    if not runs or not all(len(c.cpu_busy) > 1 for c in runs):
        return "n/a"
    cpu0 = statistics.median(max(0.0, c.cpu_busy[0] - c.server_cpu) for c in runs)
    cpu1 = statistics.median(max(0.0, c.cpu_busy[1] - c.client_cpu) for c in runs)
    return f"{cpu0:.0%} / {cpu1:.0%}"


def header_lines(args: argparse.Namespace, report: dict[str, Any]) -> list[str]:
    v = report["versions"]
    lines = [
        "# DataPulse vs MCP Python SDK: same-run benchmark",
        "",
        f"* Versions: python {v['python']}, datapulse {v['datapulse']}, mcp {v['mcp']}, uvicorn {v['uvicorn']}, "
        f"uvloop {v['uvloop']}, httptools {v['httptools']}, starlette {v['starlette']}, anyio {v['anyio']}, "
        f"pydantic {v['pydantic']}; {platform.platform()}",
        f"* Command: `{report['command']}`",
        f"* Rounds: {args.rounds} × {args.duration:g} s per cell at concurrency "
        f"{', '.join(map(str, args.concurrencies))}; target order rotated each round; idle wait before every cell; "
        f"{report['pinning']}; fd limit {report['fd_limit']}",
    ]
    for kind, info in report.get("servers", {}).items():
        lines.append(f"* Server `{kind}`: `{info['command']}` ({info['fast_stack']} loaded)")
    return lines


def result_rows(
    args: argparse.Namespace, report: dict[str, Any], cells: dict[tuple[str, int], list[CellResult]]
) -> Iterator[tuple[str, ...]]:
    for comp in COMPARISONS:
        if comp.group not in args.parts:
            continue
        for conc in args.concurrencies:
            mine, other = cells.get((comp.ours, conc), []), cells.get((comp.theirs, conc), [])
            if not mine or not other:
                continue
            flag = " ⚠ bad responses" if any(c.flagged for c in mine + other) else ""
            ratio = fmt_ratio(ratios(cells, comp.ours, comp.theirs, conc))
            yield (
                f"{comp.label}{flag}",
                str(conc),
                f"{med_of(mine, 'rate'):,.0f} calls/s",
                f"{med_of(other, 'rate'):,.0f} calls/s",
                ratio,
                lat(mine),
                lat(other),
                okbad(mine),
                okbad(other),
            )
    for n, pair in sorted(report.get("memory", {}).items()):
        dp, sdk = pair.get("datapulse"), pair.get("sdk-sse")
        if not dp or not sdk:
            continue
        ratio = dp["kib_per_session"] / sdk["kib_per_session"] if sdk["kib_per_session"] > 0 else float("nan")
        warn = "" if dp["ok"] and sdk["ok"] else " ⚠ sessions failed"
        yield (
            f"idle SSE session memory, ΔRSS÷N (GET stream only){warn}",
            f"N={n:,}",
            f"{dp['kib_per_session']:.1f} KiB",
            f"{sdk['kib_per_session']:.1f} KiB",
            f"**{ratio:.2f}×**",
            f"RSS {mb(dp['rss_before'])}→{mb(dp['rss_after'])} MB, {dp['fds_after']:,} fds",
            f"RSS {mb(sdk['rss_before'])}→{mb(sdk['rss_after'])} MB, {sdk['fds_after']:,} fds",
            f"{dp['alive']:,}/{n:,} alive",
            f"{sdk['alive']:,}/{n:,} alive",
        )
    many = report.get("many")
    if many:
        yield (
            "concurrent idle SSE sessions, one DataPulse process",
            f"N={many['n']:,}",
            f"{many['alive_after_calls']:,} alive, {many['calls_ok']:,} tools/call ok",
            "—",
            "—",
            f"RSS {mb(many['rss_before'])}→{mb(many['rss_idle'])} MB ({many['kib_per_session']:.1f} KiB/session), "
            f"{many['fds']:,} fds",
            "—",
            f"opened {many['opened']:,} in {many['open_s']:.1f} s",
            "—",
        )


def render(args: argparse.Namespace, report: dict[str, Any], cells: dict[tuple[str, int], list[CellResult]]) -> str:
    out = header_lines(args, report)
    add = out.append
    add("")
    add("## Results (ratio = DataPulse ÷ SDK in the same round; median over rounds [min–max])")
    add("")
    add("| what | c / N | DataPulse | SDK | DP÷SDK | DP p50 / p99 ms | SDK p50 / p99 ms | DP ok/bad | SDK ok/bad |")
    add("|---|---|---|---|---|---|---|---|---|")
    for row in result_rows(args, report, cells):
        add("| " + " | ".join(row) + " |")
    add("")
    if cells:
        add("## Per target (median over rounds; ÷ceiling = same round, same concurrency)")
        add("")
        add(
            "| target | c | calls/s [min–max] | ÷ceiling | p50 / p99 ms | server CPU | client CPU "
            "| other load CPU0 / CPU1 | ok/bad |"
        )
        add("|---|---|---|---|---|---|---|---|---|")
        for key, target in TARGETS.items():
            for conc in args.concurrencies:
                runs = cells.get((key, conc), [])
                if not runs:
                    continue
                med, lo, hi = spread([c.rate for c in runs])
                ceil_ratio = ratios(cells, key, "ceiling", conc)
                ceil_text = f"{statistics.median(ceil_ratio):.3f}" if ceil_ratio else "n/a"
                add(
                    f"| **{key}** {target.label} | {conc} | {med:,.0f} [{lo:,.0f}–{hi:,.0f}] | {ceil_text}"
                    f" | {lat(runs)} | {statistics.median(c.server_cpu for c in runs):.0%}"
                    f" | {statistics.median(c.client_cpu for c in runs):.0%} | {other_load(runs)} | {okbad(runs)} |"
                )
        add("")
    add("## Targets")
    add("")
    for line in goals(args, report, cells):
        add(f"* {line}")
    total_ok = sum(c.ok for runs in cells.values() for c in runs)
    total_bad = sum(c.bad + c.timeouts + c.setup_failed for runs in cells.values() for c in runs)
    many = report.get("many")
    if many:
        total_ok += many["calls_ok"]
        total_bad += many["alive_before_calls"] - many["calls_ok"]
    add("")
    add(
        f"Correctness: {total_ok:,} calls checked ok, {total_bad} bad (every response parsed: id, echo text, no error)."
    )
    add(f"Wall time: {report['wall_s']:.0f} s.")
    return "\n".join(out)


def goals(
    args: argparse.Namespace, report: dict[str, Any], cells: dict[tuple[str, int], list[CellResult]]
) -> list[str]:
    lines = []
    for comp in COMPARISONS:
        if comp.goal is None or comp.group not in args.parts:
            continue
        meds = []
        flagged = False
        for conc in args.concurrencies:
            values = ratios(cells, comp.ours, comp.theirs, conc)
            if values:
                meds.append((conc, statistics.median(values)))
            flagged |= any(c.flagged for c in cells.get((comp.ours, conc), []) + cells.get((comp.theirs, conc), []))
        if not meds:
            continue
        met = all(m >= comp.goal for _, m in meds) and not flagged
        detail = ", ".join(f"c={c}: {m:.2f}×" for c, m in meds)
        verdict = "MET" if met else "NOT MET"
        note = " (bad responses in a cell)" if flagged else ""
        lines.append(f"{comp.label.split(' ÷')[0]} throughput {comp.goal_label}: {detail} → **{verdict}**{note}")
    memory = report.get("memory", {})
    mem_ratios = []
    for n, pair in sorted(memory.items()):
        if pair.get("datapulse") and pair.get("sdk-sse"):
            ok = pair["datapulse"]["ok"] and pair["sdk-sse"]["ok"]
            mem_ratios.append((n, pair["datapulse"]["kib_per_session"] / pair["sdk-sse"]["kib_per_session"], ok))
    if mem_ratios:
        met = all(r <= 1 / 3 and ok for _, r, ok in mem_ratios)
        detail = ", ".join(f"N={n}: {r:.2f}×" for n, r, _ in mem_ratios)
        lines.append(f"idle SSE session memory ≤⅓ SDK: {detail} → **{'MET' if met else 'NOT MET'}**")
    many = report.get("many")
    if many:
        verdict = "MET" if many["ok"] and many["n"] >= 10_000 else "NOT MET"
        if many["n"] < 10_000:
            verdict += f" (only {many['n']:,} tried)"
        lines.append(
            f"10,000 concurrent idle SSE sessions: {many['alive_after_calls']:,}/{many['n']:,} alive, "
            f"{many['calls_ok']:,} tools/call ok, /health sse streams {many['health_sse_streams']} → **{verdict}**"
        )
    return lines


async def main_async(args: argparse.Namespace, report: dict[str, Any]) -> dict[tuple[str, int], list[CellResult]]:
    cells = await throughput(args, report)
    if "memory" in args.parts:
        report["memory"] = {}
        settle = 0.7 if args.quick else 2.0
        for n in args.memory_ns:
            for kind in ("datapulse", "sdk-sse"):
                log(f"memory: {kind}, {n} idle SSE sessions (fresh server)")
                result = await idle_session_memory(kind, n, settle_s=settle)
                report["memory"].setdefault(n, {})[kind] = result
                log(
                    f"  {result['kib_per_session']:.1f} KiB/session, opened {result['opened']}/{n} "
                    f"in {result['open_s']} s, alive {result['alive']}, errors {result['errors'][:2]}"
                )
    if "sessions10k" in args.parts:
        log(f"many sessions: {args.many} idle SSE sessions on one DataPulse process")
        many = await many_sessions(args.many, settle_s=0.7 if args.quick else 2.0)
        report["many"] = many
        log(
            f"  opened {many['opened']} in {many['open_s']} s, alive {many['alive_after_calls']}, "
            f"calls ok {many['calls_ok']} in {many['call_s']} s, health {many['health_sse_streams']}, "
            f"errors {many['errors'][:2]}"
        )
    return cells


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    report: dict[str, Any] = {
        "versions": versions(),
        "command": shlex.join([sys.executable, "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)]),
        "pinning": pin_client(),
        "fd_limit": raise_fd_limit()[0],
        "config": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrencies": args.concurrencies,
            "memory_n": args.memory_ns,
            "many": args.many,
            "parts": args.parts,
        },
    }
    cells = uvloop.run(main_async(args, report))
    report["wall_s"] = time.monotonic() - started
    print(render(args, report, cells), flush=True)
    if args.json is not None:
        report["cells"] = {f"{key}@{conc}": [c.summary() for c in runs] for (key, conc), runs in cells.items()}
        report["ratios"] = {
            f"{comp.ours}/{comp.theirs}@{conc}": ratios(cells, comp.ours, comp.theirs, conc)
            for comp in COMPARISONS
            for conc in args.concurrencies
            if (comp.ours, conc) in cells and (comp.theirs, conc) in cells
        }
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
