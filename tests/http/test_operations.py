"""Operations on a real server: /metrics scraped with prometheus-client's text parser as traffic flows through
each transport, bounded label cardinality, audit records of calls and auth decisions, and no token in any log
line or audit record."""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest

from datapulse.audit import AuditRecord, capture_audit
from datapulse.logs import configure_logging
from tests.support.mcp_http import legacy_call, legacy_initialize, modern_call
from tests.support.prometheus import scrape, value
from tests.support.servers import ALICE_TOKEN, TOKEN, RunningServer, make_settings, serve_in_process
from tests.support.sse import open_sse

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with serve_in_process(make_settings(log_level="info")) as running:
        yield running


async def echo_on_every_transport(client: httpx2.AsyncClient) -> str:
    """One echo tools/call over 2026 stateless, a 2025 session and the DataPulse API; returns the session id."""
    stateless = await modern_call(client, "tools/call", {"name": "echo", "arguments": {"message": "a"}})
    assert stateless.status_code == 200
    session_id = await legacy_initialize(client)
    assert (
        await legacy_call(client, session_id, "tools/call", {"name": "echo", "arguments": {"message": "b"}})
    ).status_code == 200
    async with open_sse(client, "GET", "/events?session_id=ops-1") as events:
        await events.next_event()
        message = {"type": "call_tool", "request_id": "r1", "data": {"name": "echo", "message": "c"}}
        assert (await client.post("/message?session_id=ops-1", json=message)).status_code == 202
        while not (await events.next_event()).data:
            pass
    return session_id


async def test_metrics_move_with_sessions_streams_tool_calls_and_auth_failures(server: RunningServer) -> None:
    async with server.client() as client:
        before = await scrape(client)
        session_id = await echo_on_every_transport(client)
        async with open_sse(client, "GET", "/sse") as stream:
            await stream.next_event()
            during = await scrape(client)
        async with server.client(token="not-a-token") as stranger:
            assert (await modern_call(stranger, "tools/list")).status_code == 401
        async with server.client(token=None) as anonymous:
            assert (await modern_call(anonymous, "tools/list")).status_code == 401
        after = await scrape(client)
    calls = "datapulse_tool_calls_total"
    assert value(during, calls, tool="echo", outcome="ok") - value(before, calls, tool="echo", outcome="ok") == 3
    count = "datapulse_tool_call_duration_seconds_count"
    assert value(during, count, tool="echo") - value(before, count, tool="echo") == 3
    sessions = "datapulse_sessions_open"
    assert value(during, sessions, transport="streamable_http", protocol_version="2025-11-25") == 1
    assert value(during, "datapulse_streams_open", transport="sse") == 1
    messages = "datapulse_messages_total"
    for transport in ("stateless", "streamable_http", "datapulse_api"):
        received = value(during, messages, transport=transport, direction="in")
        sent = value(during, messages, transport=transport, direction="out")
        assert received >= 1, transport
        assert sent == received, transport  # one response (result or error) per request
    assert value(during, messages, transport="streamable_http", direction="in") >= 2  # initialize, tools/call
    depth = "datapulse_outbound_queue_depth_count"
    assert value(during, depth) - value(before, depth) >= 2  # frames written to the /events and /sse streams
    failures = "datapulse_auth_failures_total"
    assert value(after, failures, reason="unknown_token") - value(before, failures, reason="unknown_token") == 1
    assert value(after, failures, reason="missing") - value(before, failures, reason="missing") == 1
    assert value(after, "datapulse_streams_open", transport="sse") == 0
    assert session_id


async def test_random_tool_names_add_one_other_series_not_one_per_name(server: RunningServer) -> None:
    async with server.client() as client:
        for _ in range(30):
            name = secrets.token_hex(6)
            await modern_call(client, "tools/call", {"name": name, "arguments": {}})
        samples = await scrape(client)
    tools = {dict(labels)["tool"] for (name, labels) in samples if name == "datapulse_tool_calls_total"}
    assert tools <= {"_other", "echo", "add", "get_time", "fetch_url", "uppercase_text"}
    assert value(samples, "datapulse_tool_calls_total", tool="_other", outcome="error") == 30


