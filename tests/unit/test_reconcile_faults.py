"""Reconciling after the cluster store answers again delivers every session's held events even when one
session's stream fails unexpectedly, and never raises: an exception there would end the lifespan's task group,
leaving an instance that still serves HTTP but no longer beats, resubscribes or delivers what it holds (the soak
saw one: a late write to a response that had already ended)."""

from __future__ import annotations

import logging
from typing import cast

import pytest

from datapulse.app import create_app, runtime_of
from datapulse.cluster import routing
from datapulse.cluster.node import ClusterNode
from datapulse.sessions.streams import EventStream
from datapulse.transports.datapulse_api import ApiSession
from tests.support.servers import make_settings

pytestmark = pytest.mark.anyio


async def test_one_streams_failure_does_not_stop_the_others_held_events_nor_escape(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = runtime_of(create_app(make_settings()))
    broken = await runtime.sessions.open(ApiSession("reconcile-broken", "alice", runtime))
    healthy = await runtime.sessions.open(ApiSession("reconcile-healthy", "bob", runtime))
    flushed: list[str] = []

    async def flush_pending(stream: EventStream) -> None:
        if stream is broken.events:
            raise RuntimeError("Unexpected ASGI message 'http.response.body' sent, after response already completed.")
        flushed.append(stream.key)

    monkeypatch.setattr(EventStream, "flush_pending", flush_pending)
    not_asked = cast(ClusterNode, None)  # without check_owners the registry is not asked
    with caplog.at_level(logging.ERROR, logger="datapulse.cluster"):
        await routing.reconcile(runtime, not_asked, check_owners=False)
    assert flushed == [healthy.events.key]
    assert any("reconcile-broken"[:16] in record.getMessage() for record in caplog.records)
