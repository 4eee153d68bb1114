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

import asyncio
import json
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `python bench/bridge.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Bench, Column, Compare, Defaults, Phase, Runs, Target, median
from bench.httpclient import connect
from bench.loadgen import CLIENTS, IDS, CallFailed, CellResult, SessionClient
from bench.servers import REPO, TOKEN, VENV_BIN, Server, _clean_env, log

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
REFRESH_AFTER_S = 10.0
"""A client set up longer ago than this gets a fresh keep-alive connection before the window: the server closes
idle ones (DataPulse after 30 s, mcp-proxy after uvicorn's 5 s), and setting up 32 per-session clients one at a
time can take longer than that."""


class PrimedSessionClient(SessionClient):
    """`SessionClient` whose untimed setup also makes one checked ``tools/call``.

    A bridge may start the stdio child lazily (per-session isolation starts one per session): that start belongs to
    opening the session, not to the timed window, so setup includes it and records how long it took.
    """

    kind = CLIENT_KIND
    ready_at = 0.0

    async def setup(self) -> None:
        started = time.perf_counter()
        await super().setup()
        ok, _latency, done_at = await self.call(next(IDS))
        if not ok:
            raise CallFailed(f"first tools/call: {self.errors[-1:]}")
        SESSION_STARTS.append(done_at - started)
        self.ready_at = time.monotonic()

    async def refresh(self) -> None:
        """The same session on a new keep-alive connection."""
        if time.monotonic() - self.ready_at > REFRESH_AFTER_S:
            assert self.conn is not None
            self.conn.close()
            self.conn = await connect(self.endpoint.host, self.endpoint.port)


CLIENTS[CLIENT_KIND] = PrimedSessionClient

ISOLATION = {"dp-shared": "shared", "dp-per-session": "per-session", "mcp-proxy": None}
TARGETS = (
    Target(
        "dp-shared", "DataPulse bridge --isolation shared (auth + audit on)", "dp-shared", CLIENT_KIND, ("dp-shared",)
    ),
    Target(
        "dp-per-session",
        "DataPulse bridge --isolation per-session (auth + audit on)",
        "dp-per-session",
        CLIENT_KIND,
        ("dp-per-session",),
        setup_parallel=PER_SESSION_SETUP_PARALLEL,
    ),
    Target("mcp-proxy", "mcp-proxy (one shared child, no auth)", "mcp-proxy", CLIENT_KIND, ("mcp-proxy",)),
)
COMPARISONS = (
    Compare("shared ÷ mcp-proxy (both: one child for every session)", "dp-shared", "mcp-proxy"),
    Compare("per-session ÷ mcp-proxy (informative: a child per session vs one)", "dp-per-session", "mcp-proxy"),
)


@dataclass
class BridgeServer(Server):
    """A bridge process (``name`` is a target key) pinned to the server CPU; its stdio children inherit the pin."""

    isolation: str | None = None
    """DataPulse's ``--isolation``; None: mcp-proxy."""

    @property
    def is_datapulse(self) -> bool:
        return self.isolation is not None

    @property
    def argv(self) -> list[str]:
        child = ["--cwd", str(REPO), "--", *CHILD_ARGV]
        if self.isolation is None:
            return [
                str(MCP_PROXY_BIN),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "WARNING",
                *child,
            ]
        options = ["--port", str(self.port), "--token", TOKEN, "--isolation", self.isolation, "--log-level", "warning"]
        return [str(VENV_BIN / "datapulse"), "bridge", *options, "--audit-sinks", f"file:{self.audit_path}", *child]

    @property
    def audit_path(self) -> Path | None:
        """The audit log (JSON lines, one per request and auth decision) of a DataPulse target."""
        if self.isolation is None:
            return None
        return Path(tempfile.gettempdir()) / f"bench-bridge-{self.name}-{self.port}-audit.jsonl"

    def environment(self) -> dict[str, str]:
        return _clean_env()  # the token and the audit sink are options here

    def command(self) -> str:
        argv = ["***" if a == TOKEN else a for a in self.argv]
        argv[0] = Path(argv[0]).name
        argv = ["python" if a == sys.executable else a for a in argv]
        return f"taskset -c {self.cpus} {shlex.join(argv)}"


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


def session_starts(runs: Runs) -> str:
    starts = [s for c in runs for s in c.extra.get("session_start_ms", [])]
    return f"{median(starts):.0f} / {max(starts):.0f}" if starts else "n/a"


class BridgePhase(Phase):
    verify_s = 0.5

    def select(self) -> list[Target]:
        """The DataPulse targets are dropped (with a note) when ``datapulse bridge`` is missing, unless they were
        asked for by name."""
        targets = super().select()
        bench = self.bench
        if any(t.key == "mcp-proxy" for t in targets):
            if not MCP_PROXY_BIN.exists():
                raise SystemExit(f"{MCP_PROXY_BIN} is missing: run `bash bench/setup-mcp-proxy.sh` first")
            bench.report["mcp_proxy_versions"] = mcp_proxy_versions()
        wanted_dp = [t for t in targets if ISOLATION[t.key] is not None]
        reason = bridge_unavailable_reason() if wanted_dp else None
        if reason is not None:
            if bench.args.explicit:
                raise SystemExit(f"{reason}; run with --only mcp-proxy to measure the competitor alone")
            log(f"DataPulse targets skipped: {reason}")
            bench.report["notes"].append(f"DataPulse targets skipped: {reason}")
            targets = [t for t in targets if t not in wanted_dp]
        if not targets:
            raise SystemExit("nothing to run")
        return targets

    async def prepare(self, target: Target, clients: list[PrimedSessionClient]) -> None:
        await asyncio.gather(*(client.refresh() for client in clients))

    async def cell(self, target: Target, conc: int, duration_s: float, timed: bool) -> CellResult:
        SESSION_STARTS.clear()
        result = await super().cell(target, conc, duration_s, timed)
        if timed:
            result.extra["session_start_ms"] = [s * 1000.0 for s in SESSION_STARTS]
        return result


class Bridge(Bench):
    prog = "bench.bridge"
    title = "DataPulse bridge vs mcp-proxy: same stdio server, same run"
    defaults = Defaults(rounds=5, duration=5.0, warmup=2.0, concurrency="1,8,32")
    quick = Defaults(rounds=1, duration=1.0, warmup=0.3)
    targets = TARGETS
    comparisons = COMPARISONS
    theirs, ratio_header = "mcp-proxy", "DP÷mcp-proxy"
    columns = (Column("session start ms, median / max", session_starts),)

    def phases(self) -> list[Phase]:
        servers = {key: BridgeServer("bridge", name=key, isolation=iso) for key, iso in ISOLATION.items()}
        return [BridgePhase(self, TARGETS, servers=servers)]

    def header_lines(self) -> list[str]:
        proxy = self.report.get("mcp_proxy_versions", {})
        return [
            f"* mcp-proxy side ({MCP_PROXY_VENV.relative_to(REPO)}): "
            + (", ".join(f"{name} {version}" for name, version in proxy.items()) or "not run"),
            f"* Stdio server (both sides): `{shlex.join(['python', *CHILD_ARGV[1:]])}`, tool `echo`; the stdio "
            "children inherit the server pin, and server CPU covers the bridge and its children",
            "* Client: a 2025-11-25 session per connection (`initialize` + `notifications/initialized`, one checked "
            "`tools/call` in the untimed setup, then `tools/call` with `Mcp-Session-Id`), the same code for every "
            "target; `Authorization: Bearer` on DataPulse",
        ]


def main(argv: list[str] | None = None) -> None:
    Bridge.main(argv)


if __name__ == "__main__":
    main()
