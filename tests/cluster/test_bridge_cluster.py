"""``datapulse bridge`` in cluster mode: two real bridge processes sharing a real Redis behind a round-robin proxy
(every request lands on the other instance). A per-session child lives on the instance that owns the session;
requests that reach the other instance are forwarded there, so the client keeps talking to the same child."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import httpx2
import pytest

from tests.support.bridging import STDIO_SERVER, bridge_toml, call, sdk_client
from tests.support.cluster import cluster_behind_proxy
from tests.support.prometheus import scrape, value
from tests.support.redis_server import RedisServer
from tests.support.servers import REPO_ROOT, TOKEN, ServerProcess, bearer

pytestmark = pytest.mark.anyio

CHILD_ENV = {"PYTHONPATH": str(REPO_ROOT)}
ENV_ALLOW = ["--env-allow", "PATH,HOME,PYTHONPATH"]


async def forwarded(processes: list[ServerProcess], prefix: str = "") -> float:
    """Requests forwarded to the owning instance, summed over the instances' ``PREFIX/metrics``."""
    total = 0.0
    for process in processes:
        async with httpx2.AsyncClient(base_url=process.url + prefix, headers=bearer(TOKEN), timeout=10) as http:
            total += value(await scrape(http), "datapulse_forwarded_requests_total", outcome="ok")
    return total


@pytest.mark.parametrize("transport", ["mcp", "sse"])
async def test_a_bridged_session_keeps_its_child_while_its_requests_land_on_either_instance(
    redis_server: RedisServer, transport: Literal["mcp", "sse"]
) -> None:
    args = [*ENV_ALLOW, "--", *STDIO_SERVER]
    async with (
        cluster_behind_proxy(redis_server.url, n=2, args=args, env=CHILD_ENV, command="bridge") as (processes, proxy),
        sdk_client(proxy.url, transport) as connected,
    ):
        assert [await call(connected, "increment") for _ in range(6)] == ["1", "2", "3", "4", "5", "6"]
        assert len({await call(connected, "pid") for _ in range(4)}) == 1  # one child, wherever the request landed
        assert await forwarded(processes) > 0


async def test_configured_bridges_keep_their_sessions_apart_across_instances(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    config = {
        "defaults": {"env_allow": ["PATH", "HOME", "PYTHONPATH"]},
        "servers": {"alpha": {}, "beta": {"path": "/team/beta"}},
    }
    file = tmp_path / "bridges.toml"
    file.write_text(bridge_toml(config))
    args = ["--config", str(file)]
    async with (
        cluster_behind_proxy(redis_server.url, n=2, args=args, env=CHILD_ENV, command="bridge") as (processes, proxy),
        sdk_client(proxy.url + "/alpha", "mcp") as alpha,
        sdk_client(proxy.url + "/team/beta", "sse") as beta,
    ):
        assert [await call(alpha, "increment") for _ in range(4)] == ["1", "2", "3", "4"]
        assert [await call(beta, "increment") for _ in range(3)] == ["1", "2", "3"]  # another server, its own child
        assert await call(alpha, "increment") == "5"
        assert await forwarded(processes, "/alpha") > 0
        assert await forwarded(processes, "/team/beta") > 0
