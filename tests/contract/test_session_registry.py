"""One contract for every `SessionRegistry` backend (memory now; Redis joins this parametrization)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from datapulse.errors import TooManySessions, Unavailable
from datapulse.sessions.registry import MemorySessionRegistry, SessionKind, SessionRecord, SessionRegistry

pytestmark = pytest.mark.anyio

BACKENDS: dict[str, Callable[[], SessionRegistry]] = {"memory": MemorySessionRegistry}


@pytest.fixture(params=sorted(BACKENDS))
def registry(request: pytest.FixtureRequest) -> SessionRegistry:
    return BACKENDS[request.param]()


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
