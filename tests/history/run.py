"""One run of the history checker: a workload of many clients over all four transports, through a round-robin
proxy in front of three `datapulse serve` instances sharing one real ``redis-server``, while a nemesis injects
faults; then `tests.history.checker.check` on the recorded history.

The nemesis cycles through: connections cut by the proxy, ``kill -9`` of an instance (restarted on its port),
Redis paused (SIGSTOP, then SIGCONT), a SIGTERM drain of an instance (restarted), slow readers, and a Redis
restart. Redis runs with an fsynced append-only file, so a restart loses nothing (a restart without
persistence is a documented limit, tested apart). Used by ``tests/history/test_history_run.py`` (short, in CI)
and ``bench/reliability.py`` (the soak).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import anyio
import httpx2
from anyio.abc import Process

from tests.history.checker import Fault, Report, check
from tests.history.clients import (
    ApiClient,
    Client,
    ListenClient,
    ModernClient,
    Pace,
    Recorder,
    SseClient,
    StreamableClient,
)
from tests.support.cluster import cluster_env
from tests.support.redis_server import RedisServer, free_port
from tests.support.rr_proxy import RoundRobinProxy, round_robin_proxy
from tests.support.servers import ALICE_TOKEN, BOB_TOKEN, REPO_ROOT, bearer

APP = "tests.history.app:app"
INSTANCE_ARGS = [
    "--node-heartbeat-ttl-s", "1",
    "--redis-timeout-s", "1",
    "--forward-timeout-s", "3",
    "--graceful-shutdown-timeout-s", "5",
    "--keepalive-interval-s", "2",  # a quiet stream still shows life well within the clients' read timeout
]  # fmt: skip
START_TIMEOUT_S = 30.0
RESTART_PAUSE_S = 1.0
FAULT_KINDS = (
    "connections cut by the proxy",
    "kill -9 of an instance, restarted",
    "Redis paused 3 s (SIGSTOP/SIGCONT)",
    "SIGTERM drain of an instance, restarted",
    "slow readers for 3 s",
    "Redis restarted (append-only file)",
)
"""The nemesis's faults, in the order it injects them (then again from the first)."""
KILLS_IN_FLIGHT = frozenset({"kill -9 of an instance, restarted"})
QUIET_TAIL_S = 10.0
"""The last seconds of a run are left without faults, so that every fault's recovery is seen."""


