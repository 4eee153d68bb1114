"""Which child process serves a request: one per client session (``per-session``) or one for all (``shared``).

`ChildPool.child_for` returns the live child for a key (a session id, ``principal:<key>`` for a stateless
2026-07-28 request, or ``shared``), starting it on first use. A child that exited is replaced on the key's
next request, not before its restart backoff has passed: `BridgedServer.restart_backoff_s`, doubled for each
further failure in a row up to ``max_restart_backoff_s`` (reset once a child has lived `STABLE_AFTER_S`). A
request waits out a backoff of up to ``restart_backoff_s`` (the first restart after a crash); during a longer one
it is refused at once (`Restarting`), so no request hangs on a server that keeps failing.
In per-session mode at most ``max_children`` children live at once: at the cap the least recently used idle
child is stopped; when none is idle the request is refused (`BridgeBusy`). `ChildPool.sweep` stops children
idle for ``idle_timeout_s`` and those whose session has ended.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anyio
import httpx2
from anyio.abc import TaskGroup
from mcp import types

from datapulse.bridge.child import Child, ChildStartError, ClientRequests
from datapulse.bridge.config import BridgedServer
from datapulse.bridge.continuity import UpstreamSession
from datapulse.metrics import Metrics

__all__ = ["SHARED_KEY", "STABLE_AFTER_S", "BridgeBusy", "ChildPool", "Restarting"]

log = logging.getLogger("datapulse.bridge.pool")

SHARED_KEY = "shared"
STABLE_AFTER_S = 60.0
"""A child that lived this long before exiting resets its key's restart backoff."""


class BridgeBusy(RuntimeError):
    """Every child slot is taken by a child with a request in flight (per-session mode, ``max_children``)."""


class Restarting(RuntimeError):
    """The key's child failed repeatedly and its restart waits out a backoff longer than ``restart_backoff_s``.

    Attributes:
        retry_after_s: seconds until the next start is tried.
    """

    def __init__(self, server: str, retry_after_s: float, *, remote: bool = False) -> None:
        what = (
            f"the upstream server {server!r} is unavailable; it is tried again"
            if remote
            else (f"the bridged server {server!r} failed again; it is restarted")
        )
        super().__init__(f"{what} in {retry_after_s:.1f} s: retry then")
        self.retry_after_s = retry_after_s


@dataclass
class _Backoff:
    failures: int = 0
    not_before: float = 0.0


