"""Real DataPulse servers for tests: in-process uvicorn on a free port, or a `datapulse serve` subprocess.

Both wait for readiness on an event (the server's own "started" signal, or its banner line on
stdout), never on a sleep, and every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import uvicorn
from anyio.abc import Process
from fastapi import FastAPI

from datapulse import Settings, create_app
from datapulse.app import runtime_of
from datapulse.runtime import Runtime
from datapulse.server import DataPulseServer, uvicorn_config

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-local"
ALICE_TOKEN = "alice-token-0123456789"
BOB_TOKEN = "bob-token-9876543210"
STARTUP_TIMEOUT_S = 20.0


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class RunningServer:
    """A server under test: its base URL and (in-process) its app and runtime."""

    url: str
    app: FastAPI | None = None
    settings: Settings | None = None

    @property
    def runtime(self) -> Runtime:
        assert self.app is not None, "only in-process servers expose their runtime"
        return runtime_of(self.app)

    def client(self, token: str | None = TOKEN, **kwargs: Any) -> httpx2.AsyncClient:
        headers = bearer(token) if token is not None else {}
        return httpx2.AsyncClient(base_url=self.url, headers=headers, timeout=10.0, **kwargs)


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: port 0, one local token plus alice and bob, quiet logs."""
    values: dict[str, Any] = {
        "port": 0,
        "token": TOKEN,
        "tokens": f"alice:{ALICE_TOKEN},bob:{BOB_TOKEN}",
        "log_level": "warning",
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def serve_in_process(
    settings: Settings | None = None, *, server: object | None = None
) -> AsyncIterator[RunningServer]:
    """Run `create_app` under a real uvicorn server on a free port inside the test's event loop."""
    settings = settings if settings is not None else make_settings()
    app = create_app(settings, server=server)
    config = uvicorn_config(app, settings)
    config.log_config = None
    started = anyio.Event()
    urls: list[str] = []

    def on_started(url: str) -> None:
        urls.append(url)
        started.set()

    uv = DataPulseServer(config, app, on_started=on_started)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(uv._serve)  # _serve: uvicorn's serve() without taking over the test's signal handlers
        with anyio.fail_after(STARTUP_TIMEOUT_S):
            await started.wait()
        try:
            yield RunningServer(urls[0], app, settings)
        finally:
            uv.should_exit = True
            tasks.cancel_scope.deadline = anyio.current_time() + 30


STOP_TIMEOUT_S = 15.0
"""How long a spawned server gets to stop after SIGTERM at the end of a test before it is killed."""


class LineLog(list[str]):
    """Lines read so far from a process's output (each ending in a newline), and a way to wait for one."""

    def __init__(self) -> None:
        super().__init__()
        self._appended = anyio.Event()

    def append(self, line: str) -> None:
        super().append(line)
        self._appended.set()
        self._appended = anyio.Event()

    async def wait_for(self, predicate: Callable[[str], bool], *, start: int = 0, timeout_s: float = 20.0) -> int:
        """The index of the first line from index ``start`` on that satisfies ``predicate``, waiting for it.

        Raises:
            TimeoutError: no such line within ``timeout_s``.
        """
        with anyio.fail_after(timeout_s):
            index = start
            while True:
                while index < len(self):
                    if predicate(self[index]):
                        return index
                    index += 1
                await self._appended.wait()


@dataclass
class ServerProcess:
    """A `datapulse serve` subprocess and what it printed."""

    process: Process
    url: str
    banner: LineLog
    stderr_lines: LineLog = field(default_factory=LineLog)

    def signal(self, sig: signal.Signals = signal.SIGINT) -> None:
        self.process.send_signal(sig)


@asynccontextmanager
async def spawn_datapulse(
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    *,
    module: bool = False,
    command: str = "serve",
    executable: Path | None = None,
    cwd: Path = REPO_ROOT,
) -> AsyncIterator[ServerProcess]:
    """Start ``datapulse COMMAND --port 0 ARGS`` (``serve`` or ``bridge``) and wait for its banner; kill it on exit
    if still alive. ``executable``: another installation's ``datapulse`` (default: this venv's); ``cwd``: where it
    runs (default: the repository)."""
    program = [sys.executable, "-m", "datapulse"] if module else [str(Path(sys.executable).parent / "datapulse")]
    if executable is not None:
        program = [str(executable)]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DATAPULSE_") and k != "LOCAL_BEARER_TOKEN"}
    full_env.update({"PYTHONUNBUFFERED": "1"})
    full_env.update(env or {})
    process = await anyio.open_process(
        [*program, command, "--port", "0", *args],
        env=full_env,
        cwd=str(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stderr_lines = LineLog()
    banner = LineLog()
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(drain_lines, process.stderr, stderr_lines)
            stdout = _Lines(process.stdout)
            with anyio.fail_after(STARTUP_TIMEOUT_S):
                first = await stdout.next_line()
                while first is not None and not first.startswith("DataPulse "):
                    first = await stdout.next_line()
                if first is None:
                    raise RuntimeError("datapulse serve exited before starting:\n" + "".join(stderr_lines))
            banner.append(first)
            tasks.start_soon(stdout.collect, banner)
            url = first.split(" listening on ", 1)[1].split()[0]
            yield ServerProcess(process, url, banner, stderr_lines)
            tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:  # SIGTERM first: a bridge stops its stdio children (own sessions) itself
                process.terminate()
                with anyio.move_on_after(STOP_TIMEOUT_S):
                    await process.wait()
            if process.returncode is None:
                process.kill()
            with anyio.move_on_after(10):
                await process.aclose()  # waits, and closes our ends of its pipes (a grandchild may still hold theirs)


class _Lines:
    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._buffer = b""

    async def next_line(self) -> str | None:
        while b"\n" not in self._buffer:
            try:
                chunk = await self._stream.receive()
            except anyio.EndOfStream:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace")

    async def collect(self, into: list[str]) -> None:
        while (line := await self.next_line()) is not None:
            into.append(line)


async def drain_lines(stream: Any, into: list[str]) -> None:
    lines = _Lines(stream)
    while (line := await lines.next_line()) is not None:
        into.append(line + "\n")


class ReadyServer(uvicorn.Server):
    """A plain uvicorn server that sets `ready` once listening (for auxiliary servers in tests)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    @property
    def port(self) -> int:
        port: int = self.servers[0].sockets[0].getsockname()[1]
        return port
