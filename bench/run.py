# ruff: noqa: RUF001
"""DataPulse vs the official MCP Python SDK, measured side by side in the same run.

Usage (from the repository root)::

    .venv/bin/python -m bench.run                 # full default run (5 rounds x 5 s cells, workers, memory, 10k)
    .venv/bin/python -m bench.run --quick         # smoke run
    .venv/bin/python -m bench.run --only modern,memory --json out.json

See bench/README.md for what is measured and how to read the report.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Bench, Column, Compare, Defaults, Phase, Target, Verdict, extra_median
from bench.memory import idle_session_memory, many_sessions
from bench.servers import RedisProcess, Server, log

ON = "(auth, scopes, rate limits, audit on)"
"""What DataPulse runs with in every cell (`bench.servers.datapulse_env`); the SDK apps run with none of it."""
TARGETS = (
    Target("ceiling", "CEILING: bare Starlette JSON-RPC route (client calibration)", "ceiling", "ceiling"),
    Target("dp-modern", f"DataPulse /mcp 2026-07-28 stateless {ON}", "datapulse", "modern", ("modern",)),
    Target("sdk-modern", "SDK streamable_http_app() defaults, 2026-07-28", "sdk-http", "modern", ("modern",)),
    Target(
        "sdk-modern-json",
        "SDK streamable_http_app(json_response=True, stateless_http=True), 2026-07-28: the SDK's fastest",
        "sdk-http-json",
        "modern",
        ("modern",),
    ),
    Target(
        "sdk-modern-json-sessions",
        "SDK streamable_http_app(json_response=True), 2026-07-28 (session manager kept)",
        "sdk-http-json-sessions",
        "modern",
        ("modern",),
    ),
    Target("dp-session", f"DataPulse /mcp 2025-11-25 session {ON}", "datapulse", "session", ("session",)),
    Target("sdk-session", "SDK streamable_http_app() defaults, 2025-11-25", "sdk-http", "session", ("session",)),
    Target("dp-sse", f"DataPulse /sse 2024-11-05 {ON}", "datapulse", "sse", ("sse",)),
    Target("sdk-sse", "SDK sse_app(), 2024-11-05", "sdk-sse", "sse", ("sse", "api")),
    Target("dp-api", f"DataPulse API /events + /message {ON}", "datapulse", "api", ("api",)),
)
WORKER_TARGETS = tuple(
    Target(f"dp-w{n}", f"DataPulse /mcp 2026-07-28, serve --workers {n} (unpinned)", f"dp-w{n}", "modern", ("workers",))
    for n in (1, 2)
)
COMPARISONS = (
    Compare(
        "/mcp 2026-07-28 ÷ SDK json_response=True, stateless_http=True (SDK's fastest)",
        "dp-modern",
        "sdk-modern-json",
        1.5,
        "/mcp 2026-07-28 throughput ≥ 1.5× SDK streamable_http_app(json_response=True, stateless_http=True)",
    ),
    Compare(
        "/mcp 2026-07-28 ÷ SDK json_response=True (session manager kept)",
        "dp-modern",
        "sdk-modern-json-sessions",
        1.5,
        "/mcp 2026-07-28 throughput ≥ 1.5× SDK streamable_http_app(json_response=True)",
    ),
    Compare(
        "/mcp 2026-07-28 ÷ SDK default",
        "dp-modern",
        "sdk-modern",
        1.5,
        "/mcp 2026-07-28 throughput ≥ 1.5× SDK streamable_http_app() defaults",
    ),
    Compare("/mcp 2025-11-25 session ÷ SDK", "dp-session", "sdk-session", 3.0, "/mcp 2025-11-25 session ≥ 3× SDK"),
    Compare("/sse 2024-11-05 ÷ SDK sse_app", "dp-sse", "sdk-sse", 2.0, "/sse 2024-11-05 throughput ≥ 2× SDK sse_app()"),
    Compare(
        "DataPulse API ÷ SDK sse_app (no SDK equivalent)",
        "dp-api",
        "sdk-sse",
        2.0,
        "DataPulse API throughput ≥ 2× SDK sse_app()",
    ),
    Compare(
        "/mcp 2026-07-28 share of the bare-Starlette ceiling",
        "dp-modern",
        "ceiling",
        0.3,
        "/mcp 2026-07-28 share of the bare-Starlette ceiling ≥ 0.3",
        row=False,
    ),
    Compare("/mcp 2026-07-28: serve --workers 2 ÷ --workers 1 (informative, unpinned)", "dp-w2", "dp-w1"),
)
MEMORY_GOAL_KIB = 20.0
"""DataPulse's ΔRSS ÷ N per idle SSE session."""
MEMORY_GOAL_RATIO = 1 / 3
"""DataPulse's KiB per idle SSE session ÷ the SDK's."""
MANY_GOAL = 10_000