class ChildPool:
    """The live children of one bridged server.

    Args:
        spec: the bridged server.
        task_group: where children run (lives as long as the pool).
        client_requests: answers the children's sampling / elicitation / roots requests.
        metrics: where child starts, exits and the live count are counted (``datapulse_bridge_*``), or None.
        upstream_auth: a remote server's headers and auth flow, shared by its connections (one token cache).
    """

    def __init__(
        self,
        spec: BridgedServer,
        task_group: TaskGroup,
        client_requests: ClientRequests | None,
        metrics: Metrics | None = None,
        upstream_auth: tuple[Mapping[str, str], httpx2.Auth | None] = ({}, None),
    ) -> None:
        self.spec = spec
        self._upstream_auth = upstream_auth
        self._metrics = metrics
        self._tasks = task_group
        self._client_requests = client_requests
        self._children: dict[str, Child] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._backoff: dict[str, _Backoff] = {}
        self.started_total = 0
        self.last_failure: str | None = None
        """Why the last start failed, until a child starts again (`down`)."""

    @property
    def shared(self) -> bool:
        return self.spec.isolation == "shared"

    def __len__(self) -> int:
        return len(self._children)

    def live(self, key: str) -> bool:
        """Whether ``key`` has a live child."""
        child = self._children.get(SHARED_KEY if self.shared else key)
        return child is not None and child.alive

    async def child_for(
        self,
        key: str,
        client_capabilities: types.ClientCapabilities | None = None,
        resume: UpstreamSession | None = None,
    ) -> Child:
        """The live child for ``key``, started (or restarted after its backoff) when needed. A new child offers its
        server only what ``client_capabilities`` declares (None: all it can relay), and continues the remote
        session ``resume`` when given.

        Raises:
            ChildStartError: the child could not start (the next call tries again after the backoff).
            Restarting: the key's restart backoff runs for longer than ``restart_backoff_s`` yet.
            BridgeBusy: per-session mode at ``max_children`` with no idle child to stop.
        """
        key = SHARED_KEY if self.shared else key
        child = self._children.get(key)
        if child is not None and child.alive:
            return child
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            child = self._children.get(key)
            if child is not None and child.alive:
                return child
            if child is not None:
                self._children.pop(key, None)
            backoff = self._backoff.setdefault(key, _Backoff())
            wait_s = backoff.not_before - time.monotonic()
            if wait_s > self.spec.restart_backoff_s:
                raise Restarting(self.spec.name, wait_s, remote=self.spec.remote)
            await self._make_room()
            if wait_s > 0:
                await anyio.sleep(wait_s)
            child = Child(
                self.spec,
                f"{self.spec.name}/{key[:12]}",
                client_requests=self._client_requests,
                upstream_auth=self._upstream_auth,
                client_capabilities=None if self.shared else client_capabilities,
                resume=resume,
            )
            child.on_exit = lambda exited: self._exited(key, exited)
            child.key = key
            try:
                await child.start(self._tasks)
            except ChildStartError as exc:
                self._count_start("failed")
                self._failed(key, lived_s=0.0)
                self.last_failure = str(exc)
                raise
            self.started_total += 1
            self.last_failure = None
            self._children[key] = child
            self._count_start("started")
            return child

    @property
    def down(self) -> str | None:
        """Why the server is down (its last start failed, or for a remote server its last connection ended, and
        none started since), else None. For ``/ready``. A stdio child that exits does not count: the next request
        starts another (and that start decides)."""
        return self.last_failure

    def _count_start(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.bridge_child_starts_total.labels(self.spec.name, outcome).inc()
            self._count_live()

    def _count_live(self) -> None:
        if self._metrics is not None:
            self._metrics.bridge_children.labels(self.spec.name).set(len(self._children))

    def _exited(self, key: str, child: Child) -> None:
        if self._children.get(key) is child:
            del self._children[key]
        if self._metrics is not None:
            self._metrics.bridge_child_exits_total.labels(self.spec.name).inc()
            self._count_live()
        self._failed(key, lived_s=time.monotonic() - child.started_at)
        if self.spec.remote:  # a connection that ended is the upstream going away (a crashed child is only itself)
            self.last_failure = f"{child.label}: the connection to the upstream ended"

    def _failed(self, key: str, *, lived_s: float) -> None:
        backoff = self._backoff.setdefault(key, _Backoff())
        if lived_s >= STABLE_AFTER_S:
            backoff.failures = 0
        delay_s = min(self.spec.max_restart_backoff_s, self.spec.restart_backoff_s * 2**backoff.failures)
        backoff.failures += 1
        backoff.not_before = time.monotonic() + delay_s
        log.warning("%s: child for %s ended; the next request restarts it (after %.1f s)", self.spec.name, key, delay_s)

    async def _make_room(self) -> None:
        if self.shared or len(self._children) < self.spec.max_children:
            return
        idle = [(child.last_used, key) for key, child in self._children.items() if child.in_flight == 0]
        if not idle:
            raise BridgeBusy(
                f"all {self.spec.max_children} child processes of {self.spec.name!r} are busy; retry shortly"
            )
        _, key = min(idle)
        await self.close(key)

    def forget(self, child: Child) -> None:
        """Drop ``child`` (its upstream session is gone) and stop it in the background; its key's next request
        opens a new one at once (no restart backoff: nothing crashed)."""
        if self._children.get(child.key) is child:
            del self._children[child.key]
            self._count_live()
        self._tasks.start_soon(child.stop)

    async def close(self, key: str) -> None:
        """Stop ``key``'s child, if any (its session ended)."""
        child = self._children.pop(key, None)
        self._locks.pop(key, None)
        self._backoff.pop(key, None)
        if child is not None:
            self._count_live()
            await child.stop()

    async def sweep(self, session_alive: Callable[[str], bool]) -> int:
        """Stop per-session children idle for ``idle_timeout_s`` or whose session ended; returns how many."""
        if self.shared:
            return 0
        now = time.monotonic()
        doomed = [
            key
            for key, child in self._children.items()
            if child.in_flight == 0
            and (now - child.last_used >= self.spec.idle_timeout_s or (_is_session(key) and not session_alive(key)))
        ]
        for key in doomed:
            await self.close(key)
        return len(doomed)

    async def stop_all(self) -> None:
        """Stop every child (shutdown)."""
        for key in list(self._children):
            await self.close(key)


def _is_session(key: str) -> bool:
    return not key.startswith(("principal:", "caps:")) and key != SHARED_KEY
