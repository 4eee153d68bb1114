"""The stdio test server (``tests/support/stdio_server.py``) driven by the SDK's own stdio client.

Each test spawns ``python -m tests.support.stdio_server`` with ``mcp.client.stdio`` (through ``mcp.Client`` with
``StdioServerParameters``) and the 2025-11-25 ``initialize`` handshake; every wait is bounded.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, TextIO

import anyio
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, CreateMessageRequestParams, CreateMessageResult, TextContent, TextResourceContents

from tests.support.stdio_server import INFO_TEXT

pytestmark = pytest.mark.anyio

REPO: Final = Path(__file__).resolve().parents[2]
TIMEOUT_S: Final = 20.0
"""Bound for a whole session: process start (imports), handshake, calls and shutdown."""
QUICK_S: Final = 10.0
"""Bound for what must fail fast: a crash mid-call, a server that exits at start (includes interpreter start)."""


def params(*options: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "tests.support.stdio_server", *options], cwd=REPO)


@asynccontextmanager
async def connect(*options: str, errlog: TextIO | None = None, **client_args: Any) -> AsyncIterator[Client]:
    """A connected client; the server's stderr goes to ``errlog`` (default: this process's stderr *now*, which under
    pytest's capture is not the object that was ``sys.stderr`` at import)."""
    transport = stdio_client(params(*options), errlog=errlog if errlog is not None else sys.stderr)
    async with Client(transport, mode="legacy", **client_args) as client:
        yield client


def text_of(result: CallToolResult) -> str:
    assert not result.is_error, result
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


async def test_increment_counts_per_process_and_echo_answers() -> None:
    with anyio.fail_after(TIMEOUT_S):
        async with connect() as client:
            assert client.session.protocol_version == "2025-11-25"
            tools = {tool.name for tool in (await client.list_tools()).tools}
            assert tools == {
                "increment",
                "echo",
                "pid",
                "crash",
                "slow",
                "admin_reset",
                "delete_everything",
                "sample",
                "log",
                "change_tools",
                "touch",
            }
            assert text_of(await client.call_tool("increment")) == "1"
            assert text_of(await client.call_tool("increment")) == "2"
            assert text_of(await client.call_tool("echo", {"message": "héllo ✓"})) == "héllo ✓"
            assert text_of(await client.call_tool("pid")).isdigit()
            assert text_of(await client.call_tool("admin_reset")) == "reset"
            assert text_of(await client.call_tool("delete_everything")) == "deleted nothing"


async def test_a_new_process_starts_its_counter_again() -> None:
    with anyio.fail_after(TIMEOUT_S):
        async with connect() as first:
            assert text_of(await first.call_tool("increment")) == "1"
            first_pid = text_of(await first.call_tool("pid"))
        async with connect() as second:
            assert text_of(await second.call_tool("increment")) == "1"
            assert text_of(await second.call_tool("pid")) != first_pid


async def test_resource_template_and_prompt() -> None:
    with anyio.fail_after(TIMEOUT_S):
        async with connect() as client:
            info = (await client.read_resource("stdio://info")).contents[0]
            assert isinstance(info, TextResourceContents)
            assert info.text == INFO_TEXT
            templates = (await client.list_resource_templates()).resource_templates
            assert [t.uri_template for t in templates] == ["stdio://items/{item}"]
            item = (await client.read_resource("stdio://items/42")).contents[0]
            assert isinstance(item, TextResourceContents)
            assert item.text == "item 42"
            prompt = await client.get_prompt("greet", {"name": "Ada"})
            content = prompt.messages[0].content
            assert isinstance(content, TextContent)
            assert content.text == "Hello, Ada!"


async def test_slow_reports_progress_before_its_result() -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    with anyio.fail_after(TIMEOUT_S):
        async with connect() as client:
            result = await client.call_tool("slow", {"seconds": 0.05}, progress_callback=on_progress)
            assert text_of(result) == "slept 0.05"
    assert seen == [0]


async def _answer(context: ClientRequestContext, params: CreateMessageRequestParams) -> CreateMessageResult:
    question = params.messages[0].content
    text = question.text if isinstance(question, TextContent) else "?"
    return CreateMessageResult(role="assistant", content=TextContent(type="text", text=f"answer to {text}"), model="t")


async def test_sample_asks_the_client_and_returns_its_answer() -> None:
    with anyio.fail_after(TIMEOUT_S):
        async with connect(sampling_callback=_answer) as client:
            assert text_of(await client.call_tool("sample", {"question": "life"})) == "answer to life"


async def test_crash_mid_call_fails_the_call_quickly() -> None:
    with anyio.fail_after(TIMEOUT_S):
        async with connect() as client:
            assert text_of(await client.call_tool("increment")) == "1"
            with anyio.fail_after(QUICK_S), pytest.raises(MCPError, match=r"^Connection closed$"):
                await client.call_tool("crash")


async def test_garbage_lines_on_stdout_do_not_break_the_session() -> None:
    with anyio.fail_after(TIMEOUT_S):
        async with connect("--garbage") as client:
            for message in ("one", "two", "three"):
                assert text_of(await client.call_tool("echo", {"message": message})) == message
            assert text_of(await client.call_tool("increment")) == "1"


async def test_stderr_chatter_goes_to_stderr_only(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    with log.open("w") as errlog, anyio.fail_after(TIMEOUT_S):
        async with connect("--stderr-chatter", errlog=errlog) as client:
            assert text_of(await client.call_tool("echo", {"message": "quiet"})) == "quiet"
    text = log.read_text()
    assert "starting" in text
    assert "call echo" in text


async def test_slow_start_still_initializes() -> None:
    with anyio.fail_after(TIMEOUT_S):
        async with connect("--slow-start", "0.3") as client:
            assert text_of(await client.call_tool("echo", {"message": "late"})) == "late"


async def test_exit_at_start_fails_initialize_quickly(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    # Initialize fails with MCPError "Connection closed", wrapped in the Client's and the transport's task groups.
    closed = pytest.RaisesExc(MCPError, match=r"^Connection closed$")
    with (
        log.open("w") as errlog,
        anyio.fail_after(QUICK_S),
        pytest.RaisesGroup(closed, flatten_subgroups=True, allow_unwrapped=True),
    ):
        async with connect("--exit-at-start", errlog=errlog):
            pass
    assert "refusing to start" in log.read_text()
