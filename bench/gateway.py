# ruff: noqa: RUF001, RUF002
"""Gateway: ``tools/call`` forwarded through ``datapulse proxy`` vs the upstream alone vs FastMCP's proxy, same run.

Usage (from the repository root; the first run makes FastMCP's own venv, ``.bench-venv/fastmcp``, about a minute)::

    .venv/bin/python -m bench.gateway                       # full run: 5 rounds x 5 s cells at c = 32, 256
    .venv/bin/python -m bench.gateway --quick               # smoke run; figures are not for conclusions
    .venv/bin/python -m bench.gateway --layout split        # the proxy on its own core (see LAYOUTS)
    .venv/bin/python -m bench.gateway --only datapulse,fastmcp --json out.json

One upstream, the SDK's fastest app (``bench.sdk_server`` kind ``sdk-http-json``: ``streamable_http_app(
json_response=True, stateless_http=True)``) serving the ``echo`` tool, and in front of it ``datapulse proxy URL``
(every protective layer on: `bench.servers.datapulse_env`) and FastMCP's proxy (``bench/fastmcp_proxy.py``, in its
own venv: FastMCP is not a dependency of DataPulse). The baseline is a direct call to the upstream. See the
"Gateway" section of bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/gateway.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Bench, Column, Compare, Defaults, Phase, Target, extra_median, fmt_delta
from bench.loadgen import CellResult, run_cell
from bench.servers import MANY_SESSIONS_CAP, REPO, VENV_BIN, Server, _clean_env, log, versions

FASTMCP_VERSION = "4.0.10"
FASTMCP_VENV = REPO / ".bench-venv" / "fastmcp"
FASTMCP_PYTHON = FASTMCP_VENV / "bin" / "python"
FASTMCP_SCRIPT = "bench/fastmcp_proxy.py"
SAME_AS_PROJECT = ("uvicorn", "uvloop", "httptools")
"""Installed in FastMCP's venv at the project venv's versions, so its server stack is the same as DataPulse's."""
UPSTREAM_KIND = "sdk-http-json"

LAYOUTS: dict[str, dict[str, Any]] = {
    "shared": {
        "proxy": "0",
        "upstream": "0",
        "note": "every server pinned to CPU 0 (a proxied call's proxy and upstream share that core, the direct call "
        "has it for the upstream alone, so proxied ÷ direct is a cost ratio: upstream CPU per call ÷ (proxy + "
        "upstream)), the load client to CPU 1",
    },
    "split": {
        "proxy": "0",
        "upstream": "1",
        "note": "the proxies pinned to CPU 0, the upstream to CPU 1 with the load client (the proxy has a core of "
        "its own, as on a separate host; proxied ÷ direct says how far the proxy falls short of the upstream's own "
        "rate)",
    },
}

TARGETS = (
    Target("direct", "the upstream alone (SDK sdk-http-json), 2026-07-28", "upstream", "modern"),
    Target("dp-modern", "DataPulse proxy, /mcp 2026-07-28 stateless", "datapulse", "modern", ("datapulse",)),
    Target("dp-session", "DataPulse proxy, /mcp 2025-11-25 session", "datapulse", "session", ("session",)),
    Target(
        "fastmcp-reuse", "FastMCP create_proxy(connected Client), 2026-07-28", "fastmcp-reuse", "modern", ("fastmcp",)
    ),
    Target("fastmcp", "FastMCP create_proxy(URL), 2026-07-28", "fastmcp", "modern", ("fastmcp",)),
)
PROXIED = [t.key for t in TARGETS if t.key != "direct"]
THROUGHPUT_GOAL = 0.7
"""DataPulse calls/s ÷ direct calls/s (the issue's target)."""
SKIPPED = frozenset({("fastmcp", 256)})
"""(target, concurrency) not measured: FastMCP's default proxy at ≈ 6 calls/s could not drain 256 calls within the
15 s grace after the window (the report says so, `Gateway.header_lines`)."""

