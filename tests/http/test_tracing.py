"""Tracing with the OpenTelemetry SDK's in-memory exporter: one trace runs from a client's ``traceparent`` through
the HTTP request to the tool call. The SDK's tracer provider is process-global, so each probe runs in a child
process (tests/support/trace_probe.py) and prints its finished spans."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from typing import Any

import anyio
import pytest

from tests.support.servers import REPO_ROOT

pytestmark = pytest.mark.anyio


async def spans_for(traceparent: str, carrier: str) -> list[dict[str, Any]]:
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [sys.executable, "-m", "tests.support.trace_probe", traceparent, carrier],
            cwd=REPO_ROOT,
            check=False,
            stderr=subprocess.STDOUT,
        )
    output = result.stdout.decode()
    assert result.returncode == 0, output[-4000:]
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


async def test_a_traceparent_header_continues_the_callers_trace_through_the_request_to_the_tool_call() -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    spans = await spans_for(f"00-{trace_id}-{parent_id}-01", "header")
    by_name = {span["name"]: span for span in spans}
    request, call = by_name["POST /mcp"], by_name["tools/call echo"]
    assert request["kind"] == "SERVER"
    assert request["parent_id"] == parent_id
    assert call["parent_id"] == request["span_id"]
    assert {span["trace_id"] for span in (request, call)} == {trace_id}


async def test_a_traceparent_in_meta_continues_the_callers_trace_at_the_tool_call() -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    spans = await spans_for(f"00-{trace_id}-{parent_id}-01", "meta")
    call = next(span for span in spans if span["name"] == "tools/call echo")
    assert (call["trace_id"], call["parent_id"]) == (trace_id, parent_id)
