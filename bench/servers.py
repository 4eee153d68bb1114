"""Server processes for the bench: DataPulse via ``datapulse serve``, the SDK apps via ``bench.sdk_server``, and a
throw-away ``redis-server``.

Every server is a subprocess, by default pinned to CPU 0 with ``taskset -c 0`` (the load client runs in the runner
process, pinned to CPU 1), started from the repository root so ``bench.echo_app`` imports, with its output in a log
file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
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
import redis

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


def log(message: str) -> None:
    """Progress goes to stderr (the report goes to stdout)."""
    print(message, file=sys.stderr, flush=True)


def _hidden(key: str) -> bool:
    return "TOKEN" in key or key.endswith("_KEYS")


@dataclass
class Server:
    """One server subprocess. ``kind`` is ``datapulse`` or a `bench.sdk_server` kind.

    CPU figures and the loaded-extension check cover the whole process tree (a ``--workers`` supervisor and its
    workers, a bridge and its stdio children); `stop` kills a child that outlives its parent by 5 s.
    """

    kind: str
    port: int = field(default_factory=free_port)
    name: str = ""
    """Shown in the report and in the log file's name (default: ``kind``)."""
    cpus: str | None = SERVER_CPU
    """The ``taskset -c`` CPU list; None: not pinned."""
    args: tuple[str, ...] = ()
    """More command-line arguments (after ``datapulse serve ...``)."""
    env: dict[str, str] = field(default_factory=dict)
    """More environment variables (token and key values are not shown in the report)."""
    protections: bool = True
    """DataPulse: run with `datapulse_env` (scopes, rate limits, audit file); False: the token only."""
    ready_text: str | None = None
    """`wait_ready` also waits for this text in the server's output (the banner: ``--workers`` binds first)."""
    proc: subprocess.Popen[bytes] | None = None
    ps: psutil.Process | None = None
    log_path: Path | None = None

    def __post_init__(self) -> None:
        self.name = self.name or self.kind

    @property
    def is_datapulse(self) -> bool:
        return self.kind == "datapulse"

    @property
    def token(self) -> str | None:
        return TOKEN if self.is_datapulse else None

    @property
    def argv(self) -> list[str]:
        if self.is_datapulse:
            return [*datapulse_argv(self.port), *self.args]
        return [*sdk_argv(self.kind, self.port), *self.args]

    @property
    def audit_path(self) -> Path | None:
        """The audit file this server writes (None: no audit)."""
        return AUDIT_DIR / f"audit-{self.port}.jsonl" if self.is_datapulse and self.protections else None

    def environment(self) -> dict[str, str]:
        env = _clean_env()
        if self.is_datapulse:
            if self.audit_path is not None:
                AUDIT_DIR.mkdir(exist_ok=True)
                env.update(datapulse_env(self.audit_path))
            else:
                env["DATAPULSE_TOKEN"] = TOKEN
        env.update(self.env)
        return env

    def command(self) -> str:
        """The command line as printed in the report (the token value is not shown)."""
        shown = {key: "***" if _hidden(key) else value for key, value in self.environment().items()}
        shown = {key: value for key, value in shown.items() if key.startswith("DATAPULSE_")}
        prefix = "".join(f"{key}='{value}' " for key, value in shown.items())
        argv = [Path(self.argv[0]).name if i == 0 else a for i, a in enumerate(self.argv)]
        if argv[0].startswith("python"):
            argv[0] = "python"
        pin = f"taskset -c {self.cpus} " if self.cpus else ""
        return f"{prefix}{pin}{' '.join(argv)}"

    def start(self) -> None:
        fd, path = tempfile.mkstemp(prefix=f"bench-{self.name}-", suffix=".log")
        self.log_path = Path(path)
        pin = ["taskset", "-c", self.cpus] if self.cpus else []
        self.proc = subprocess.Popen(
            [*pin, *self.argv],
            cwd=REPO,
            env=self.environment(),
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
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            if self.ready_text is None or self.ready_text in self.log_tail(1_000_000):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} was not ready on {self.port} within {timeout_s} s: {self.log_tail()}")

    def children(self) -> list[psutil.Process]:
        if self.ps is None:
            return []
        try:
            return list(self.ps.children(recursive=True))
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout_s: float = 20.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        leftovers = self.children()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        _gone, alive = psutil.wait_procs(leftovers, timeout=5)
        for child in alive:
            log(f"{self.name}: child {child.pid} outlived its parent; killing it")
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()

    def log_problems(self) -> bool:
        """Whether the output holds a traceback, an error or a warning."""
        text = self.log_tail(1_000_000)
        return any(marker in text for marker in ("Traceback", "ERROR", "WARNING"))

    def discard_log(self) -> None:
        """Delete the log file unless it holds a traceback, an error or a warning (then it is kept for the report)."""
        if self.log_path is not None and not self.log_problems():
            self.log_path.unlink(missing_ok=True)

    def log_tail(self, chars: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def audit_files(self) -> list[Path]:
        """The audit file and the files it rotated to (``path.1``, ``path.2``, ...)."""
        path = self.audit_path
        if path is None:
            return []
        return [file for file in (path, *path.parent.glob(path.name + ".*")) if file.exists()]

    def remove_audit(self) -> int | None:
        """Count the audit records this server wrote (rotated files included), then delete the files; None: no
        audit."""
        if self.audit_path is None:
            return None
        total = 0
        for file in self.audit_files():
            with file.open("rb") as handle:
                total += sum(1 for _ in handle)
            file.unlink(missing_ok=True)
        return total

    def cpu_seconds(self) -> float:
        """CPU (user + system) of the process, its live descendants and the children it has reaped."""
        assert self.ps is not None
        try:
            times = self.ps.cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        total = times.user + times.system + times.children_user + times.children_system
        for child in self.children():
            try:
                child_times = child.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += child_times.user + child_times.system
        return float(total)

    def rss(self) -> int:
        assert self.ps is not None
        return int(self.ps.memory_info().rss)

    def num_fds(self) -> int:
        assert self.ps is not None
        return int(self.ps.num_fds())

    def fast_stack(self) -> str:
        """Whether the uvloop and httptools extension modules are mapped into the server's processes."""
        assert self.ps is not None
        maps = ""
        for process in (self.ps, *self.children()):
            with contextlib.suppress(OSError):
                maps += Path(f"/proc/{process.pid}/maps").read_text()
        if not maps:
            return "unknown"
        found = [
            name
            for name, marker in (("uvloop", "uvloop/loop."), ("httptools", "httptools/parser/parser."))
            if marker in maps
        ]
        return "+".join(found) if found else "neither"

    def describe(self) -> str:
        """A note for the report's server line."""
        return f"{self.fast_stack()} loaded"


@dataclass
class RedisProcess(Server):
    """A throw-away ``redis-server`` (no persistence) on a free loopback port; `start` returns once it answers."""

    kind: str = "redis"
    cpus: str | None = None
    directory: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def argv(self) -> list[str]:
        binary = shutil.which("redis-server") or "redis-server"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        return [*argv, "--dir", self.directory] if self.directory else argv

    @property
    def audit_path(self) -> Path | None:
        return None

    def command(self) -> str:
        pin = f"taskset -c {self.cpus} " if self.cpus else ""
        return f'{pin}redis-server --port {self.port} --bind 127.0.0.1 --save "" --appendonly no'

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            raise SystemExit("redis-server is not on PATH")
        self.directory = tempfile.mkdtemp(prefix="bench-redis-")
        super().start()
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client.ping():
                    return
            except redis.RedisError:
                assert self.proc is not None
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit(f"redis-server did not start: {self.log_tail()}") from None
                time.sleep(0.05)

    def stop(self, timeout_s: float = 5.0) -> None:
        self.client.close()
        super().stop(timeout_s)
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def log_problems(self) -> bool:
        return False

    def counters(self) -> tuple[int, int]:
        """(commands processed, PUBLISH commands) since start."""
        stats = self.client.info("commandstats")
        total = sum(int(v["calls"]) for v in stats.values())
        return total, int(stats.get("cmdstat_publish", {}).get("calls", 0))

    def version(self) -> str:
        return str(self.client.info("server").get("redis_version", "?"))

    def describe(self) -> str:
        return f"redis-server {self.version()}"


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
