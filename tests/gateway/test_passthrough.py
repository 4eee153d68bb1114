"""The gateway's pass-through (`datapulse.bridge.passthrough`): a 2026-07-28 request to a 2026-07-28 upstream is
forwarded as one HTTP exchange, and its client sees exactly what the full path (the SDK's server kernel and client
stack, ``DATAPULSE_FAST_PATH=false``) answers. Two real ``datapulse proxy`` processes, one per path, in front of one
real 2026-only upstream, get the same raw requests; the answers are compared byte for byte (JSON) or message for
message (SSE: progress and log notifications, then the response).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import httpx2
import pytest

from datapulse.transports._sse_codec import SseDecoder
from tests.support.bridging import CALL_TIMEOUT_S
from tests.support.http_upstream import Upstream, spawn_upstream
from tests.support.prometheus import scrape, value
from tests.support.servers import TOKEN, ServerProcess, bearer, spawn_datapulse

pytestmark = pytest.mark.anyio

MODERN: Final = "2026-07-28"
LOG_LEVEL: Final = "io.modelcontextprotocol/logLevel"
FILTERS: Final = ("--deny-tools", "delete_*", "--deny-resources", "stdio://items/secret")
"""The same filters on both proxies: a hidden item is answered by the full path on both."""


@dataclass(frozen=True)
class Case:
    """One raw 2026-07-28 request; ``forwarded``: whether the pass-through takes it (else the full path does)."""

    label: str
    method: str
    params: dict[str, Any]
    forwarded: bool = True


def _meta(**extra: Any) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "differential", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
        **extra,
    }


CASES: Final = [
    Case("a tool's text and structured result", "tools/call", {"name": "echo", "arguments": {"message": "héllo ✓"}}),
    Case("a missing argument (the tool's error result)", "tools/call", {"name": "echo", "arguments": {}}),
    Case("an argument of the wrong type", "tools/call", {"name": "echo", "arguments": {"message": 5}}),
    Case("an unknown tool", "tools/call", {"name": "no_such_tool", "arguments": {}}),
    Case("a tool that needs a back channel", "tools/call", {"name": "sample", "arguments": {"question": "?"}}),
    Case(
        "progress on the response stream",
        "tools/call",
        {"name": "slow", "arguments": {"seconds": 0.05}, "_meta": _meta(progressToken="p-1")},
    ),
    Case(
        "a log message the client opted into",
        "tools/call",
        {"name": "log", "arguments": {"message": "noted"}, "_meta": _meta(**{LOG_LEVEL: "info"})},
    ),
    Case("a log message the client did not opt into", "tools/call", {"name": "log", "arguments": {"message": "quiet"}}),
    Case("arguments that are not an object", "tools/call", {"name": "echo", "arguments": "text"}, forwarded=False),
    Case("a hidden tool", "tools/call", {"name": "delete_everything", "arguments": {}}, forwarded=False),
    Case("a resource", "resources/read", {"uri": "stdio://info"}),
    Case("a resource of a template", "resources/read", {"uri": "stdio://items/42"}),
    Case("an unknown resource", "resources/read", {"uri": "stdio://missing"}),
    Case("a hidden resource", "resources/read", {"uri": "stdio://items/secret"}, forwarded=False),
    Case("a prompt", "prompts/get", {"name": "greet", "arguments": {"name": "Ada"}}),
    Case("a prompt without its argument", "prompts/get", {"name": "greet", "arguments": {}}),
    Case("an unknown prompt", "prompts/get", {"name": "nope"}),
]


@asynccontextmanager
async def proxies(upstream: Upstream) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    """Two proxies in front of ``upstream``: the pass-through on (the default), and off (the full path)."""
    args = [*FILTERS, upstream.mcp_url]
    async with (
        spawn_datapulse(args, env={"DATAPULSE_TOKEN": TOKEN}, command="proxy") as passthrough,
        spawn_datapulse(args, env={"DATAPULSE_TOKEN": TOKEN, "DATAPULSE_FAST_PATH": "false"}, command="proxy") as full,
    ):
        yield passthrough, full


def _request(case: Case, request_id: int) -> tuple[dict[str, str], bytes]:
    params = {**case.params}
    params.setdefault("_meta", _meta())
    name = params.get("uri") if case.method == "resources/read" else params.get("name")
    headers = {
        **bearer(),
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": MODERN,
        "mcp-method": case.method,
        "mcp-name": str(name),
    }
    body = {"jsonrpc": "2.0", "id": request_id, "method": case.method, "params": params}
    return headers, json.dumps(body).encode()


async def _answer(http: httpx2.AsyncClient, case: Case, request_id: int) -> tuple[int, str, Any]:
    """The status, content type and body of one case's answer: the exact JSON text, or an SSE stream's messages."""
    headers, body = _request(case, request_id)
    response = await http.post("/mcp", content=body, headers=headers)
    kind = response.headers.get("content-type", "").split(";")[0]
    if kind == "text/event-stream":
        events = SseDecoder().feed(response.content)
        return response.status_code, kind, [json.loads(event.data) for event in events if event.data]
    return response.status_code, kind, response.text


async def test_a_2026_request_to_a_2026_upstream_gets_on_the_pass_through_exactly_what_the_full_path_answers() -> None:
    async with (
        spawn_upstream("2026") as upstream,
        proxies(upstream) as (passthrough, full),
        httpx2.AsyncClient(base_url=passthrough.url, headers=bearer(), timeout=CALL_TIMEOUT_S) as fast,
        httpx2.AsyncClient(base_url=full.url, headers=bearer(), timeout=CALL_TIMEOUT_S) as slow,
    ):
        for request_id, case in enumerate(CASES, start=1):
            assert await _answer(fast, case, request_id) == await _answer(slow, case, request_id), case.label
        fast_samples = await scrape(fast)
        slow_samples = await scrape(slow)
    for method in ("tools/call", "resources/read", "prompts/get"):
        expected = sum(1 for case in CASES if case.method == method and case.forwarded)
        passed = "datapulse_upstream_passthrough_requests_total"
        assert value(fast_samples, passed, server="127.0.0.1", method=method) == expected, method
        assert value(slow_samples, passed, server="127.0.0.1", method=method) == 0.0, method


async def test_the_pass_through_relays_progress_before_the_response_on_one_stream() -> None:
    case = CASES[5]
    assert case.params["name"] == "slow"
    async with (
        spawn_upstream("2026") as upstream,
        proxies(upstream) as (passthrough, _full),
        httpx2.AsyncClient(base_url=passthrough.url, timeout=CALL_TIMEOUT_S) as http,
    ):
        status, kind, messages = await _answer(http, case, 7)
    assert (status, kind) == (200, "text/event-stream")
    assert [message.get("method") for message in messages] == ["notifications/progress", None]
    assert messages[0]["params"]["progressToken"] == "p-1"  # the client's own token, as the upstream got it
    assert messages[1]["id"] == 7
    assert messages[1]["result"]["content"][0]["text"] == "slept 0.05"
