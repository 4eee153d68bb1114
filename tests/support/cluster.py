"""A DataPulse cluster for tests: N real ``datapulse serve`` processes sharing one Redis, optionally behind a
round-robin proxy (so consecutive requests of one client land on different instances)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

from tests.support.rr_proxy import RoundRobinProxy, round_robin_proxy
from tests.support.servers import ALICE_TOKEN, BOB_TOKEN, TOKEN, ServerProcess, spawn_datapulse

# One requestState sealing key shared by every instance (so any of them unseals what another sealed): 43
# characters, which is also the unpadded base64url form of the 32 bytes b"datapulse-cluster-test-secret-32".
REQUEST_STATE_KEY = "ZGF0YXB1bHNlLWNsdXN0ZXItdGVzdC1zZWNyZXQtMzI"


def cluster_env(redis_url: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of one cluster instance: shared Redis and sealing key, and `make_settings`' tokens
    (TOKEN for principal 'local', ALICE_TOKEN and BOB_TOKEN); ``env`` adds to or overrides it."""
    values = {
        "DATAPULSE_REDIS_URL": redis_url,
        "DATAPULSE_REQUEST_STATE_KEYS": REQUEST_STATE_KEY,
        "DATAPULSE_TOKEN": TOKEN,
        "DATAPULSE_TOKENS": f"alice:{ALICE_TOKEN},bob:{BOB_TOKEN}",
    }
    values.update(env or {})
    return values


@asynccontextmanager
async def spawn_cluster(
    redis_url: str,
    n: int = 3,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    *,
    command: str = "serve",
) -> AsyncIterator[list[ServerProcess]]:
    """Start ``n`` ``datapulse COMMAND --port 0 ARGS`` processes (``serve`` or ``bridge``) on ``redis_url``; stop
    them all on exit.

    They start one after another (each `spawn_datapulse` owns a task group, which must be exited by the task
    that entered it, so they cannot be entered from parallel tasks); each start is bounded by its own timeout.
    """
    if n < 1:
        raise ValueError("a cluster needs at least one instance")
    full_env = cluster_env(redis_url, env)
    async with AsyncExitStack() as stack:
        processes = [
            await stack.enter_async_context(spawn_datapulse(args, env=full_env, command=command)) for _ in range(n)
        ]
        yield processes


@asynccontextmanager
async def cluster_behind_proxy(
    redis_url: str,
    n: int = 3,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    *,
    command: str = "serve",
) -> AsyncIterator[tuple[list[ServerProcess], RoundRobinProxy]]:
    """`spawn_cluster` with a round-robin proxy in front: ``proxy.url`` is the cluster's single address."""
    async with (
        spawn_cluster(redis_url, n, args, env, command=command) as processes,
        round_robin_proxy([process.url for process in processes]) as proxy,
    ):
        yield processes, proxy