def mb(value: int) -> str:
    return f"{value / 2**20:.0f}"


class Run(Bench):
    prog = "bench.run"
    title = "DataPulse vs MCP Python SDK: same-run benchmark"
    defaults = Defaults(rounds=5, duration=5.0, warmup=2.0, concurrency="32,256")
    quick = Defaults(rounds=1, duration=0.8, warmup=0.2)
    targets = TARGETS
    comparisons = COMPARISONS
    parts = ("modern", "session", "sse", "api", "workers", "memory", "sessions10k")
    extra_parts = ("memory", "sessions10k")
    theirs = "baseline"
    ratio_header = "DP÷baseline"
    reference = "ceiling"
    columns = (Column("redis CPU (workers)", extra_median("aux_cpu", "{:.0%}")),)
    fresh_servers = True
    """Each round on processes of its own: the same code in two processes measured up to 12% apart in one run."""

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--memory-n", help="idle-session counts (default 1000,5000; quick: 300)")
        parser.add_argument("--many", type=int, help="sessions held at once (default 10000; quick: 500)")

    def check_args(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
        args.memory_ns = [int(n) for n in (args.memory_n or ("300" if args.quick else "1000,5000")).split(",") if n]
        args.many = args.many if args.many is not None else (500 if args.quick else MANY_GOAL)

    def phases(self) -> list[Phase]:
        store = RedisProcess()
        url = store.url
        cluster = {"DATAPULSE_REDIS_URL": url, "DATAPULSE_REQUEST_STATE_KEYS": secrets.token_urlsafe(48)}

        def workers(n: int) -> Server:
            env = {**cluster, "DATAPULSE_REDIS_KEY_PREFIX": f"bench-w{n}"}
            args = ("--workers", str(n))
            return Server("datapulse", name=f"dp-w{n}", cpus=None, args=args, env=env, ready_text="listening on")

        return [
            Phase(self, TARGETS),
            Phase(
                self,
                WORKER_TARGETS,
                servers={"redis": store, "dp-w1": workers(1), "dp-w2": workers(2)},
                support=("redis",),
                pinned=False,
                title="workers: ",
            ),
        ]

    def header_lines(self) -> list[str]:
        lines = []
        if any(key.startswith("dp-w") for key, _ in self.results.cells):
            lines.append(
                "* Part `workers`: `dp-w1` and `dp-w2` are not pinned (the servers and `redis-server` may use both "
                "CPUs; the client stays in the runner, pinned as above). `--workers` > 1 needs cluster mode, so both "
                "run with the same Redis (own key prefixes) and the same environment; rate limits are then counted "
                "in Redis."
            )
        return lines

    async def measure_part(self, part: str) -> None:
        settle = 0.7 if self.args.quick else 2.0
        if part == "memory":
            memory: dict[int, dict[str, Any]] = self.report.setdefault("memory", {})
            for n in self.args.memory_ns:
                for kind in ("datapulse", "sdk-sse"):
                    log(f"memory: {kind}, {n} idle SSE sessions (fresh server)")
                    result = await idle_session_memory(kind, n, settle_s=settle)
                    memory.setdefault(n, {})[kind] = result
                    log(
                        f"  {result['kib_per_session']:.1f} KiB/session, opened {result['opened']}/{n} "
                        f"in {result['open_s']} s, alive {result['alive']}, errors {result['errors'][:2]}"
                    )
        elif part == "sessions10k":
            log(f"many sessions: {self.args.many} idle SSE sessions on one DataPulse process")
            many = self.report["many"] = await many_sessions(self.args.many, settle_s=settle)
            log(
                f"  opened {many['opened']} in {many['open_s']} s, alive {many['alive_after_calls']}, "
                f"calls ok {many['calls_ok']} in {many['call_s']} s, health {many['health_sse_streams']}, "
                f"errors {many['errors'][:2]}"
            )

    def memory_pairs(self) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
        pairs = sorted(self.report.get("memory", {}).items())
        return [(n, p["datapulse"], p["sdk-sse"]) for n, p in pairs if p.get("datapulse") and p.get("sdk-sse")]

    def extra_rows(self) -> list[list[str]]:
        rows = []
        for n, dp, sdk in self.memory_pairs():
            ratio = dp["kib_per_session"] / sdk["kib_per_session"] if sdk["kib_per_session"] > 0 else float("nan")
            warn = "" if dp["ok"] and sdk["ok"] else " ⚠ sessions failed"
            rows.append(
                [
                    f"idle SSE session memory, ΔRSS÷N (GET stream only), SDK sse_app(){warn}",
                    f"N={n:,}",
                    f"{dp['kib_per_session']:.1f} KiB",
                    f"{sdk['kib_per_session']:.1f} KiB",
                    f"**{ratio:.2f}×**",
                    "—",
                    f"RSS {mb(dp['rss_before'])}→{mb(dp['rss_after'])} MB, {dp['fds_after']:,} fds",
                    f"RSS {mb(sdk['rss_before'])}→{mb(sdk['rss_after'])} MB, {sdk['fds_after']:,} fds",
                    f"{dp['alive']:,}/{n:,} alive",
                    f"{sdk['alive']:,}/{n:,} alive",
                ]
            )
        many = self.report.get("many")
        if many:
            rows.append(
                [
                    "concurrent idle SSE sessions, one DataPulse process",
                    f"N={many['n']:,}",
                    f"{many['alive_after_calls']:,} alive, {many['calls_ok']:,} tools/call ok",
                    "—",
                    "—",
                    "—",
                    f"RSS {mb(many['rss_before'])}→{mb(many['rss_idle'])} MB "
                    f"({many['kib_per_session']:.1f} KiB/session), {many['fds']:,} fds",
                    "—",
                    f"opened {many['opened']:,} in {many['open_s']:.1f} s",
                    "—",
                ]
            )
        return rows

    def extra_verdicts(self) -> list[Verdict]:
        out = []
        pairs = self.memory_pairs()
        if pairs:
            all_ok = all(dp["ok"] and sdk["ok"] for _, dp, sdk in pairs)
            note = "" if all_ok else " (sessions failed)"
            kib = [(n, dp["kib_per_session"]) for n, dp, _ in pairs]
            out.append(
                Verdict(
                    f"idle SSE session memory ≤ {MEMORY_GOAL_KIB:g} KiB per session (DataPulse ΔRSS÷N): "
                    + ", ".join(f"N={n}: {k:.1f} KiB" for n, k in kib)
                    + note,
                    all(k <= MEMORY_GOAL_KIB for _, k in kib) and all_ok,
                )
            )
            ratios = [(n, dp["kib_per_session"] / sdk["kib_per_session"]) for n, dp, sdk in pairs]
            out.append(
                Verdict(
                    "idle SSE session memory ≤⅓ SDK sse_app(): "
                    + ", ".join(f"N={n}: {r:.2f}×" for n, r in ratios)
                    + note,
                    all(r <= MEMORY_GOAL_RATIO for _, r in ratios) and all_ok,
                )
            )
        many = self.report.get("many")
        if many:
            tried = "" if many["n"] >= MANY_GOAL else f" (only {many['n']:,} tried)"
            out.append(
                Verdict(
                    f"{MANY_GOAL:,} concurrent idle SSE sessions: {many['alive_after_calls']:,}/{many['n']:,} alive, "
                    f"{many['calls_ok']:,} tools/call ok, /health sse streams {many['health_sse_streams']}{tried}",
                    many["ok"] and many["n"] >= MANY_GOAL,
                )
            )
        return out

    def extra_correctness(self) -> tuple[int, int]:
        many = self.report.get("many")
        return (many["calls_ok"], many["alive_before_calls"] - many["calls_ok"]) if many else (0, 0)

    def problems(self) -> list[str]:
        out = [f"memory N={n}: sessions failed" for n, dp, sdk in self.memory_pairs() if not (dp["ok"] and sdk["ok"])]
        many = self.report.get("many")
        if many and not many["ok"]:
            out.append(f"many sessions: {many['errors'][:2]}")
        return out


def main(argv: list[str] | None = None) -> None:
    Run.main(argv)


if __name__ == "__main__":
    main()
