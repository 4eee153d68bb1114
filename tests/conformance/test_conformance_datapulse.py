"""The official MCP conformance suite against the fixture served through `datapulse serve`.

Both requirement sets run against DataPulse's own ``/mcp`` transport (2025-11-25 sessions and the
2026-07-28 stateless path): the CLI must exit 0 with ``expected-failures.yml`` (which lists only the
optional tasks extension), and no other scenario may report a FAILURE or WARNING.
"""

from __future__ import annotations

import anyio
import httpx2
import pytest

from tests.conformance.fixture_server import DYNAMIC_DELAY_S
from tests.conformance.runner import (
    EXPECTED_FAILURES_FILE,
    Requirements,
    conformance_unavailable_reason,
    run_conformance,
)
from tests.support.mcp_http import modern_headers, modern_params
from tests.support.servers import spawn_datapulse

pytestmark = [pytest.mark.conformance, pytest.mark.anyio]

SUITE_TIMEOUT_S = 600.0


async def wait_for_dynamic_tool(url: str) -> None:
    """The fixture adds test_dynamic_tool shortly after start; list snapshots must include it (bounded poll)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": modern_params({})}
    async with httpx2.AsyncClient(timeout=10) as client:
        with anyio.fail_after(DYNAMIC_DELAY_S + 10):
            while True:
                listed = await client.post(f"{url}/mcp", json=body, headers=modern_headers("tools/list"))
                if "test_dynamic_tool" in listed.text:
                    return
                await anyio.sleep(0.1)


@pytest.mark.parametrize("requirements", ["2025-11-25", "2026-07-28"])
async def test_the_conformance_suite_passes_against_datapulse_serve(requirements: Requirements) -> None:
    reason = conformance_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    # The suite sends no credentials; loopback without auth is allowed (and explicit).
    async with spawn_datapulse(["tests.conformance.fixture_server:app", "--insecure-no-auth"]) as proc:
        await wait_for_dynamic_tool(proc.url)
        result = await run_conformance(
            f"{proc.url}/mcp", requirements, expected_failures=EXPECTED_FAILURES_FILE, timeout_s=SUITE_TIMEOUT_S
        )
    assert result.scenarios, result.report()
    assert result.returncode == 0, result.report()
    unexpected = [name for name in result.problems if not name.startswith("tasks-")]
    assert not unexpected, result.report()
