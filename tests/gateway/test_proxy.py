"""``datapulse proxy URL`` as a real process in front of real single-era upstreams (tests/support/http_upstream.py),
reached with the SDK's Python client in each client era: era translation both ways, what passes through
(progress, log messages, list changes, sampling), and what happens when the upstream fails.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, Literal

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    LoggingMessageNotificationParams,
    TextContent,
    TextResourceContents,
    ToolListChangedNotification,
)

from datapulse.bridge.proxy import CHILD_UNAVAILABLE
from tests.support.bridging import CALL_TIMEOUT_S, Notifications, call
from tests.support.http_upstream import Era, Upstream, spawn_upstream
from tests.support.processes import run_collecting
from tests.support.prometheus import scrape, value
from tests.support.servers import REPO_ROOT, TOKEN, ServerProcess, bearer, spawn_datapulse

pytestmark = pytest.mark.anyio

ClientEra = Literal["2026", "2025", "2024"]
UPSTREAM_ERAS: Final[tuple[Era, ...]] = ("2026", "2025", "2024")
CLIENT_ERAS: Final[tuple[ClientEra, ...]] = ("2026", "2025", "2024")
NEGOTIATED: Final = {"2026": "2026-07-28", "2025": "2025-11-25", "2024": "2025-11-25"}
"""What the SDK client reports after its handshake with the proxy in each client era (on /sse the SDK's client
still offers its latest handshake version, which DataPulse accepts)."""


@asynccontextmanager
async def proxy(upstream: Upstream, *options: str) -> AsyncIterator[ServerProcess]:
    """``datapulse proxy --port 0 OPTIONS URL`` in front of ``upstream``."""
    async with spawn_datapulse([*options, upstream.mcp_url], env={"DATAPULSE_TOKEN": TOKEN}, command="proxy") as dp:
        yield dp


@asynccontextmanager
async def client(server: ServerProcess, era: ClientEra, **options: object) -> AsyncIterator[Client]:
    """An SDK client of the proxy: 2026-07-28 stateless on /mcp, a 2025-11-25 session on /mcp, or 2024-11-05 /sse."""
    if era == "2024":
        async with Client(sse_client(server.url + "/sse", headers=bearer()), mode="legacy", **options) as connected:  # type: ignore[arg-type]
            yield connected
        return
    async with (
        httpx2.AsyncClient(headers=bearer(), timeout=CALL_TIMEOUT_S) as http,
        Client(
            streamable_http_client(server.url + "/mcp", http_client=http),
            mode="2026-07-28" if era == "2026" else "legacy",
            **options,  # type: ignore[arg-type]
        ) as connected,
    ):
        yield connected


@pytest.mark.parametrize("upstream_era", UPSTREAM_ERAS, ids=lambda era: f"{era}-upstream")
async def test_a_client_of_every_era_uses_an_upstream_of_every_era(upstream_era: Era) -> None:
    async with spawn_upstream(upstream_era) as upstream, proxy(upstream) as server:
        for era in CLIENT_ERAS:
            async with client(server, era) as connected:
                assert connected.protocol_version == NEGOTIATED[era], era
                names = {tool.name for tool in (await connected.list_tools()).tools}
                assert {"echo", "increment", "slow", "sample", "log"} <= names, era
                assert await call(connected, "echo", {"message": f"héllo ✓ {era}"}) == f"héllo ✓ {era}"
                read = await connected.read_resource("stdio://info")
                content = read.contents[0]
                assert isinstance(content, TextResourceContents)
                assert content.text == "DataPulse stdio test server", era
                prompt = await connected.get_prompt("greet", {"name": "Ada"})
                assert "Ada" in str(prompt.messages[0].content), era


@pytest.mark.parametrize("upstream_era", UPSTREAM_ERAS, ids=lambda era: f"{era}-upstream")
async def test_each_client_session_gets_its_own_upstream_session_unless_the_upstream_is_2026(
    upstream_era: Era,
) -> None:
    async with (
        spawn_upstream(upstream_era) as upstream,
        proxy(upstream) as server,
        client(server, "2025") as first,
        client(server, "2024") as second,
    ):
        assert [await call(first, "increment") for _ in range(2)] == ["1", "2"]
        # One upstream process serves both; its counter is per process, so a shared connection would not reset it.
        # What separates them is the upstream session: 2025 and 2024 upstreams give each client its own.
        assert await call(second, "increment") == "3"
        pids = {await call(first, "pid"), await call(second, "pid")}
        assert len(pids) == 1


@pytest.mark.parametrize("upstream_era", UPSTREAM_ERAS, ids=lambda era: f"{era}-upstream")
@pytest.mark.parametrize("client_era", ["2025", "2024"])
async def test_progress_and_log_messages_of_the_upstream_reach_the_client(
    upstream_era: Era, client_era: ClientEra
) -> None:
    logged: list[LoggingMessageNotificationParams] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logged.append(params)

    seen_progress: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen_progress.append(progress)

    async with (
        spawn_upstream(upstream_era) as upstream,
        proxy(upstream) as server,
        client(server, client_era, logging_callback=on_log) as connected,
    ):
        with anyio.fail_after(CALL_TIMEOUT_S):
            assert await call(connected, "log", {"message": "from upstream"}) == "logged"
            result = await connected.call_tool("slow", {"seconds": 0.01}, progress_callback=on_progress)
        assert not result.is_error
        assert [entry.data for entry in logged] == ["from upstream"]
        assert seen_progress == [0]


@pytest.mark.parametrize("upstream_era", UPSTREAM_ERAS, ids=lambda era: f"{era}-upstream")
async def test_a_tool_list_change_of_the_upstream_reaches_the_clients_session(upstream_era: Era) -> None:
    notifications = Notifications()
    async with (
        spawn_upstream(upstream_era) as upstream,
        proxy(upstream) as server,
        client(server, "2025", message_handler=notifications) as connected,
    ):
        assert await call(connected, "change_tools") == "changed"
        await notifications.wait_for(ToolListChangedNotification)


@pytest.mark.parametrize("upstream_era", ["2025", "2024"], ids=lambda era: f"{era}-upstream")
async def test_the_upstreams_sampling_request_is_answered_by_the_real_client(upstream_era: Era) -> None:
    async def sampling(_context: object, params: CreateMessageRequestParams) -> CreateMessageResult:
        question = params.messages[0].content
        assert isinstance(question, TextContent)
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text=f"answer to {question.text}"), model="test"
        )

    async with (
        spawn_upstream(upstream_era) as upstream,
        proxy(upstream) as server,
        client(server, "2025", sampling_callback=sampling) as connected,
    ):
        assert await call(connected, "sample", {"question": "why"}) == "answer to why"


PASSTHROUGH_OR_NOT: Final = [("2025", "2025"), ("2026", "2026")]
"""(upstream era, client era): a 2025 session through the full path; 2026-07-28 both sides, the pass-through."""


@pytest.mark.parametrize(("upstream_era", "client_era"), PASSTHROUGH_OR_NOT, ids=["2025-session", "2026-passthrough"])
async def test_an_upstream_that_does_not_answer_in_time_gives_a_timeout_error_and_the_proxy_serves_on(
    upstream_era: Era, client_era: ClientEra
) -> None:
    async with (
        spawn_upstream(upstream_era) as upstream,
        proxy(upstream, "--request-timeout-s", "0.5") as server,
        client(server, client_era) as connected,
    ):
        with anyio.fail_after(CALL_TIMEOUT_S), pytest.raises(MCPError) as caught:
            await connected.call_tool("slow", {"seconds": 30})
        assert caught.value.error.code == -32001
        assert "did not answer within 0.5 s" in caught.value.error.message
        assert await call(connected, "echo", {"message": "still here"}) == "still here"


@pytest.mark.parametrize(
    ("upstream_era", "client_era"),
    [("2026", "2025"), ("2025", "2025"), ("2024", "2025"), ("2026", "2026")],
    ids=["2026-upstream", "2025-upstream", "2024-upstream", "2026-upstream-passthrough"],
)
async def test_an_upstream_killed_mid_call_fails_the_call_with_a_clear_error_and_the_proxy_stays_up(
    upstream_era: Era, client_era: ClientEra
) -> None:
    async with (
        spawn_upstream(upstream_era) as upstream,
        proxy(upstream) as server,
        client(server, client_era) as connected,
    ):
        assert await call(connected, "echo", {"message": "before"}) == "before"
        failure: list[MCPError] = []
        running = anyio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            running.set()  # the upstream reports progress once the call runs there

        async def slow_call() -> None:
            try:
                await connected.call_tool("slow", {"seconds": 30}, progress_callback=on_progress)
            except MCPError as exc:
                failure.append(exc)

        with anyio.fail_after(CALL_TIMEOUT_S):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(slow_call)
                await running.wait()
                await upstream.kill()
        assert len(failure) == 1
        error = failure[0].error
        assert error.code == CHILD_UNAVAILABLE, error
        assert "upstream" in error.message, error
        # The proxy serves on: the next calls are refused with the reason, at once, until the upstream is back.
        with pytest.raises(MCPError) as next_call:
            await connected.call_tool("echo", {"message": "after"})
        assert next_call.value.error.code == CHILD_UNAVAILABLE
        assert "upstream server '127.0.0.1'" in next_call.value.error.message, next_call.value.error
        async with httpx2.AsyncClient(base_url=server.url, headers=bearer(), timeout=CALL_TIMEOUT_S) as http:
            ready = await http.get("/ready")
            samples = await scrape(http)
        assert ready.status_code == 503, ready.text  # its only upstream is down
        assert ready.json()["upstreams"]["127.0.0.1"].startswith("down: ")
        counted = {
            outcome: value(
                samples, "datapulse_upstream_requests_total", server="127.0.0.1", method="tools/call", outcome=outcome
            )
            for outcome in ("ok", "unavailable", "error")
        }
        assert counted == {"ok": 1.0, "unavailable": 2.0, "error": 0.0}  # "before"; the killed call and the next
        passthrough = "datapulse_upstream_passthrough_requests_total"
        passed = value(samples, passthrough, server="127.0.0.1", method="tools/call")
        assert passed == (3.0 if (upstream_era, client_era) == ("2026", "2026") else 0.0)


async def test_a_proxy_whose_upstream_cannot_be_reached_exits_1_naming_the_reason() -> None:
    finished = await run_collecting(
        [str(REPO_ROOT / ".venv" / "bin" / "datapulse"), "proxy", "--port", "0", "http://127.0.0.1:9/mcp"],
        timeout_s=60,
        env={"DATAPULSE_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
    )
    assert finished.returncode == 1, finished
    assert "the upstream server does not work" in finished.stderr
    assert "cannot reach 'http://127.0.0.1:9/mcp'" in finished.stderr


@pytest.mark.parametrize(
    ("upstream_era", "pinned", "says"),
    [
        ("2025", "modern", "does not speak 2026-07-28"),
        ("2026", "streamable-http", "handshake failed"),
        ("2025", "sse", "cannot reach"),
    ],
)
async def test_a_proxy_pinned_to_an_era_its_upstream_does_not_speak_exits_1(
    upstream_era: Era, pinned: str, says: str
) -> None:
    async with spawn_upstream(upstream_era) as upstream:
        finished = await run_collecting(
            [
                sys.executable,
                "-m",
                "datapulse",
                "proxy",
                "--port",
                "0",
                "--upstream-transport",
                pinned,
                upstream.mcp_url,
            ],
            timeout_s=60,
            env={"DATAPULSE_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
        )
    assert finished.returncode == 1, finished
    assert says in finished.stderr, finished.stderr


async def test_the_callers_trace_continues_to_the_upstream_as_a_traceparent_header() -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    with anyio.fail_after(90):
        result = await anyio.run_process(
            [sys.executable, "-m", "tests.support.gateway_trace_probe", f"00-{trace_id}-{parent_id}-01"],
            cwd=REPO_ROOT,
            check=False,
            stderr=subprocess.STDOUT,
        )
    output = result.stdout.decode()
    assert result.returncode == 0, output[-4000:]
    (line,) = [json.loads(text) for text in output.splitlines() if text.startswith("{")]
    version, upstream_trace_id, upstream_parent_id, _ = line["upstream_traceparent"].split("-")
    assert (version, upstream_trace_id) == ("00", trace_id)
    assert upstream_parent_id != parent_id  # a span of the proxy's own sits in between


async def test_a_sampling_request_of_the_upstream_fails_clearly_for_a_2026_client_which_has_no_back_channel() -> None:
    async def sampling(_context: object, params: CreateMessageRequestParams) -> CreateMessageResult:
        raise AssertionError("a 2026-07-28 stateless client is never asked")

    async with (
        spawn_upstream("2025") as upstream,
        proxy(upstream) as server,
        client(server, "2026", sampling_callback=sampling) as connected,
    ):
        with anyio.fail_after(CALL_TIMEOUT_S), pytest.raises(MCPError) as caught:
            await connected.call_tool("sample", {"question": "why"})
    assert "cannot reach this client" in caught.value.error.message
    assert "2025-11-25 session" in caught.value.error.message


@pytest.mark.parametrize("upstream_era", ["2026", "2025"], ids=lambda era: f"{era}-upstream")
async def test_sigterm_lets_a_forwarded_call_finish_then_the_proxy_exits_cleanly(upstream_era: Era) -> None:
    async with spawn_upstream(upstream_era) as upstream, proxy(upstream) as server:
        # A 2026-07-28 client: it holds no session or stream of its own that would need the proxy to close.
        async with client(server, "2026") as connected:
            await connected.list_tools()  # known tools: the client checks the result without asking again
            running = anyio.Event()
            results: list[str] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                running.set()

            async def slow_call() -> None:
                result = await connected.call_tool("slow", {"seconds": 1.0}, progress_callback=on_progress)
                block = result.content[0]
                assert isinstance(block, TextContent)
                results.append(block.text)

            with anyio.fail_after(CALL_TIMEOUT_S):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(slow_call)
                    await running.wait()  # in flight at the upstream
                    server.signal(signal.SIGTERM)
        assert results == ["slept 1"]
        with anyio.fail_after(CALL_TIMEOUT_S):
            assert await server.process.wait() == 0