COMPARISONS = (
    Compare(
        "DataPulse 2026-07-28 ÷ direct",
        "dp-modern",
        "direct",
        THROUGHPUT_GOAL,
        f"Through DataPulse (/mcp 2026-07-28) ≥ {THROUGHPUT_GOAL}× the upstream alone",
    ),
    Compare("DataPulse 2025 session ÷ direct", "dp-session", "direct"),
    Compare("FastMCP reuse ÷ direct", "fastmcp-reuse", "direct"),
    Compare("FastMCP default ÷ direct", "fastmcp", "direct"),
    Compare(
        "DataPulse 2026-07-28 ÷ FastMCP reuse",
        "dp-modern",
        "fastmcp-reuse",
        1.0,
        "DataPulse (/mcp 2026-07-28) ahead of FastMCP's fastest proxy (a connected Client reused) ≥ 1×",
    ),
    Compare(
        "DataPulse 2026-07-28 ÷ FastMCP default",
        "dp-modern",
        "fastmcp",
        1.0,
        "DataPulse (/mcp 2026-07-28) ahead of FastMCP's default proxy (create_proxy(URL)) ≥ 1×",
    ),
    Compare("DataPulse 2025 session ÷ FastMCP reuse", "dp-session", "fastmcp-reuse"),
)


