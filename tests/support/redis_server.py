"""A real ``redis-server`` process for tests: started on a free loopback port, restartable on the same port."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import redis.asyncio as aioredis
from anyio.abc import Process

STARTUP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` on ``port``; `stop` and `start` restart it on the same port.

    No persistence by default (a restart comes back empty); with ``appendonly`` every write is in the AOF,
    fsynced before Redis answers, so a restart keeps everything (``appendfsync always``).
    """

    def __init__(self, port: int, workdir: Path, password: str | None = None, *, appendonly: bool = False) -> None:
        self.port = port
        self.password = password
        self.appendonly = appendonly
        self._workdir = workdir
        self._process: Process | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Start the server and wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        args += ["--dir", str(self._workdir)]
        if self.password:
            args += ["--requirepass", self.password]
        self._process = await anyio.open_process(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            with anyio.fail_after(STARTUP_TIMEOUT_S):
                while True:
                    if self._process.returncode is not None:
                        raise RuntimeError(f"redis-server exited with {self._process.returncode}")
                    try:
                        if await client.ping():
                            return
                    except (OSError, aioredis.RedisError):
                        await anyio.sleep(0.02)  # polling a starting process: no event to wait on
        finally:
            await client.aclose()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing is answered, as in a long GC pause."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a paused server (SIGCONT)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        """Kill the server (as a crash would) and wait for it to exit."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.kill()
        with anyio.move_on_after(10, shield=True):
            await process.wait()


@asynccontextmanager
async def run_redis(tmp_path: Path, password: str | None = None) -> AsyncIterator[RedisServer]:
    """A started `RedisServer` on a free port, stopped on exit."""
    server = RedisServer(free_port(), tmp_path, password)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
