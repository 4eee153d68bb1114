"""The official MCP conformance suite through a round-robin proxy in front of three DataPulse instances.

Every HTTP request of the suite goes to the next instance in turn, so sessions, server-to-client
requests and their answers, SSE streams and ``Last-Event-ID`` resumption all cross instances.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.conformance.runner import (
    EXPECTED_FAILURES_FILE,
    Requirements,
    conformance_unavailable_reason,
    run_conformance,
)
from tests.conformance.test_conformance_datapulse import SUITE_TIMEOUT_S, wait_for_dynamic_tool
from tests.support.cluster import REQUEST_STATE_KEY
from tests.support.redis_server import run_redis
from tests.support.rr_proxy import round_robin_proxy
from tests.support.servers import spawn_datapulse

pytestmark = [pytest.mark.conformance, pytest.mark.anyio]


@pytest.mark.parametrize("requirements", ["2025-11-25", "2026-07-28"])
async def test_the_conformance_suite_passes_through_a_round_robin_proxy_in_front_of_three_instances(
    requirements: Requirements, tmp_path: Path
) -> None:
    reason = conformance_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    async with run_redis(tmp_path) as redis, AsyncExitStack() as stack:
        env = {"DATAPULSE_REDIS_URL": redis.url, "DATAPULSE_REQUEST_STATE_KEYS": REQUEST_STATE_KEY}
        # The suite sends no credentials; loopback without auth is allowed (and explicit).
        args = ["tests.conformance.fixture_server:app", "--insecure-no-auth"]
        processes = [await stack.enter_async_context(spawn_datapulse(args, env=env)) for _ in range(3)]
        for process in processes:
            await wait_for_dynamic_tool(process.url)
        proxy = await stack.enter_async_context(round_robin_proxy([process.url for process in processes]))
        result = await run_conformance(
            f"{proxy.url}/mcp", requirements, expected_failures=EXPECTED_FAILURES_FILE, timeout_s=SUITE_TIMEOUT_S
        )
        assert all(hits > 0 for hits in proxy.hits), proxy.hits
    assert result.scenarios, result.report()
    assert result.returncode == 0, result.report()
    unexpected = [name for name in result.problems if not name.startswith("tasks-")]
    assert not unexpected, result.report()