def wait_listening(port: int, timeout_s: float = 30.0) -> None:
    """Block until something accepts connections on 127.0.0.1:``port`` (the proxies probe the upstream at start)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"the upstream did not listen on {port} within {timeout_s:g} s") from None
            time.sleep(0.05)


@dataclass
class ProxyServer(Server):
    """A proxy in front of ``upstream``: ``kind`` ``datapulse`` (``datapulse proxy``, with `datapulse_env` as for
    ``datapulse serve``), ``fastmcp`` or ``fastmcp-reuse`` (``bench/fastmcp_proxy.py`` in FastMCP's venv)."""

    upstream: Server | None = None

    @property
    def url(self) -> str:
        assert self.upstream is not None
        return f"http://127.0.0.1:{self.upstream.port}/mcp"

    @property
    def argv(self) -> list[str]:
        if self.is_datapulse:
            caps = ["--max-sessions", "--max-sessions-per-principal", "--max-streams-per-principal"]
            limits = [item for flag in caps for item in (flag, str(MANY_SESSIONS_CAP))]
            options = ["--port", str(self.port), "--log-level", "warning", *limits]
            return [str(VENV_BIN / "datapulse"), "proxy", *options, self.url]
        reuse = ["--reuse"] if self.kind == "fastmcp-reuse" else []
        return [str(FASTMCP_PYTHON), FASTMCP_SCRIPT, self.url, str(self.port), *reuse]

    def environment(self) -> dict[str, str]:
        return super().environment() if self.is_datapulse else _clean_env()

    def command(self) -> str:
        if self.is_datapulse:
            return super().command()
        argv = [str(FASTMCP_PYTHON.relative_to(REPO)), *self.argv[1:]]
        return f"taskset -c {self.cpus} {' '.join(argv)}" if self.cpus else " ".join(argv)

    def start(self) -> None:
        assert self.upstream is not None
        wait_listening(self.upstream.port)
        super().start()


# --- FastMCP's venv -----------------------------------------------------------------------------------------------
def package_versions(python: Path, names: tuple[str, ...]) -> dict[str, str]:
    code = (
        "import json, sys; from importlib.metadata import version as v\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try: out[name] = v(name)\n"
        "    except Exception: out[name] = 'not installed'\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run([str(python), "-c", code, *names], capture_output=True, timeout=60, check=True)
    return dict(json.loads(done.stdout))


def ensure_fastmcp() -> None:
    """Make ``.bench-venv/fastmcp`` with ``fastmcp==FASTMCP_VERSION`` (and uvicorn, uvloop, httptools at the
    project venv's versions) unless it is there already."""
    if FASTMCP_PYTHON.exists() and package_versions(FASTMCP_PYTHON, ("fastmcp",))["fastmcp"] == FASTMCP_VERSION:
        return
    ours = versions()
    pins = [f"fastmcp=={FASTMCP_VERSION}", *(f"{name}=={ours[name]}" for name in SAME_AS_PROJECT)]
    log(f"making {FASTMCP_VENV.relative_to(REPO)} with {' '.join(pins)} (once; about a minute)")
    # `python -m venv` in the project venv builds on the interpreter that venv is built on
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(FASTMCP_VENV)], check=True, timeout=300)
    pip = [str(FASTMCP_PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run([*pip, *pins], capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise SystemExit(f"installing {' '.join(pins)} into {FASTMCP_VENV} failed:\n{done.stderr[-3000:]}")


# --- the phase ----------------------------------------------------------------------------------------------------
class WindowProbe:
    """`run_cell`'s ``server_cpu_seconds``, called at the start and the end of the window: the target server's CPU
    (a proxy, or the upstream for the direct target), and the upstream's CPU beside it."""

    def __init__(self, server: Server, upstream: Server) -> None:
        self.server, self.upstream = server, upstream
        self.marks: list[tuple[float, float]] = []

    def __call__(self) -> float:
        server = self.server.cpu_seconds()
        self.marks.append((server, self.upstream.cpu_seconds() if self.server is not self.upstream else server))
        return server

    def fill(self, cell: CellResult, proxied: bool) -> None:
        if len(self.marks) != 2:
            return
        (s0, u0), (s1, u1) = self.marks
        window = cell.duration_s
        cell.extra["proxy_cpu"] = (s1 - s0) / window if proxied else 0.0
        cell.extra["upstream_cpu"] = (u1 - u0) / window
        if cell.calls:
            total = (s1 - s0) + (u1 - u0 if proxied else 0.0)
            cell.extra["total_us_per_call"] = total / cell.calls * 1e6
            cell.extra["upstream_us_per_call"] = (u1 - u0) / cell.calls * 1e6


class GatewayPhase(Phase):
    verify_s = 0.5

    def select(self) -> list[Target]:
        targets = super().select()
        wanted = [t for t in targets if t.server.startswith("fastmcp")]
        if wanted:
            ensure_fastmcp()
            self.bench.report["fastmcp_versions"] = package_versions(
                FASTMCP_PYTHON, ("fastmcp", "mcp", "uvicorn", "uvloop", "httptools", "starlette", "httpx2", "httpx")
            )
        return targets

    def measures(self, target: Target, conc: int) -> bool:
        return (target.key, conc) not in SKIPPED

    async def cell(self, target: Target, conc: int, duration_s: float, timed: bool) -> CellResult:
        upstream = self.servers["upstream"]
        probe = WindowProbe(self.servers[target.server], upstream)
        result = await run_cell(
            target.kind,
            self.endpoint(target),
            conc,
            duration_s,
            server_cpu_seconds=probe if timed else None,
            setup_parallel=target.setup_parallel,
        )
        probe.fill(result, proxied=target.key != "direct")
        return result

    def other_cpu(self, cell: CellResult) -> list[float]:
        """CPU busy beyond the proxy, the upstream and the client, on CPU 0 / CPU 1 as the layout places them."""
        busy = cell.cpu_busy
        proxy, up = float(cell.extra.get("proxy_cpu", 0.0)), float(cell.extra.get("upstream_cpu", 0.0))
        if not self.bench.client_pinned or len(busy) < 2:
            return [max(0.0, sum(busy) - proxy - up - cell.client_cpu)]
        on_cpu1 = up if self.bench.args.layout == "split" else 0.0
        return [max(0.0, busy[0] - proxy - up + on_cpu1), max(0.0, busy[1] - cell.client_cpu - on_cpu1)]

    def describe(self, cell: CellResult) -> str:
        e = cell.extra
        if "upstream_cpu" not in e:
            return ""
        return (
            f"  proxy {e.get('proxy_cpu', 0):4.0%} upstream {e['upstream_cpu']:4.0%}"
            f"  {e.get('total_us_per_call', float('nan')):,.0f} µs/call"
        )


class Gateway(Bench):
    prog = "bench.gateway"
    title = "DataPulse proxy vs the upstream alone vs FastMCP's proxy: forwarded tools/call, same run"
    defaults = Defaults(rounds=5, duration=5.0, warmup=2.0, concurrency="32,256")
    quick = Defaults(rounds=1, duration=1.0, warmup=0.3)
    targets = TARGETS
    comparisons = COMPARISONS
    ours, theirs, ratio_header = "proxied", "baseline", "ratio"
    columns = (
        Column("upstream CPU", extra_median("upstream_cpu", "{:.0%}")),
        Column("upstream CPU µs/call", extra_median("upstream_us_per_call", "{:,.0f}")),
        Column("proxy + upstream CPU µs/call", extra_median("total_us_per_call", "{:,.0f}")),
    )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--layout", choices=sorted(LAYOUTS), default="shared", help="CPU pinning (default shared)")

    def check_args(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
        args.concurrencies.sort()

    def phases(self) -> list[Phase]:
        layout = LAYOUTS[self.args.layout]
        if layout["upstream"] != "0" and self.report.get("pinning", "").startswith("client pinned"):
            self.report["pinning"] = "client pinned to CPU 1, the proxies to CPU 0, the upstream to CPU 1"
        upstream = Server(UPSTREAM_KIND, name="upstream", cpus=layout["upstream"])
        servers: dict[str, Server] = {"upstream": upstream}
        for kind in ("datapulse", "fastmcp-reuse", "fastmcp"):
            servers[kind] = ProxyServer(kind, name=kind, cpus=layout["proxy"], upstream=upstream)
        return [GatewayPhase(self, TARGETS, servers=servers, pinned=False)]

    def header_lines(self) -> list[str]:
        fastmcp = self.report.get("fastmcp_versions", {})
        skipped = [f"{key} at c={conc}" for key, conc in sorted(SKIPPED) if conc in self.args.concurrencies]
        lines = [
            f"* Layout `{self.args.layout}`: {LAYOUTS[self.args.layout]['note']}. Server CPU = the target's own "
            "process (the proxy; the upstream for `direct`); the upstream's CPU is its own column, and proxy + "
            "upstream CPU µs/call is what a proxied call costs in all.",
            f"* FastMCP side ({FASTMCP_VENV.relative_to(REPO)}, its own venv): "
            + (
                ", ".join(f"{name} {version}" for name, version in fastmcp.items() if version != "not installed")
                or "not run"
            ),
            f"* Upstream: `python -m bench.sdk_server {UPSTREAM_KIND} PORT` (the SDK's `streamable_http_app("
            "json_response=True, stateless_http=True)`, the bench's `echo` tool); both proxies are given its URL "
            "`http://127.0.0.1:PORT/mcp`. DataPulse finds it speaks 2026-07-28 (`server/discover`) and forwards over "
            "one shared upstream connection, for the 2025 session path too; FastMCP's front app is "
            '`http_app(transport="http", json_response=True, stateless_http=True)`, which speaks 2026-07-28 (and 2025 '
            "without sessions).",
            "* Client: 2026-07-28 stateless `tools/call` on `/mcp` (headers and `params._meta`) for `direct`, "
            "`dp-modern` and both FastMCP targets; a 2025-11-25 session per connection (`initialize` + "
            "`notifications/initialized` untimed, then `tools/call` with `Mcp-Session-Id`) for `dp-session`; "
            "`Authorization: Bearer` on DataPulse only (the upstream and FastMCP have no auth).",
        ]
        if skipped:
            lines.append(
                f"* Not measured: {', '.join(skipped)}: it builds a new backend client (and an SSL context) per "
                "request, so at c=256 its backlog would not drain within the 15 s grace after the window"
            )
        return lines

    def overhead_lines(self) -> list[str]:
        """Δp50 and Δp99 of every proxied target over direct, per round, median [min–max]."""
        rows = []
        labels = {t.key: t.label for t in TARGETS}
        for key in PROXIED:
            for conc in self.results.concurrencies(key):
                if not self.results.pairs(key, "direct", conc):
                    continue
                rows.append(
                    f"| {labels[key]} | {conc} | {fmt_delta(self.results.deltas(key, 'direct', conc, 0.5))} | "
                    f"{fmt_delta(self.results.deltas(key, 'direct', conc, 0.99))} |"
                )
        if not rows:
            return []
        return [
            "## Overhead over the upstream alone (proxied − direct, ms, same round; median [min–max])",
            "",
            "| proxy | c | Δp50 ms | Δp99 ms |",
            "|---|---|---|---|",
            *rows,
            "",
        ]

    def render(self) -> str:
        text = super().render()
        extra = "\n".join(self.overhead_lines())
        return text.replace("## Per target", extra + "\n## Per target", 1) if extra else text


def main(argv: list[str] | None = None) -> None:
    Gateway.main(argv)


if __name__ == "__main__":
    main()