async def test_metrics_need_auth_unless_made_public_and_rate_limits_are_counted() -> None:
    async with serve_in_process(make_settings(rate_limit="2/hour")) as running:
        async with running.client(token=None) as anonymous:
            assert (await anonymous.get("/metrics")).status_code == 401
        async with running.client(token=ALICE_TOKEN) as alice:
            statuses = [(await modern_call(alice, "tools/list")).status_code for _ in range(3)]
            assert statuses == [200, 200, 429]
        async with running.client() as client:
            assert value(await scrape(client), "datapulse_rate_limited_total", kind="request") == 1
    async with serve_in_process(make_settings(metrics_public=True)) as running, running.client(token=None) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 200


async def test_every_call_and_auth_decision_has_an_audit_record_with_its_fields(server: RunningServer) -> None:
    with capture_audit() as records:
        async with server.client(token=ALICE_TOKEN) as alice:
            session_id = await echo_on_every_transport(alice)
        async with server.client(token="not-a-token") as stranger:
            await modern_call(stranger, "tools/list")
    calls = [r for r in records if r.kind == "tool_call"]
    assert [(r.transport, r.name, r.outcome) for r in calls] == [
        ("stateless", "echo", "ok"),
        ("streamable_http", "echo", "ok"),
        ("datapulse_api", "echo", "ok"),
    ]
    assert all(r.principal == "alice" and r.node_id == server.runtime.node_id for r in calls)
    assert calls[1].session_id == session_id
    assert calls[1].protocol_version == "2025-11-25"
    assert calls[2].session_id == "ops-1"
    assert all(r.arguments is None and (r.arguments_digest or "").startswith("sha256:") for r in calls)
    assert all(r.duration_ms is not None and r.duration_ms >= 0 for r in calls)
    auth = [r for r in records if r.kind == "auth"]
    assert {r.outcome for r in auth} == {"allowed", "denied:unknown_token"}
    denied = next(r for r in auth if r.outcome.startswith("denied"))
    assert (denied.principal, denied.name) == (None, "/mcp")


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """DataPulse's structured logging (as `datapulse serve` configures it), into a buffer, at debug level."""
    buffer = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging("debug", json=True, stream=buffer)
    try:
        yield buffer
    finally:
        for handler in [h for h in root.handlers if getattr(h, "stream", None) is buffer]:
            root.removeHandler(handler)
        root.setLevel(level)


async def test_no_token_value_appears_in_any_log_line_or_audit_record(
    server: RunningServer, log_lines: io.StringIO
) -> None:
    leaked = "leaky-" + secrets.token_hex(8)
    records: list[AuditRecord]
    with capture_audit() as records:
        async with server.client(token=ALICE_TOKEN) as alice:
            await echo_on_every_transport(alice)
            await alice.post("/tickets")
        async with server.client(token=leaked) as bad:
            await modern_call(bad, "tools/list")
            await bad.get(f"/events?session_id=x&access_token={leaked}", headers={"Accept": "text/event-stream"})
    lines = log_lines.getvalue().splitlines() + [r.to_json() for r in records]
    assert records
    assert any("access_token" in line for line in lines)  # the refused URL was logged, with its value redacted
    for secret in (ALICE_TOKEN, TOKEN, leaked):
        assert not [line for line in lines if secret in line], secret


async def test_log_lines_of_a_request_carry_its_request_id_principal_and_session(
    server: RunningServer, log_lines: io.StringIO
) -> None:
    message = {"type": "list_tools", "request_id": "r1", "data": {}}
    async with server.client(token=ALICE_TOKEN) as alice:
        posted = await alice.post("/message?session_id=ctx-1", json=message, headers={"X-Request-Id": "req-42"})
        assert posted.status_code == 202
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines() if line.startswith("{")]
    opened = [line for line in lines if "opened" in line["event"] and line.get("session_id") == "ctx-1"]
    assert opened, lines
    assert opened[0]["request_id"] == "req-42"
    assert opened[0]["principal"] == "alice"
    assert {"timestamp", "level", "logger", "event"} <= opened[0].keys()
