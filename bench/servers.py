"""Server processes for the bench: DataPulse via ``datapulse serve``, the SDK apps via ``bench.sdk_server``.

Every server is a subprocess pinned to CPU 0 with ``taskset -c 0`` (the load client runs in the runner process,
pinned to CPU 1), started from the repository root so ``bench.echo_app`` imports, with its output in a log file.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SERVER_CPU = "0"
CLIENT_CPU = 1
TOKEN = "bench-" + secrets.token_urlsafe(24)
MANY_SESSIONS_CAP = 20_000
"""``--max-sessions``, ``--max-sessions-per-principal`` and ``--max-streams-per-principal`` for DataPulse (the
10,000-session test and the c=256 stream cells run as one principal)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def datapulse_argv(port: int) -> list[str]:
    return [
        str(VENV_BIN / "datapulse"),
        "serve",
        "bench.echo_app:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--max-sessions",
        str(MANY_SESSIONS_CAP),
        "--max-sessions-per-principal",
        str(MANY_SESSIONS_CAP),
        "--max-streams-per-principal",
        str(MANY_SESSIONS_CAP),
    ]


AUDIT_DIR = Path(tempfile.gettempdir()) / "datapulse-bench-audit"


def datapulse_env(audit_file: Path) -> dict[str, str]:
    """DataPulse's settings in the bench: every protective layer on, at limits the load never reaches.

    The token, a scope rule for every item (the static token holds every scope, so each call is checked and
    allowed), a per-principal request limit and a per-tool limit (moving windows, checked on every call), and an
    audit file (one ``auth`` and one ``tool_call`` record per call). Metrics are always on.
    """
    return {
        "DATAPULSE_TOKEN": TOKEN,
        "DATAPULSE_SCOPES": "tool:*=bench:call;resource:*=bench:read;prompt:*=bench:read",
        "DATAPULSE_RATE_LIMIT": "50000/second",
        "DATAPULSE_TOOL_RATE_LIMITS": "*=50000/second",
        "DATAPULSE_AUDIT_SINKS": f"file:{audit_file}",
    }


def sdk_argv(kind: str, port: int) -> list[str]:
    return [sys.executable, "-m", "bench.sdk_server", kind, str(port)]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAPULSE_") and k != "LOCAL_BEARER_TOKEN"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Server:
    """One server subprocess. ``kind`` is ``datapulse`` or a `bench.sdk_server` kind."""

    kind: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    ps: psutil.Process | None = None
    log_path: Path | None = None

    @property
    def is_datapulse(self) -> bool:
        return self.kind == "datapulse"

    @property
    def token(self) -> str | None:
        return TOKEN if self.is_datapulse else None

    @property
    def argv(self) -> list[str]:
        return datapulse_argv(self.port) if self.is_datapulse else sdk_argv(self.kind, self.port)

    def command(self) -> str:
        """The command line as printed in the report (the token value is not shown)."""
        prefix = ""
        if self.is_datapulse:
            shown = {**datapulse_env(AUDIT_DIR / "audit.jsonl"), "DATAPULSE_TOKEN": "***"}
            prefix = " ".join(f"{key}='{value}'" for key, value in shown.items()) + " "
        argv = [Path(self.argv[0]).name if i == 0 else a for i, a in enumerate(self.argv)]
        if not self.is_datapulse:
            argv[0] = "python"
        return f"{prefix}taskset -c {SERVER_CPU} {' '.join(argv)}"

    def start(self) -> None:
        env = _clean_env()
        if self.is_datapulse:
            AUDIT_DIR.mkdir(exist_ok=True)
            env.update(datapulse_env(AUDIT_DIR / f"audit-{self.port}.jsonl"))
        fd, path = tempfile.mkstemp(prefix=f"bench-{self.kind}-", suffix=".log")
        self.log_path = Path(path)
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *self.argv],
            cwd=REPO,
            env=env,
            stdout=fd,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        os.close(fd)
        self.ps = psutil.Process(self.proc.pid)

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return
        raise RuntimeError(f"{self.kind} did not listen on {self.port} within {timeout_s} s: {self.log_tail()}")

    def stop(self, timeout_s: float = 20.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def discard_log(self) -> None:
        """Delete the log file unless it holds a traceback or an error (then its path is kept for the report)."""
        text = self.log_tail(1_000_000)
        if self.log_path is not None and "Traceback" not in text and "ERROR" not in text:
            self.log_path.unlink(missing_ok=True)

    def log_tail(self, chars: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def cpu_seconds(self) -> float:
        assert self.ps is not None
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        assert self.ps is not None
        return int(self.ps.memory_info().rss)

    def num_fds(self) -> int:
        assert self.ps is not None
        return int(self.ps.num_fds())

    def fast_stack(self) -> str:
        """Whether the uvloop and httptools extension modules are mapped into the server process."""
        assert self.ps is not None
        try:
            maps = Path(f"/proc/{self.ps.pid}/maps").read_text()
        except OSError:
            return "unknown"
        found = [
            name
            for name, marker in (("uvloop", "uvloop/loop."), ("httptools", "httptools/parser/parser."))
            if marker in maps
        ]
        return "+".join(found) if found else "neither"


async def wait_idle(
    servers: list[Server], *, threshold: float = 0.05, window_s: float = 0.2, max_wait_s: float = 15.0
) -> float:
    """Wait until the servers together use less than ``threshold`` of a CPU for two windows in a row.

    Returns the seconds waited.
    """
    started = time.monotonic()
    quiet = 0
    while time.monotonic() - started < max_wait_s:
        before = sum(s.cpu_seconds() for s in servers)
        await asyncio.sleep(window_s)
        used = (sum(s.cpu_seconds() for s in servers) - before) / window_s
        quiet = quiet + 1 if used < threshold else 0
        if quiet >= 2:
            break
    return time.monotonic() - started


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in ("datapulse", "mcp", "uvicorn", "uvloop", "httptools", "starlette", "fastapi", "anyio", "pydantic"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def pin_client() -> str:
    """Pin the runner (the load client) to CPU 1; returns a note for the report."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cpus = os.sched_getaffinity(0)
    if CLIENT_CPU not in cpus or len(cpus) < 2:
        return f"not pinned (CPUs {sorted(cpus)})"
    os.sched_setaffinity(0, {CLIENT_CPU})
    return f"client pinned to CPU {CLIENT_CPU}, servers to CPU {SERVER_CPU}"


def raise_fd_limit() -> tuple[int, int]:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)
