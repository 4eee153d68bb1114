"""A real Redis Sentinel deployment for tests: a master, one replica and three sentinels on free loopback ports.

`run_sentinel` starts ``redis-server`` (master, then a replica of it) and three ``redis-sentinel`` processes
monitoring the master as ``mymaster`` with quorum 2, ``down-after-milliseconds`` 1000 and ``failover-timeout``
3000, each in its own directory under the test's tmp dir (with its log file), waits until every sentinel knows
the master, the replica and the two other sentinels, and kills everything on exit. Readiness is polled (another
process's state, no event to wait on), every wait bounded.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio
import redis.asyncio as aioredis
from anyio.abc import Process

from datapulse.cluster.redis_api import execute_command
from tests.support.redis_server import free_port

SERVICE_NAME = "mymaster"
QUORUM = 2
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
STARTUP_TIMEOUT_S = 30.0
"""Bound on the whole start: processes up, replica in sync, sentinels discovering each other (hello every 2 s)."""
POLL_S = 0.05


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed (apt-get install redis-server redis-sentinel)")
    return path


@dataclass
class RedisNode:
    """One ``redis-server`` or ``redis-sentinel`` process on ``port``, with its directory and log file."""

    name: str
    port: int
    workdir: Path
    process: Process | None = None

    @property
    def logfile(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def client(self, timeout_s: float = 0.5) -> aioredis.Redis:
        """A fresh client of this process (the caller closes it)."""
        return aioredis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    async def start(self, argv: Sequence[str]) -> None:
        """Start ``argv`` and wait until the process answers PING.

        Raises:
            RuntimeError: the process exited first (its log's tail in the message).
            TimeoutError: no PONG within `STARTUP_TIMEOUT_S`.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = await anyio.open_process(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        try:
            with anyio.fail_after(STARTUP_TIMEOUT_S):
                while True:
                    if self.process.returncode is not None:
                        raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
                    try:
                        if await client.ping():
                            return
                    except (OSError, aioredis.RedisError):
                        await anyio.sleep(POLL_S)  # polling a starting process: no event to wait on
        finally:
            await client.aclose()

    async def kill(self) -> None:
        """SIGKILL the process (as a crash would) and wait for it to exit."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.kill()
        with anyio.move_on_after(10, shield=True):
            await process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class SentinelDeployment:
    """A started master, replica and sentinels (`run_sentinel`)."""

    master: RedisNode
    replica: RedisNode
    sentinels: list[RedisNode]
    service_name: str = SERVICE_NAME

    @property
    def url(self) -> str:
        """The cluster's Redis URL: ``redis+sentinel://127.0.0.1:<p1>,127.0.0.1:<p2>,127.0.0.1:<p3>/mymaster/0``."""
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service_name}/0"

    async def master_port(self) -> int:
        """The master's port as the first sentinel that answers reports it.

        Raises:
            RuntimeError: no sentinel answered.
        """
        for sentinel in self.sentinels:
            port = await _master_port_of(sentinel, self.service_name)
            if port is not None:
                return port
        raise RuntimeError("no sentinel answered")

    async def master_ports(self) -> set[int | None]:
        """The master's port as each sentinel reports it (None for a sentinel that did not answer)."""
        return {await _master_port_of(sentinel, self.service_name) for sentinel in self.sentinels}

    def node_on(self, port: int) -> RedisNode:
        """The data node (master or replica) listening on ``port``."""
        return next(node for node in (self.master, self.replica) if node.port == port)

    async def wait_for_promotion(self, old_master_port: int, timeout_s: float) -> RedisNode:
        """Wait until every sentinel names a master other than ``old_master_port`` and that node says it is a
        master (``ROLE``); return it.

        Raises:
            TimeoutError: not within ``timeout_s`` (the sentinels' log tails are in the message).
        """
        try:
            with anyio.fail_after(timeout_s):
                while True:
                    ports = await self.master_ports()
                    if len(ports) == 1 and (port := ports.pop()) not in (None, old_master_port):
                        assert port is not None
                        node = self.node_on(port)
                        if await _role(node) == "master":
                            return node
                    await anyio.sleep(POLL_S)  # polling other processes' state: no event to wait on
        except TimeoutError:
            raise TimeoutError("no promotion:\n" + self._logs()) from None

    def _logs(self) -> str:
        return "\n".join(f"--- {node.name}\n{node.log_tail()}" for node in (self.master, self.replica, *self.sentinels))

    async def wait_until_monitored(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Wait until every sentinel sees the master up, the replica with its link up, and both other sentinels
        (so a failover can be agreed and run).

        Raises:
            TimeoutError: not within ``timeout_s`` (the sentinels' log tails are in the message).
        """
        try:
            with anyio.fail_after(timeout_s):
                for sentinel in self.sentinels:
                    while True:
                        if await self._monitors(sentinel):
                            break
                        await anyio.sleep(POLL_S)  # polling other processes' state: no event to wait on
        except TimeoutError:
            raise TimeoutError("the sentinels did not converge:\n" + self._logs()) from None

    async def _monitors(self, sentinel: RedisNode) -> bool:
        client = sentinel.client()
        try:
            master = cast(dict[str, Any], await client.sentinel_master(self.service_name))
            replicas = await client.sentinel_slaves(self.service_name)
        except (OSError, aioredis.RedisError):
            return False
        finally:
            await client.aclose()
        healthy = [
            replica
            for replica in replicas
            if int(replica["port"]) == self.replica.port
            and not replica["is_sdown"]
            and not replica["is_disconnected"]
            and replica.get("master-link-status") == "ok"
        ]
        return (
            int(master["port"]) == self.master.port
            and master["is_master"]
            and not master["is_sdown"]
            and int(master["num-other-sentinels"]) >= len(self.sentinels) - 1
            and bool(healthy)
        )


async def _master_port_of(sentinel: RedisNode, service_name: str) -> int | None:
    client = sentinel.client()
    try:
        address = cast(tuple[str, int] | None, await client.sentinel_get_master_addr_by_name(service_name))
        return int(address[1]) if address else None
    except (OSError, aioredis.RedisError):
        return None
    finally:
        await client.aclose()


async def _role(node: RedisNode) -> str | None:
    client = node.client()
    try:
        role = await execute_command(client, "ROLE")
        name = role[0]
        return name.decode() if isinstance(name, bytes) else str(name)
    except (OSError, aioredis.RedisError):
        return None
    finally:
        await client.aclose()


async def _wait_for_replication(replica: RedisNode) -> None:
    client = replica.client()
    try:
        with anyio.fail_after(STARTUP_TIMEOUT_S):
            while True:
                try:
                    info = await client.info("replication")
                    if info.get("master_link_status") == "up":
                        return
                except (OSError, aioredis.RedisError):
                    pass
                await anyio.sleep(POLL_S)  # polling another process's state: no event to wait on
    finally:
        await client.aclose()


def _server_argv(node: RedisNode, *extra: str) -> list[str]:
    return [
        _binary("redis-server"),
        "--port",
        str(node.port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(node.workdir),
        "--logfile",
        str(node.logfile),
        *extra,
    ]


def _sentinel_config(port: int, master_port: int) -> str:
    return "\n".join(
        [
            f"port {port}",
            "bind 127.0.0.1",
            "daemonize no",
            f"sentinel monitor {SERVICE_NAME} 127.0.0.1 {master_port} {QUORUM}",
            f"sentinel down-after-milliseconds {SERVICE_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE_NAME} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {SERVICE_NAME} 1",
            "",
        ]
    )


@asynccontextmanager
async def run_sentinel(tmp_path: Path, sentinels: int = 3) -> AsyncIterator[SentinelDeployment]:
    """Start a master, one replica and ``sentinels`` sentinels under ``tmp_path / "sentinel"``; kill all on exit.

    Raises:
        RuntimeError: a binary is missing, or a process exited while starting.
        TimeoutError: a process did not answer, or the sentinels did not converge, within `STARTUP_TIMEOUT_S`.
    """
    root = tmp_path / "sentinel"
    master = RedisNode("master", free_port(), root / "master")
    replica = RedisNode("replica", free_port(), root / "replica")
    watchers = [RedisNode(f"sentinel-{n}", free_port(), root / f"sentinel-{n}") for n in range(1, sentinels + 1)]
    deployment = SentinelDeployment(master, replica, watchers)
    try:
        await master.start(_server_argv(master))
        await replica.start(_server_argv(replica, "--replicaof", "127.0.0.1", str(master.port)))
        await _wait_for_replication(replica)
        for watcher in watchers:
            watcher.workdir.mkdir(parents=True, exist_ok=True)
            config = watcher.workdir / "sentinel.conf"  # the sentinel rewrites it: one writable file each
            config.write_text(_sentinel_config(watcher.port, master.port) + f"logfile {watcher.logfile}\n")
            await watcher.start([_binary("redis-sentinel"), str(config)])
        await deployment.wait_until_monitored()
        yield deployment
    finally:
        with anyio.CancelScope(shield=True):
            for node in (*watchers, replica, master):
                await node.kill()
