"""``datapulse proxy`` in front of the reference server ``@modelcontextprotocol/server-everything`` (pinned in
tests/interop/js/package.json) served over HTTP in its own Streamable HTTP mode (``dist/index.js streamableHttp``:
Express and the TypeScript SDK's ``StreamableHTTPServerTransport``, 2025 sessions only, on ``PORT``), run with Node 22.

The proxy finds the upstream's era at start (auto: a ``server/discover`` probe, refused, then ``initialize``), and
the SDK's Python client reaches it as a 2025-11-25 session and with 2026-07-28 stateless requests: tools, a
resource and prompts of a real third-party upstream, translated to both client eras.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, Literal

import anyio
import httpx2
import pytest
from mcp.types import TextContent, TextResourceContents

from tests.gateway.test_proxy import client
from tests.interop.node import EVERYTHING, NODE_BIN, everything_unavailable_reason
from tests.support.bridging import call
from tests.support.servers import TOKEN, ServerProcess, spawn_datapulse

_NODE_MISSING: Final = everything_unavailable_reason()

pytestmark = [
    pytest.mark.interop,
    pytest.mark.anyio,
    pytest.mark.skipif(_NODE_MISSING is not None, reason=_NODE_MISSING or ""),
]

ClientEra = Literal["2025", "2026"]
CLIENT_ERAS: Final[tuple[ClientEra, ...]] = ("2025", "2026")
NEGOTIATED: Final[dict[ClientEra, str]] = {"2025": "2025-11-25", "2026": "2026-07-28"}

STARTUP_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 10.0
TEST_TIMEOUT_S: Final = 60.0
START_ATTEMPTS: Final = 3
"""server-everything cannot listen on port 0 and name the port it got, so a free port is picked here first; if
another process takes it in between, it exits (EADDRINUSE) and a start is tried again on another."""
LISTENING: Final = b"MCP Streamable HTTP Server listening on port "
PORT_IN_USE: Final = b"is already in use"
NO_SESSION: Final = "No valid session ID provided"
PROBE_TIMEOUT_S: Final = 5.0

NON_ASCII: Final = "héllo wörld ✓ — 日本語 🚀"
SOME_TOOLS: Final = {"echo", "get-sum", "get-env", "get-tiny-image", "get-structured-content"}
STATIC_DOCUMENT: Final = "demo://resource/static/document/features.md"
SERVER_NAME: Final = "mcp-servers/everything"


@dataclass
class Everything:
    """A running server-everything in Streamable HTTP mode: its MCP endpoint and what it printed."""

    url: str
    output: bytearray


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _answers(url: str) -> bool:
    """Whether server-everything answers at ``url``: a GET without a session gets its own 400."""
    try:
        async with httpx2.AsyncClient(timeout=PROBE_TIMEOUT_S) as http:
            response = await http.get(url)
    except httpx2.HTTPError:
        return False
    return response.status_code == 400 and NO_SESSION in response.text


@asynccontextmanager
async def _everything_once(port: int) -> AsyncIterator[Everything | None]:
    """``PORT=port node dist/index.js streamableHttp`` until it says it listens and answers there (yields it), or
    None when the port was taken; stopped on exit (SIGTERM, then SIGKILL after `STOP_TIMEOUT_S`)."""
    output = bytearray()
    process = await anyio.open_process(
        [str(NODE_BIN), str(EVERYTHING), "streamableHttp"],
        env={"PATH": str(NODE_BIN.parent), "PORT": str(port)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    settled = anyio.Event()

    async def read() -> None:
        """Collect its output; `settled` once it listens, cannot, or its output ends."""
        assert process.stdout is not None
        async for chunk in process.stdout:
            output.extend(chunk)
            if LISTENING in output or PORT_IN_USE in output:
                settled.set()
        settled.set()

    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read)
            with anyio.fail_after(STARTUP_TIMEOUT_S):
                await settled.wait()
            url = f"http://127.0.0.1:{port}/mcp"
            # Express calls its listen callback (the ready line) on a failed listen too: only an answer that can
            # only come from server-everything says it is the one listening.
            if LISTENING in output and await _answers(url):
                yield Everything(url, output)
            elif PORT_IN_USE in output:
                yield None
            else:
                said = output.decode(errors="replace")
                raise RuntimeError(f"server-everything stopped before it listened:\n{said}")
            tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with anyio.move_on_after(STOP_TIMEOUT_S):
                    await process.wait()
            if process.returncode is None:
                process.kill()
            with anyio.move_on_after(STOP_TIMEOUT_S):
                await process.aclose()


@asynccontextmanager
async def serve_everything() -> AsyncIterator[Everything]:
    """server-everything in Streamable HTTP mode on a free loopback port (`START_ATTEMPTS` tries)."""
    for _ in range(START_ATTEMPTS):
        async with _everything_once(_free_port()) as everything:
            if everything is not None:
                yield everything
                return
    raise RuntimeError(f"server-everything found no free port in {START_ATTEMPTS} attempts")


@dataclass(frozen=True)
class Proxied:
    everything: Everything
    proxy: ServerProcess


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope, so the module-scoped upstream and proxy below live on one event loop for every test."""
    return "asyncio"


