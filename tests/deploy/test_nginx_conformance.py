"""The official MCP conformance suite through Debian's real nginx, configured from ``deploy/nginx/datapulse.conf``,
in front of two DataPulse instances in cluster mode (one real Redis) serving the conformance fixture.

nginx round-robins every request, so consecutive requests of one session land on different instances: sessions,
server-to-client requests and their answers, SSE streams and their resumption are forwarded or taken over across
instances through Redis. Same expectations as the direct run (tests/conformance/test_conformance_datapulse.py): the
CLI exits 0 with ``expected-failures.yml`` and no other scenario reports a FAILURE or WARNING.

The instances run as the recipe says DataPulse should behind nginx (``DATAPULSE_TRUSTED_PROXIES``,
``DATAPULSE_ALLOWED_HOSTS``) and, like the direct run, without auth (``--insecure-no-auth`` on loopback): the suite
sends no credentials, so the cluster's shared settings are `cluster_env`'s without its static tokens (with a token
configured, auth stays on whatever the flag says).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import pytest

from tests.conformance.runner import (
    EXPECTED_FAILURES_FILE,
    Requirements,
    conformance_unavailable_reason,
    run_conformance,
)
from tests.conformance.test_conformance_datapulse import SUITE_TIMEOUT_S, wait_for_dynamic_tool
from tests.support.cluster import cluster_env
from tests.support.nginx import NGINX_MISSING, Nginx, run_nginx
from tests.support.redis_server import RedisServer, free_port
from tests.support.servers import ServerProcess, spawn_datapulse

pytestmark = [
    pytest.mark.conformance,
    pytest.mark.anyio,
    pytest.mark.skipif(NGINX_MISSING is not None, reason=NGINX_MISSING or ""),
]

INSTANCES: Final = 2
FIXTURE_ARGS: Final = ["tests.conformance.fixture_server:app", "--insecure-no-auth"]
STATIC_TOKENS: Final = frozenset({"DATAPULSE_TOKEN", "DATAPULSE_TOKENS"})


@dataclass(frozen=True)
class Stack:
    """nginx in front of the fixture's instances."""

    nginx: Nginx
    instances: list[ServerProcess]

    @property
    def upstreams(self) -> set[str]:
        return {urlsplit(instance.url).netloc for instance in self.instances}

    def upstreams_serving_mcp(self) -> set[str]:
        """Every instance nginx sent a ``/mcp`` request to (from its access log: method, URI, status, upstream)."""
        return {
            fields[3]
            for fields in (line.split() for line in self.nginx.access_log())
            if len(fields) == 4 and fields[1].startswith("/mcp") and fields[3] != "-"
        }


@asynccontextmanager
async def fixture_behind_nginx(redis: RedisServer, workdir: Path) -> AsyncIterator[Stack]:
    """`INSTANCES` cluster instances serving the conformance fixture, each with its dynamic tool in place, and
    nginx (the recipe, plain listener, files under ``workdir``) in front of them."""
    port = free_port()
    behind_nginx = {"DATAPULSE_TRUSTED_PROXIES": "127.0.0.1", "DATAPULSE_ALLOWED_HOSTS": f"127.0.0.1:{port}"}
    env = {name: value for name, value in cluster_env(redis.url, behind_nginx).items() if name not in STATIC_TOKENS}
    async with AsyncExitStack() as stack:
        instances = [await stack.enter_async_context(spawn_datapulse(FIXTURE_ARGS, env=env)) for _ in range(INSTANCES)]
        upstreams = [urlsplit(instance.url).netloc for instance in instances]
        for n, upstream in enumerate(upstreams):
            # The instances accept only nginx's Host, so each is polled through an nginx in front of it alone.
            async with run_nginx([upstream], workdir / f"wait-{n}", port=port) as alone:
                await wait_for_dynamic_tool(alone.url)
        nginx = await stack.enter_async_context(run_nginx(upstreams, workdir / "nginx", port=port))
        yield Stack(nginx, instances)


@pytest.mark.parametrize("requirements", ["2025-11-25", "2026-07-28"])
async def test_the_conformance_suite_passes_through_nginx_in_front_of_two_cluster_instances(
    requirements: Requirements, redis_server: RedisServer, tmp_path: Path
) -> None:
    reason = conformance_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    async with fixture_behind_nginx(redis_server, tmp_path) as stack:
        result = await run_conformance(
            f"{stack.nginx.url}/mcp", requirements, expected_failures=EXPECTED_FAILURES_FILE, timeout_s=SUITE_TIMEOUT_S
        )
        served = stack.upstreams_serving_mcp()
        assert served == stack.upstreams, f"nginx sent /mcp requests to {served}, not to every instance"
    assert result.scenarios, result.report()
    assert result.returncode == 0, result.report()
    unexpected = [name for name in result.problems if not name.startswith("tasks-")]
    assert not unexpected, result.report()
