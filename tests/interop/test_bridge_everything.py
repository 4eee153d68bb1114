"""``datapulse bridge`` as a real process bridging the reference stdio server
``@modelcontextprotocol/server-everything`` (pinned in tests/interop/js/package.json, run with Node 22), reached with
real clients: the SDK's Python client over /mcp and /sse, and the MCP Inspector CLI over Streamable HTTP (a
2025-11-25 session, or 2026-07-28 stateless requests) and HTTP+SSE.

Two bridges serve the whole module, one per isolation mode: ``--isolation shared`` (one server-everything for every
client) and the default ``per-session`` (a server-everything per MCP session, started lazily).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final, Literal

import anyio
import pytest
from mcp import Client
from mcp.types import ResourceUpdatedNotification, TextContent, TextResourceContents

from tests.interop.node import (
    EVERYTHING,
    NODE_BIN,
    InspectorEra,
    InspectorTransport,
    everything_unavailable_reason,
    run_inspector_cli,
)
from tests.support.bridging import Notifications, call
from tests.support.bridging import sdk_client as sdk_client_at
from tests.support.servers import TOKEN, ServerProcess, spawn_datapulse

EVERYTHING_COMMAND: Final = [str(NODE_BIN), str(EVERYTHING), "stdio"]


_NODE_MISSING: Final = everything_unavailable_reason()

pytestmark = [
    pytest.mark.interop,
    pytest.mark.anyio,
    pytest.mark.skipif(_NODE_MISSING is not None, reason=_NODE_MISSING or ""),
]

Isolation = Literal["shared", "per-session"]
SdkTransport = Literal["mcp", "sse"]

TEST_TIMEOUT_S: Final = 60.0
INSPECTOR_TIMEOUT_S: Final = 60.0

CHILD_MARKER: Final = ("DATAPULSE_EVERYTHING_MARKER", "set with --env")
"""A variable given to the child explicitly (``--env NAME=VALUE``); server-everything's get-env tool shows it."""

NON_ASCII: Final = "héllo wörld ✓ — 日本語 🚀"
SOME_TOOLS: Final = {"echo", "get-sum", "get-env", "get-tiny-image", "get-structured-content"}
STATIC_DOCUMENT: Final = "demo://resource/static/document/features.md"
RESOURCE_TEMPLATES: Final = ["demo://resource/dynamic/text/{resourceId}", "demo://resource/dynamic/blob/{resourceId}"]
PROMPTS: Final = ["simple-prompt", "args-prompt", "completable-prompt", "resource-prompt"]
SERVER_NAME: Final = "mcp-servers/everything"


# --- the bridges -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope, so the module-scoped bridges below live on one event loop for every test."""
    return "asyncio"


@asynccontextmanager
async def bridge(isolation: Isolation) -> AsyncIterator[ServerProcess]:
    """``datapulse bridge --port 0 --isolation I --env ... -- node .../server-everything/dist/index.js stdio``, with
    bearer auth (TOKEN) on. ``DATAPULSE_TOKEN`` is in the bridge's environment, not on the child's allow list."""
    options = ["--isolation", isolation, "--env", "=".join(CHILD_MARKER)]
    async with spawn_datapulse(
        [*options, "--", *EVERYTHING_COMMAND], env={"DATAPULSE_TOKEN": TOKEN}, command="bridge"
    ) as server:
        yield server


@pytest.fixture(scope="module")
async def bridges() -> AsyncIterator[dict[Isolation, ServerProcess]]:
    """Both bridges, started concurrently (each runs server-everything once at start-up to check it works)."""
    started: dict[Isolation, ServerProcess] = {}
    ready = anyio.Event()
    done = anyio.Event()

    async def run(isolation: Isolation) -> None:
        async with bridge(isolation) as server:
            started[isolation] = server
            if len(started) == 2:
                ready.set()
            await done.wait()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run, "shared")
        tasks.start_soon(run, "per-session")
        with anyio.fail_after(TEST_TIMEOUT_S):
            await ready.wait()
        yield started
        done.set()


