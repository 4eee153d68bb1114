"""``datapulse bridge`` as a real process bridging a real stdio MCP server (tests/support/stdio_server.py),
reached with the SDK's Python client over /mcp and /sse: isolation, crash recovery, garbage output, filters."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Literal

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import LoggingMessageNotification, ToolListChangedNotification

from datapulse.bridge.proxy import CHILD_UNAVAILABLE
from tests.support.bridging import CALL_TIMEOUT_S, STDIO_SERVER, Notifications, call, sdk_client
from tests.support.processes import run_collecting
from tests.support.prometheus import scrape, value
from tests.support.servers import REPO_ROOT, TOKEN, ServerProcess, bearer, spawn_datapulse

pytestmark = pytest.mark.anyio

CHILD = STDIO_SERVER


@asynccontextmanager
async def bridge(*options: str, child_args: Sequence[str] = ()) -> AsyncIterator[ServerProcess]:
    """``datapulse bridge --port 0 OPTIONS -- python -m tests.support.stdio_server CHILD_ARGS``."""
    async with spawn_datapulse(
        ["--env-allow", "PATH,HOME,PYTHONPATH", *options, "--", *CHILD, *child_args],
        env={"DATAPULSE_TOKEN": TOKEN, "PYTHONPATH": str(REPO_ROOT)},
        command="bridge",
    ) as server:
        yield server


def client(server: ServerProcess, transport: Literal["mcp", "sse"] = "mcp") -> AbstractAsyncContextManager[Client]:
    """An SDK client on ``/mcp`` (2025-11-25 session) or ``/sse`` (2024-11-05)."""
    return sdk_client(server.url, transport)


@pytest.mark.parametrize("transport", ["mcp", "sse"])
async def test_the_bridged_servers_tools_resources_and_prompts_are_served(transport: Literal["mcp", "sse"]) -> None:
    async with bridge() as server, client(server, transport) as connected:
        names = {tool.name for tool in (await connected.list_tools()).tools}
        assert {"increment", "echo", "crash", "slow"} <= names
        assert await call(connected, "echo", {"message": "through the bridge"}) == "through the bridge"
        resources = await connected.list_resources()
        assert [str(resource.uri) for resource in resources.resources] == ["stdio://info"]
        prompt = await connected.get_prompt("greet", {"name": "Ada"})
        assert "Ada" in str(prompt.messages[0].content)


async def test_per_session_isolation_gives_each_client_session_its_own_child() -> None:
    async with bridge() as server, client(server) as first, client(server, "sse") as second:
        assert [await call(first, "increment") for _ in range(3)] == ["1", "2", "3"]
        assert await call(second, "increment") == "1"  # another session: another process, its own counter
        assert await call(first, "pid") != await call(second, "pid")


async def test_shared_isolation_answers_concurrent_calls_of_two_clients_each_with_its_own_result() -> None:
    async with bridge("--isolation", "shared") as server, client(server) as first, client(server, "sse") as second:
        answers: dict[str, list[str]] = {"first": [], "second": []}

        async def calls(who: str, connected: Client) -> None:
            for index in range(10):
                answers[who].append(await call(connected, "echo", {"message": f"{who} {index}"}))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(calls, "first", first)
            tasks.start_soon(calls, "second", second)
        assert answers == {who: [f"{who} {index}" for index in range(10)] for who in answers}
        assert await call(first, "pid") == await call(second, "pid")  # one child for all


async def test_a_child_that_crashes_mid_call_gives_an_error_at_once_and_the_next_call_works() -> None:
    async with bridge() as server, client(server) as connected:
        assert await call(connected, "increment") == "1"
        with anyio.fail_after(CALL_TIMEOUT_S), pytest.raises(MCPError) as raised:
            await connected.call_tool("crash", {})
        assert raised.value.error.code == CHILD_UNAVAILABLE
        assert "exited during the request" in raised.value.error.message
        assert await call(connected, "increment") == "1"  # a fresh child after the restart
        assert any("the child's output ended" in line for line in server.stderr_lines)
        async with httpx2.AsyncClient(base_url=server.url, headers=bearer(TOKEN), timeout=10) as http:
            samples = await scrape(http)
        name = Path(sys.executable).name
        assert value(samples, "datapulse_bridge_child_starts_total", server=name, outcome="started") == 2
        assert value(samples, "datapulse_bridge_child_exits_total", server=name) == 1
        assert value(samples, "datapulse_bridge_children", server=name) == 1


async def test_garbage_on_the_childs_stdout_is_logged_and_skipped() -> None:
    async with bridge(child_args=["--garbage"]) as server, client(server) as connected:
        assert await call(connected, "echo", {"message": "still fine"}) == "still fine"
        assert await call(connected, "increment") == "1"
    assert any("not JSON-RPC" in line for line in server.stderr_lines)


async def test_the_childs_stderr_goes_to_the_logs() -> None:
    async with bridge(child_args=["--stderr-chatter"]) as server, client(server) as connected:
        await call(connected, "echo", {"message": "x"})
        await server.stderr_lines.wait_for(lambda line: "stderr:" in line)


async def test_a_command_that_exits_at_start_is_refused_when_the_bridge_starts() -> None:
    datapulse = str(Path(sys.executable).parent / "datapulse")
    argv = [datapulse, "bridge", "--port", "0", "--token", TOKEN, "--", *CHILD, "--exit-at-start"]
    result = await run_collecting(argv, cwd=REPO_ROOT, timeout_s=60)
    assert result.returncode == 1, result
    assert "the bridged command does not work" in result.stderr
    assert "exited before answering initialize" in result.stderr


async def test_filtered_tools_are_invisible_in_lists_and_refused_on_call() -> None:
    options = ("--deny-tools", "admin_*,delete_*", "--deny-prompts", "greet")
    async with bridge(*options) as server, client(server) as connected:
        names = {tool.name for tool in (await connected.list_tools()).tools}
        assert "echo" in names
        assert not {"admin_reset", "delete_everything"} & names
        for hidden in ("admin_reset", "delete_everything"):
            with anyio.fail_after(CALL_TIMEOUT_S), pytest.raises(MCPError) as raised:
                await connected.call_tool(hidden, {})
            assert raised.value.error.code == -32602
            assert f"Unknown tool: {hidden}" in raised.value.error.message
        assert (await connected.list_prompts()).prompts == []
        with pytest.raises(MCPError):
            await connected.get_prompt("greet", {"name": "x"})


async def test_an_allow_list_exposes_only_the_named_tools() -> None:
    async with bridge("--allow-tools", "echo,incr*") as server, client(server) as connected:
        assert {tool.name for tool in (await connected.list_tools()).tools} == {"echo", "increment"}
        with pytest.raises(MCPError):
            await connected.call_tool("pid", {})


async def test_a_restart_that_fails_gives_an_error_at_once_and_the_call_after_the_fix_works(tmp_path: Path) -> None:
    broken = tmp_path / "broken"  # while this file exists, the child exits at start
    options = ["--isolation", "shared", "--restart-backoff-s", "0.05", "--max-restart-backoff-s", "0.05"]
    async with (
        bridge(*options, child_args=["--exit-at-start-if-exists", str(broken)]) as server,
        client(server) as connected,
    ):
        assert await call(connected, "echo", {"message": "before"}) == "before"
        broken.touch()
        with anyio.fail_after(CALL_TIMEOUT_S), pytest.raises(MCPError) as crashed:
            await connected.call_tool("crash", {})
        assert crashed.value.error.data == {"reason": "exited"}
        with anyio.fail_after(CALL_TIMEOUT_S), pytest.raises(MCPError) as refused:
            await connected.call_tool("echo", {"message": "while broken"})
        assert (refused.value.error.code, refused.value.error.data) == (CHILD_UNAVAILABLE, {"reason": "start_failed"})
        assert "could not start; retry shortly" in refused.value.error.message
        broken.unlink()
        assert await call(connected, "echo", {"message": "after"}) == "after"
    assert any("refusing to start" in line for line in server.stderr_lines)  # the child's own words, in our logs


async def test_a_server_that_keeps_failing_is_refused_at_once_while_its_restart_backoff_runs(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    options = ["--isolation", "shared", "--restart-backoff-s", "1", "--max-restart-backoff-s", "60"]
    async with (
        bridge(*options, child_args=["--exit-at-start-if-exists", str(broken)]) as server,
        client(server) as connected,
    ):
        assert await call(connected, "echo", {"message": "started"}) == "started"  # children start on first use
        broken.touch()
        for expected in ("exited", "start_failed"):  # the crash, then a restart that waited 1 s and failed
            with anyio.fail_after(CALL_TIMEOUT_S), pytest.raises(MCPError) as failed:
                await connected.call_tool("crash" if expected == "exited" else "echo", {"message": "x"})
            assert failed.value.error.data == {"reason": expected}
        with anyio.fail_after(CALL_TIMEOUT_S), pytest.raises(MCPError) as refused:
            await connected.call_tool("echo", {"message": "x"})  # the next start is 2 s away: no waiting for it
        data = refused.value.error.data
        assert refused.value.error.code == CHILD_UNAVAILABLE
        assert data["reason"] == "restarting"
        assert 1 < data["retry_after_s"] <= 2


@pytest.mark.parametrize("transport", ["mcp", "sse"])
async def test_a_childs_log_message_reaches_the_client_whose_call_it_belongs_to(
    transport: Literal["mcp", "sse"],
) -> None:
    heard = Notifications()
    async with bridge() as server, sdk_client(server.url, transport, message_handler=heard) as connected:
        assert await call(connected, "log", {"message": "halfway there"}) == "logged"
        (message,) = await heard.wait_for(LoggingMessageNotification)
        assert (message.params.level, message.params.data) == ("info", "halfway there")


async def test_a_per_session_childs_list_change_reaches_its_own_session_only() -> None:
    first_heard, second_heard = Notifications(), Notifications()
    async with (
        bridge() as server,
        sdk_client(server.url, "sse", message_handler=first_heard) as first,
        sdk_client(server.url, "sse", message_handler=second_heard) as second,
    ):
        assert await call(first, "change_tools") == "changed"
        await first_heard.wait_for(ToolListChangedNotification)
        assert await call(second, "change_tools") == "changed"
        await second_heard.wait_for(ToolListChangedNotification)
        await call(first, "echo", {"message": "x"})  # on /sse, what was queued for the first session comes before
        assert len(first_heard.of(ToolListChangedNotification)) == 1


async def test_a_shared_childs_list_change_reaches_every_session() -> None:
    first_heard, second_heard = Notifications(), Notifications()
    async with (
        bridge("--isolation", "shared") as server,
        sdk_client(server.url, "mcp", message_handler=first_heard) as first,
        sdk_client(server.url, "sse", message_handler=second_heard) as second,
    ):
        await call(second, "echo", {"message": "the second session is open"})
        assert await call(first, "change_tools") == "changed"
        await first_heard.wait_for(ToolListChangedNotification)
        await second_heard.wait_for(ToolListChangedNotification)
