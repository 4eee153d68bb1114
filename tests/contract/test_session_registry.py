"""One contract for every `SessionRegistry` backend: in memory, and on a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from datapulse.cluster.registry import RedisSessionRegistry
from datapulse.cluster.store import Keys, connect
from datapulse.errors import TooManySessions, Unavailable
from datapulse.sessions.registry import MemorySessionRegistry, SessionKind, SessionRecord, SessionRegistry
from tests.support.redis_server import run_redis

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis"])
async def registry(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SessionRegistry]:
    if request.param == "memory":
        yield MemorySessionRegistry()
        return
    async with run_redis(tmp_path) as server:
        client = connect(server.url, timeout_s=2.0)
        try:
            yield RedisSessionRegistry(client, Keys("test"), "node-a", idle_ttl_s=3600.0)
        finally:
            await client.aclose()


def record(
    session_id: str, principal: str = "alice", kind: SessionKind = SessionKind.SSE, at: float = 0.0
) -> SessionRecord:
    return SessionRecord(session_id, kind, principal, at)


async def test_added_sessions_can_be_found_and_removed(registry: SessionRegistry) -> None:
    await registry.add(record("s1"), max_total=10, max_per_principal=10)
    assert await registry.get("s1") == record("s1")
    assert await registry.remove("s1") == record("s1")
    assert await registry.get("s1") is None
    assert await registry.remove("s1") is None


async def test_a_duplicate_id_is_refused(registry: SessionRegistry) -> None:
    await registry.add(record("s1"), max_total=10, max_per_principal=10)
    with pytest.raises(ValueError, match="already exists"):
        await registry.add(record("s1", principal="bob"), max_total=10, max_per_principal=10)


async def test_the_global_cap_answers_503(registry: SessionRegistry) -> None:
    await registry.add(record("s1", "alice"), max_total=2, max_per_principal=10)
    await registry.add(record("s2", "bob"), max_total=2, max_per_principal=10)
    with pytest.raises(Unavailable) as caught:
        await registry.add(record("s3", "carol"), max_total=2, max_per_principal=10)
    assert caught.value.http_status == 503


async def test_the_per_principal_cap_answers_429_and_frees_up_on_remove(registry: SessionRegistry) -> None:
    await registry.add(record("s1"), max_total=10, max_per_principal=1)
    with pytest.raises(TooManySessions) as caught:
        await registry.add(record("s2"), max_total=10, max_per_principal=1)
    assert caught.value.http_status == 429
    await registry.add(record("s3", principal="bob"), max_total=10, max_per_principal=1)
    await registry.remove("s1")
    await registry.add(record("s2"), max_total=10, max_per_principal=1)


async def test_idle_sessions_are_those_not_touched_since_the_cutoff(registry: SessionRegistry) -> None:
    await registry.add(record("old", at=0.0), max_total=10, max_per_principal=10)
    await registry.add(record("new", at=50.0), max_total=10, max_per_principal=10)
    await registry.add(record("touched", at=0.0), max_total=10, max_per_principal=10)
    await registry.touch("touched", 60.0)
    await registry.touch("unknown", 60.0)
    assert sorted(await registry.idle_since(40.0)) == ["old"]


async def test_counts_are_per_kind(registry: SessionRegistry) -> None:
    await registry.add(record("a", kind=SessionKind.SSE), max_total=10, max_per_principal=10)
    await registry.add(record("b", kind=SessionKind.SSE), max_total=10, max_per_principal=10)
    await registry.add(record("c", kind=SessionKind.DATAPULSE_API), max_total=10, max_per_principal=10)
    counts = await registry.counts()
    assert counts == {SessionKind.SSE: 2, SessionKind.DATAPULSE_API: 1, SessionKind.STREAMABLE_HTTP: 0}


async def test_the_handshake_is_stored_on_the_record(registry: SessionRegistry) -> None:
    await registry.add(record("s1", kind=SessionKind.STREAMABLE_HTTP), max_total=10, max_per_principal=10)
    await registry.annotate("s1", protocol_version="2025-11-25", initialize_params='{"a": 1}')
    await registry.annotate("unknown", protocol_version="2025-11-25", initialize_params="{}")
    stored = await registry.get("s1")
    assert stored == replace(
        record("s1", kind=SessionKind.STREAMABLE_HTTP), protocol_version="2025-11-25", initialize_params='{"a": 1}'
    )
    assert await registry.get("unknown") is None


async def test_a_claim_moves_ownership_only_from_the_expected_owner(registry: SessionRegistry) -> None:
    owned = replace(record("s1"), owner="dead-node", epoch="abc")
    await registry.add(owned, max_total=10, max_per_principal=10)
    assert await registry.claim("s1", from_owner="someone-else", to_owner="node-a", now=1.0) is None
    claimed = await registry.claim("s1", from_owner="dead-node", to_owner="node-a", now=1.0)
    assert claimed == replace(owned, owner="node-a")
    assert await registry.claim("s1", from_owner="dead-node", to_owner="node-b", now=2.0) is None
    assert await registry.get("s1") == replace(owned, owner="node-a")
    assert await registry.claim("unknown", from_owner="", to_owner="node-a", now=1.0) is None