# --- the official Python SDK client ----------------------------------------------------------------------------------


def sdk_client(server: ServerProcess, transport: SdkTransport) -> AbstractAsyncContextManager[Client]:
    """An SDK client on ``/mcp`` (a 2025-11-25 session) or ``/sse`` (2024-11-05)."""
    return sdk_client_at(server.url, transport)


SDK_CONNECTIONS: Final = [
    pytest.param("mcp", "shared", id="mcp-shared"),
    pytest.param("mcp", "per-session", id="mcp-per-session"),
    pytest.param("sse", "shared", id="sse-shared"),
    pytest.param("sse", "per-session", id="sse-per-session"),
]


@pytest.mark.parametrize(("transport", "isolation"), SDK_CONNECTIONS)
async def test_the_sdk_client_lists_and_calls_server_everything_tools_through_the_bridge(
    bridges: dict[Isolation, ServerProcess], transport: SdkTransport, isolation: Isolation
) -> None:
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with sdk_client(bridges[isolation], transport) as connected:
            tools = {tool.name: tool for tool in (await connected.list_tools()).tools}
            assert tools.keys() >= SOME_TOOLS, sorted(tools)
            assert tools["get-sum"].input_schema["required"] == ["a", "b"]
            assert await call(connected, "echo", {"message": NON_ASCII}) == f"Echo: {NON_ASCII}"
            assert await call(connected, "get-sum", {"a": 19, "b": 23.5}) == "The sum of 19 and 23.5 is 42.5."


@pytest.mark.parametrize(("transport", "isolation"), SDK_CONNECTIONS)
async def test_the_sdk_client_lists_and_reads_server_everything_resources_and_prompts_through_the_bridge(
    bridges: dict[Isolation, ServerProcess], transport: SdkTransport, isolation: Isolation
) -> None:
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with sdk_client(bridges[isolation], transport) as connected:
            resources = {str(resource.uri): resource for resource in (await connected.list_resources()).resources}
            assert STATIC_DOCUMENT in resources, sorted(resources)
            assert resources[STATIC_DOCUMENT].name == "features.md"
            templates = (await connected.list_resource_templates()).resource_templates
            assert [template.uri_template for template in templates] == RESOURCE_TEMPLATES
            contents = (await connected.read_resource(STATIC_DOCUMENT)).contents
            assert isinstance(contents[0], TextResourceContents), contents
            assert contents[0].text.strip(), contents  # the markdown file shipped in the package

            prompts = (await connected.list_prompts()).prompts
            assert [prompt.name for prompt in prompts] == PROMPTS
            simple = await connected.get_prompt("simple-prompt", {})
            assert simple.messages[0].content == TextContent(
                type="text", text="This is a simple prompt without arguments."
            )
            with_args = await connected.get_prompt("args-prompt", {"city": "Lyon", "state": "Rhône"})
            assert "Lyon" in str(with_args.messages[0].content)


async def test_the_child_sees_its_explicit_variables_but_not_the_bridges_token(
    bridges: dict[Isolation, ServerProcess],
) -> None:
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with sdk_client(bridges["per-session"], "mcp") as connected:
            environment = json.loads(await call(connected, "get-env"))
    name, value = CHILD_MARKER
    assert environment[name] == value
    assert "PATH" in environment  # on the default allow list
    assert "DATAPULSE_TOKEN" not in environment


async def toggle(connected: Client) -> str:
    """Toggle server-everything's per-process simulated resource updates (none are sent: nothing is subscribed)."""
    answer = await call(connected, "toggle-subscriber-updates")
    assert answer.startswith(("Started simulated resource updated", "Stopped simulated resource updates")), answer
    return answer.split()[0]