@dataclass
class Instance:
    """One `datapulse serve` process on a fixed port (so the proxy's backend list stays valid across restarts)."""

    port: int
    env: dict[str, str]
    log: IO[bytes]
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        program = str(Path(sys.executable).parent / "datapulse")
        self.process = await anyio.open_process(
            [program, "serve", APP, "--port", str(self.port), *INSTANCE_ARGS],
            env=self.env,
            cwd=str(REPO_ROOT),
            stdout=self.log,
            stderr=self.log,
        )
        async with httpx2.AsyncClient(base_url=self.url, timeout=1.0) as http:
            with anyio.fail_after(START_TIMEOUT_S):
                while True:
                    if self.process.returncode is not None:
                        raise RuntimeError(f"instance on port {self.port} exited with {self.process.returncode}")
                    try:
                        if (await http.get("/ready")).status_code == 200:
                            return
                    except httpx2.TransportError:
                        pass
                    await anyio.sleep(0.05)  # polling a starting process: no event to wait on

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            with anyio.fail_after(10):
                await self.process.wait()

    async def drain(self) -> None:
        """SIGTERM: the instance drains (hands its sessions over) and exits; killed if it takes too long."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            with anyio.move_on_after(20):
                await self.process.wait()
            await self.kill()


@dataclass
class RunConfig:
    duration_s: float = 75.0
    api_clients: int = 4
    streamable_clients: int = 2
    sse_clients: int = 2
    modern_clients: int = 2
    listen_clients: int = 2
    fault_every_s: float = 6.0
    settle_timeout_s: float = 25.0
    interval_s: float = 0.05
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    """Which faults the nemesis cycles through (a subset of `FAULT_KINDS`, in their order)."""


@dataclass
class Outcome:
    report: Report
    faults: list[Fault]
    requests: int
    log_dir: Path
    hits: list[int] = field(default_factory=list)


@asynccontextmanager
async def cluster(workdir: Path, n: int = 3) -> AsyncIterator[tuple[RedisServer, list[Instance], RoundRobinProxy]]:
    redis = RedisServer(free_port(), workdir, appendonly=True)
    await redis.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAPULSE_")}
    env.update(
        cluster_env(
            redis.url,
            {"PYTHONUNBUFFERED": "1", "DATAPULSE_LOG_LEVEL": os.environ.get("DATAPULSE_HISTORY_LOG_LEVEL", "warning")},
        )
    )
    async with AsyncExitStack() as stack:
        stack.push_async_callback(redis.stop)
        instances: list[Instance] = []
        for index in range(n):
            log = stack.enter_context((workdir / f"instance-{index}.log").open("ab"))
            instance = Instance(free_port(), env, log)
            stack.push_async_callback(instance.kill)
            await instance.start()
            instances.append(instance)
        proxy = await stack.enter_async_context(round_robin_proxy([i.url for i in instances]))
        yield redis, instances, proxy


class Nemesis:
    """Injects one fault after another, each recorded as a `Fault` with its start and end."""

    def __init__(self, redis: RedisServer, instances: list[Instance], proxy: RoundRobinProxy, pace: Pace) -> None:
        self.redis = redis
        self.instances = instances
        self.proxy = proxy
        self.pace = pace
        self.faults: list[Fault] = []
        self.last_fault_at_s = float("inf")
        """No fault starts after this (seconds since the run began): the clients must be seen to recover."""
        self._targets = itertools.cycle(range(len(instances)))

    async def run(
        self, recorder: Recorder, every_s: float, until: anyio.Event, kinds: tuple[str, ...] = FAULT_KINDS
    ) -> None:
        actions: dict[str, Callable[[], Awaitable[None]]] = {
            "connections cut by the proxy": self.cut,
            "kill -9 of an instance, restarted": self.kill,
            "Redis paused 3 s (SIGSTOP/SIGCONT)": self.pause_redis,
            "SIGTERM drain of an instance, restarted": self.drain,
            "slow readers for 3 s": self.slow_readers,
            "Redis restarted (append-only file)": self.restart_redis,
        }
        schedule = [(name, actions[name], name in KILLS_IN_FLIGHT) for name in FAULT_KINDS if name in kinds]
        for name, action, kills in itertools.cycle(schedule):
            with anyio.move_on_after(every_s):
                await until.wait()
            if until.is_set() or recorder.now() > self.last_fault_at_s:
                return
            start = recorder.now()
            await action()
            self.faults.append(Fault(name, start, recorder.now(), kills_in_flight=kills))

    async def cut(self) -> None:
        self.proxy.cut()

    async def kill(self) -> None:
        instance = self.instances[next(self._targets)]
        await instance.kill()
        await anyio.sleep(RESTART_PAUSE_S)
        await instance.start()

    async def drain(self) -> None:
        instance = self.instances[next(self._targets)]
        await instance.drain()
        await instance.start()

    async def pause_redis(self) -> None:
        self.redis.pause()
        try:
            await anyio.sleep(3)
        finally:
            self.redis.resume()

    async def slow_readers(self) -> None:
        self.pace.slow_readers = True
        try:
            await anyio.sleep(3)
        finally:
            self.pace.slow_readers = False

    async def restart_redis(self) -> None:
        await self.redis.stop()
        await self.redis.start()


async def run_history(workdir: Path, config: RunConfig) -> Outcome:
    """Run the workload and the nemesis for ``config.duration_s``, let the clients settle, and check."""
    async with cluster(workdir) as (redis, instances, proxy):
        recorder = Recorder()
        pace = Pace(interval_s=config.interval_s)
        nemesis = Nemesis(redis, instances, proxy, pace)
        nemesis.last_fault_at_s = config.duration_s - QUIET_TAIL_S
        tokens = itertools.cycle([ALICE_TOKEN, BOB_TOKEN])
        kinds: list[tuple[type[Client], int]] = [
            (ApiClient, config.api_clients),
            (StreamableClient, config.streamable_clients),
            (SseClient, config.sse_clients),
            (ModernClient, config.modern_clients),
            (ListenClient, config.listen_clients),
        ]
        async with AsyncExitStack() as stack:
            clients: list[Client] = []
            for kind, count in kinds:
                for index in range(count):
                    http = await stack.enter_async_context(
                        httpx2.AsyncClient(base_url=proxy.url, headers=bearer(next(tokens)), timeout=10.0)
                    )
                    clients.append(kind(f"{kind.transport}-{index}", http, recorder, pace))
            async with anyio.create_task_group() as tasks:
                for client in clients:
                    tasks.start_soon(client.run, config.settle_timeout_s)
                tasks.start_soon(nemesis.run, recorder, config.fault_every_s, pace.stop_sending, config.fault_kinds)
                await anyio.sleep(config.duration_s)
                pace.stop_sending.set()
        transports = {client.name: client.transport for client in clients}
        with (workdir / "history.jsonl").open("w") as dump:  # for a post-mortem: one record a line, then faults
            for record in recorder.records:
                dump.write(json.dumps(dataclasses.asdict(record)) + "\n")
            for fault in nemesis.faults:
                dump.write(json.dumps({"fault": dataclasses.asdict(fault)}) + "\n")
        report = check(recorder.records, nemesis.faults, transports)
        requests = sum(1 for r in recorder.records if r.kind in ("expect", "indeterminate"))
        return Outcome(report, nemesis.faults, requests, workdir, list(proxy.hits))
