"""A session this process is letting go to another instance (drain hand-over, fencing) answers a request that still
finds it here with `SessionMoved` (503, retry: the retry reaches the instance that takes it), never the 404 of a
closed session, which would make a 2025 client open a new session and lose what the old one owed."""

from __future__ import annotations

import anyio
import pytest

from datapulse.app import create_app, runtime_of
from datapulse.errors import SessionMoved, SessionNotFound
from datapulse.transports.datapulse_api import ApiSession
from tests.support.servers import make_settings

pytestmark = pytest.mark.anyio


async def test_a_session_being_let_go_answers_moved_then_is_gone_here() -> None:
    runtime = runtime_of(create_app(make_settings()))
    sessions = runtime.sessions
    session = await sessions.open(ApiSession("handover-1", "alice", runtime))
    release = anyio.Event()
    under_way = anyio.Event()
    finish_close = session.finish_close

    async def slow_finish_close() -> None:  # the hand-over is under way while a request arrives
        under_way.set()
        await release.wait()
        await finish_close()

    session.finish_close = slow_finish_close  # type: ignore[method-assign]
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(sessions.relinquish, "handover-1", "another instance owns it now")
        with anyio.fail_after(5):
            await under_way.wait()
        with pytest.raises(SessionMoved) as moved:
            await sessions.lookup("handover-1", "alice", ApiSession)
        assert moved.value.http_status == 503
        assert moved.value.headers["Retry-After"] == "1"
        with pytest.raises(SessionNotFound):  # another principal still learns nothing
            await sessions.lookup("handover-1", "bob", ApiSession)
        release.set()
    with pytest.raises(SessionNotFound):
        await sessions.lookup("handover-1", "alice", ApiSession)
    assert await sessions.registry.get("handover-1") is not None, "the record stays: it is the new owner's"