async def test_per_session_isolation_gives_each_session_its_own_server_everything(
    bridges: dict[Isolation, ServerProcess],
) -> None:
    server = bridges["per-session"]
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with sdk_client(server, "mcp") as first, sdk_client(server, "sse") as second:
            assert await toggle(first) == "Started"
            assert await toggle(second) == "Started"  # another session: another process, its own state
            assert await toggle(first) == "Stopped"


async def test_shared_isolation_serves_every_session_from_the_one_server_everything(
    bridges: dict[Isolation, ServerProcess],
) -> None:
    server = bridges["shared"]
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with sdk_client(server, "mcp") as first, sdk_client(server, "sse") as second:
            before = await toggle(first)
            after = await toggle(second)  # the state the first session's call left behind
            assert {before, after} == {"Started", "Stopped"}


# --- the MCP Inspector CLI -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["mcp", "sse"])
async def test_a_resource_subscription_is_forwarded_and_its_updates_reach_the_subscriber(
    bridges: dict[Isolation, ServerProcess], transport: SdkTransport
) -> None:
    heard = Notifications()
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with sdk_client_at(bridges["per-session"].url, transport, message_handler=heard) as connected:
            capabilities = connected.server_capabilities  # the child's, as the bridge announces them
            assert capabilities.resources is not None
            assert capabilities.resources.subscribe is True
            assert capabilities.tools is not None
            assert capabilities.tools.list_changed is True
            await connected.subscribe_resource(STATIC_DOCUMENT)
            await toggle(connected)  # server-everything sends an update for every subscribed URI at once
            (update, *_) = await heard.wait_for(ResourceUpdatedNotification)
            assert str(update.params.uri) == STATIC_DOCUMENT


def inspector_url(server: ServerProcess, transport: InspectorTransport) -> str:
    return server.url + ("/sse" if transport == "sse" else "/mcp")


INSPECTOR_CONNECTIONS: Final = [
    pytest.param("http", None, "per-session", id="http-per-session"),
    pytest.param("http", "modern", "shared", id="http-2026-07-28-shared"),
    pytest.param("sse", None, "shared", id="sse-shared"),
]


@pytest.mark.parametrize(("transport", "era", "isolation"), INSPECTOR_CONNECTIONS)
async def test_the_inspector_cli_lists_server_everything_tools_through_the_bridge(
    bridges: dict[Isolation, ServerProcess],
    transport: InspectorTransport,
    era: InspectorEra | None,
    isolation: Isolation,
) -> None:
    output = await run_inspector_cli(
        inspector_url(bridges[isolation], transport),
        transport=transport,
        token=TOKEN,
        method="tools/list",
        protocol_era=era,
        timeout_s=INSPECTOR_TIMEOUT_S,
    )
    tools = {tool["name"]: tool for tool in output["result"]["tools"]}
    assert tools.keys() >= SOME_TOOLS, sorted(tools)
    assert tools["echo"]["inputSchema"]["required"] == ["message"]


@pytest.mark.parametrize(("transport", "era", "isolation"), INSPECTOR_CONNECTIONS)
async def test_the_inspector_cli_calls_server_everything_echo_through_the_bridge(
    bridges: dict[Isolation, ServerProcess],
    transport: InspectorTransport,
    era: InspectorEra | None,
    isolation: Isolation,
) -> None:
    output = await run_inspector_cli(
        inspector_url(bridges[isolation], transport),
        transport=transport,
        token=TOKEN,
        method="tools/call",
        tool_name="echo",
        tool_args={"message": NON_ASCII},
        protocol_era=era,
        timeout_s=INSPECTOR_TIMEOUT_S,
    )
    result = output["result"]
    assert result.get("isError") in (None, False), result
    assert result["content"] == [{"type": "text", "text": f"Echo: {NON_ASCII}"}]
    # 2026-07-28 results carry the server's identity in _meta (there is no initialize result): the bridged server's.
    server_info = result.get("_meta", {}).get("io.modelcontextprotocol/serverInfo")
    assert (server_info is not None) == (era == "modern"), result
    if server_info is not None:
        assert server_info["name"] == SERVER_NAME
