"""``datapulse proxy`` in cluster mode: two real proxy processes sharing a real Redis in front of a real 2025
Streamable HTTP upstream. The upstream session a client session uses outlives the instance that opened it: after a
``kill -9`` of the owner, the instance that takes the client session over continues the same upstream session
instead of sending ``initialize`` again."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from tests.cluster.test_failover import FAST_FAILOVER, client, echo, kill, until_not_503
from tests.support.cluster import spawn_cluster
from tests.support.http_upstream import Upstream, spawn_upstream
from tests.support.mcp_http import legacy_call, legacy_initialize
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio


async def seen(upstream: Upstream) -> dict[str, Any]:
    async with httpx2.AsyncClient(timeout=10) as http:
        answer: dict[str, Any] = (await http.get(upstream.seen_url)).json()
    return answer


async def test_a_taken_over_client_session_continues_its_upstream_session_without_a_new_initialize(
    redis_server: RedisServer,
) -> None:
    async with (
        spawn_upstream("2025") as upstream,
        spawn_cluster(redis_server.url, n=2, args=[*FAST_FAILOVER, upstream.mcp_url], command="proxy") as (
            owner,
            other,
        ),
        client(owner) as at_owner,
        client(other) as elsewhere,
    ):
        session_id = await legacy_initialize(at_owner)
        before = await legacy_call(at_owner, session_id, "tools/call", echo("before"))
        assert before.json()["result"]["content"] == [{"type": "text", "text": "before"}], before.text
        upstream_session = (await seen(upstream))["session"]
        assert upstream_session is not None

        await kill(owner)

        after = await until_not_503(
            lambda: legacy_call(elsewhere, session_id, "tools/call", echo("after"), request_id=2)
        )
        assert after.status_code == 200, after.text
        assert after.json()["result"]["content"] == [{"type": "text", "text": "after"}], after.text
        last = await seen(upstream)
    assert last["session"] == upstream_session  # the same upstream session, continued
    # Each instance's start-up probe opened (and closed) one upstream session; the client session opened one more;
    # the takeover opened none.
    assert len(last["sessions"]) == 3, last["sessions"]