@pytest.fixture(scope="module")
async def proxied() -> AsyncIterator[Proxied]:
    """server-everything over HTTP, and ``datapulse proxy URL`` (auto era detection, bearer auth) in front."""
    async with (
        serve_everything() as everything,
        spawn_datapulse([everything.url], env={"DATAPULSE_TOKEN": TOKEN}, command="proxy") as proxy,
    ):
        yield Proxied(everything, proxy)


async def test_the_proxy_finds_that_server_everything_speaks_2025_streamable_http(proxied: Proxied) -> None:
    started = [line for line in proxied.proxy.stderr_lines if f"started {proxied.everything.url} (" in line]
    assert started, "".join(proxied.proxy.stderr_lines)
    assert all(f"started {proxied.everything.url} (streamable-http)" in line for line in started), started
    assert SERVER_NAME in "".join(proxied.proxy.banner)


@pytest.mark.parametrize("era", CLIENT_ERAS)
async def test_a_client_of_each_era_lists_and_calls_server_everything_tools_through_the_proxy(
    proxied: Proxied, era: ClientEra
) -> None:
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with client(proxied.proxy, era) as connected:
            assert connected.protocol_version == NEGOTIATED[era]
            tools = {tool.name: tool for tool in (await connected.list_tools()).tools}
            assert tools.keys() >= SOME_TOOLS, sorted(tools)
            assert tools["echo"].input_schema["required"] == ["message"]
            assert await call(connected, "echo", {"message": NON_ASCII}) == f"Echo: {NON_ASCII}"
            assert await call(connected, "get-sum", {"a": 19, "b": 23.5}) == "The sum of 19 and 23.5 is 42.5."


@pytest.mark.parametrize("era", CLIENT_ERAS)
async def test_a_client_of_each_era_reads_a_server_everything_resource_and_gets_its_prompts_through_the_proxy(
    proxied: Proxied, era: ClientEra
) -> None:
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with client(proxied.proxy, era) as connected:
            resources = {str(resource.uri) for resource in (await connected.list_resources()).resources}
            assert STATIC_DOCUMENT in resources, sorted(resources)
            contents = (await connected.read_resource(STATIC_DOCUMENT)).contents
            assert isinstance(contents[0], TextResourceContents), contents
            assert str(contents[0].uri) == STATIC_DOCUMENT
            assert contents[0].text.strip(), contents  # the markdown file shipped in the package

            simple = await connected.get_prompt("simple-prompt", {})
            assert simple.messages[0].content == TextContent(
                type="text", text="This is a simple prompt without arguments."
            )
            with_args = await connected.get_prompt("args-prompt", {"city": "Lyon", "state": "Rhône"})
            assert "Lyon" in str(with_args.messages[0].content)
