"""deploy/nginx: Debian's real nginx, configured from the recipe, in front of two real DataPulse instances in cluster
mode sharing a real Redis. Every request below goes through nginx only.

The instances run as the recipe's README says DataPulse should behind nginx: ``DATAPULSE_TRUSTED_PROXIES`` names
nginx's address, ``DATAPULSE_ALLOWED_HOSTS`` the host:port clients use (nginx's plain and TLS listeners), no
``DATAPULSE_PUBLIC_URL``, so the URLs DataPulse hands out are derived from nginx's X-Forwarded-* headers end to end.

nginx's 60 s default read timeout is not tested by waiting 60 s: the rendered configuration is checked against
DataPulse's keepalive interval instead, and that SSE is not buffered is checked for real (the first small event
of a stream arrives promptly; a buffering proxy would hold it until its buffer fills).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from datapulse.config import Settings
from datapulse.server import uvicorn_config
from tests.cluster.test_failover import api_call, result_of
from tests.interop.node import InspectorTransport, JsClient, JsProtocol, JsTransport, run_inspector_cli, run_js_client
from tests.interop.test_real_clients import (
    DEMO_TOOLS,
    NON_ASCII,
    PYTHON_CONNECTIONS,
    SERVER_NAME,
    PythonConnection,
    Wire,
    needs_node,
    only_text,
    python_client,
)
from tests.support.cluster import spawn_cluster
from tests.support.mcp_http import jsonrpc, sse_initialize
from tests.support.nginx import (
    NGINX_MISSING,
    RECIPE,
    Nginx,
    check_config,
    directive_values,
    make_tls_files,
    nginx_bytes,
    nginx_seconds,
    read_recipe,
    run_nginx,
)
from tests.support.polling import eventually
from tests.support.redis_server import free_port, run_redis
from tests.support.servers import TOKEN, RunningServer, ServerProcess, bearer
from tests.support.sse import open_sse

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(NGINX_MISSING is not None, reason=NGINX_MISSING or ""),
]

KEEPALIVE_INTERVAL_S: Final = float(Settings.model_fields["keepalive_interval_s"].default)
MAX_BODY_BYTES: Final = int(Settings.model_fields["max_body_bytes"].default)
NGINX_DEFAULT_READ_TIMEOUT_S: Final = 60.0
FIRST_EVENT_TIMEOUT_S: Final = 5.0
"""How long any one event of a stream may take through nginx. An unbuffered proxy passes it at once; a buffering one
holds it until a buffer fills, which ": ping" comments of a few bytes every 15 s take many minutes to do. (nginx 1.22
with buffering forced on, X-Accel-Buffering ignored, still passed small events on its plain listener and held them
on its TLS one: every stream check runs on both.)"""
CLIENT_TIMEOUT_S: Final = 30.0
NODE_TIMEOUT_S: Final = 90.0
LOG_TIMEOUT_S: Final = 10.0
TLS_OR_NOT: Final = [pytest.param(False, id="http"), pytest.param(True, id="https")]


@dataclass(frozen=True)
class Stack:
    """nginx in front of the DataPulse instances."""

    nginx: Nginx
    instances: list[ServerProcess]

    @property
    def upstreams(self) -> set[str]:
        return {urlsplit(instance.url).netloc for instance in self.instances}

    def client(self, *, tls: bool = False, token: str | None = TOKEN, **kwargs: Any) -> httpx2.AsyncClient:
        """An httpx2 client whose base URL is nginx's (plain or TLS listener)."""
        headers = bearer(token) if token is not None else {}
        if not tls:
            return httpx2.AsyncClient(base_url=self.nginx.url, headers=headers, timeout=10.0, **kwargs)
        assert self.nginx.tls is not None
        return httpx2.AsyncClient(
            base_url=self.nginx.tls_url,
            headers=headers,
            timeout=10.0,
            verify=self.nginx.tls.client_context(),
            **kwargs,
        )

    def base_url(self, tls: bool) -> str:
        return self.nginx.tls_url if tls else self.nginx.url

    async def upstreams_serving(self, since: int, method: str, path: str, count: int) -> set[str]:
        """The instances nginx sent ``method path...`` requests to after access-log line ``since``, once it
        has logged ``count`` of them (nginx writes a line when a request ends, possibly after the client has
        its response: polled, bounded)."""
        found: list[str] = []

        async def logged() -> bool:
            found[:] = [
                fields[3]
                for fields in (line.split() for line in self.nginx.access_log()[since:])
                if len(fields) == 4 and fields[0] == method and fields[1].startswith(path)
            ]
            return len(found) >= count

        await eventually(logged, timeout_s=LOG_TIMEOUT_S)
        return set(found)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope, so the module-scoped stack below lives on one event loop for every test."""
    return "asyncio"


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """Redis, two DataPulse instances in cluster mode, and nginx (plain and TLS) in front of them."""
    port, tls_port = free_port(), free_port()
    behind_nginx = {
        "DATAPULSE_TRUSTED_PROXIES": "127.0.0.1",
        "DATAPULSE_ALLOWED_HOSTS": f"127.0.0.1:{port},127.0.0.1:{tls_port}",
    }
    workdir = tmp_path_factory.mktemp("nginx")
    async with (
        run_redis(tmp_path_factory.mktemp("redis")) as redis,
        spawn_cluster(redis.url, n=2, env=behind_nginx) as instances,
        run_nginx(
            [urlsplit(instance.url).netloc for instance in instances],
            workdir,
            port=port,
            tls=make_tls_files(workdir),
            tls_port=tls_port,
        ) as nginx,
    ):
        yield Stack(nginx, instances)


# --- the recipe as a configuration ------------------------------------------------------------------------------------


async def test_the_recipe_as_shipped_is_valid_nginx_configuration_for_conf_d(tmp_path: Path) -> None:
    checked = await check_config(tmp_path, read_recipe())
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr


async def test_rendering_replaces_only_the_tagged_lines_of_the_recipe(stack: Stack) -> None:
    untagged = [line for line in RECIPE.read_text().splitlines() if "# @" not in line or "# @name" in line]
    rendered = stack.nginx.site.splitlines()
    assert [line for line in rendered if line in untagged] == untagged
    assert {value.split()[0] for value in directive_values(stack.nginx.site, "server")} == stack.upstreams
    assert directive_values(stack.nginx.site, "listen") == [
        f"127.0.0.1:{stack.nginx.port}",
        f"127.0.0.1:{stack.nginx.tls_port} ssl",
    ]


def test_nginx_waits_on_a_quiet_stream_many_times_longer_than_datapulse_takes_to_send_a_keepalive() -> None:
    recipe = RECIPE.read_text()
    [read_timeout] = directive_values(recipe, "proxy_read_timeout")
    [send_timeout] = directive_values(recipe, "proxy_send_timeout")
    for timeout in (nginx_seconds(read_timeout), nginx_seconds(send_timeout)):
        assert timeout >= 10 * KEEPALIVE_INTERVAL_S
        assert timeout > NGINX_DEFAULT_READ_TIMEOUT_S
    assert str(int(KEEPALIVE_INTERVAL_S)) + " s" in recipe, "the comment quotes DataPulse's default interval"


def test_the_recipe_turns_off_every_kind_of_response_buffering_and_keeps_upstream_connections_alive() -> None:
    recipe = RECIPE.read_text()
    assert directive_values(recipe, "proxy_buffering") == ["off"]
    assert directive_values(recipe, "proxy_cache") == ["off"]
    assert directive_values(recipe, "gzip") == ["off"]
    assert directive_values(recipe, "proxy_http_version") == ["1.1"]
    assert 'Connection ""' in directive_values(recipe, "proxy_set_header")
    [keepalive_timeout] = directive_values(recipe, "keepalive_timeout")
    uvicorn_idle_s = uvicorn_config(None, Settings()).timeout_keep_alive
    assert nginx_seconds(keepalive_timeout) < uvicorn_idle_s, "nginx closes idle upstream connections first"


def test_the_recipe_never_resends_a_post_that_reached_an_instance_nor_retries_a_503() -> None:
    [cases] = directive_values(RECIPE.read_text(), "proxy_next_upstream")
    assert "non_idempotent" not in cases.split()
    assert not {"http_502", "http_503", "http_504"} & set(cases.split())


# --- bodies and hosts -------------------------------------------------------------------------------------------------


def padded_request(size: int) -> bytes:
    """A JSON-RPC tools/list request of exactly ``size`` bytes (trailing whitespace is valid JSON)."""
    body = jsonrpc("tools/list").encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


async def test_nginx_passes_bodies_as_large_as_datapulse_accepts_and_refuses_larger_ones(stack: Stack) -> None:
    [limit] = directive_values(stack.nginx.site, "client_max_body_size")
    assert nginx_bytes(limit) == MAX_BODY_BYTES
    headers = {"Content-Type": "application/json"}
    async with stack.client() as http:
        largest = await http.post("/message", content=padded_request(MAX_BODY_BYTES), headers=headers)
        too_large = await http.post("/message", content=padded_request(MAX_BODY_BYTES + 1), headers=headers)
    assert largest.status_code == 200, largest.text
    assert [tool["name"] for tool in largest.json()["result"]["tools"]] == DEMO_TOOLS
    assert too_large.status_code == 413


async def test_a_host_datapulse_does_not_serve_is_refused_with_421_through_nginx(stack: Stack) -> None:
    async with stack.client() as http:
        response = await http.get("/health", headers={"Host": "rebinding.example"})
    assert response.status_code == 421
    assert "'rebinding.example' is not served here" in response.json()["error"]["message"]


# --- URLs DataPulse hands out name nginx, as the client reached it ----------------------------------------------------


@pytest.mark.parametrize("tls", TLS_OR_NOT)
async def test_the_protected_resource_metadata_and_the_401_challenge_name_the_url_the_client_used(
    stack: Stack, tls: bool
) -> None:
    base = stack.base_url(tls)
    async with stack.client(tls=tls, token=None) as http:
        metadata = await http.get("/.well-known/oauth-protected-resource/mcp")
        unauthorized = await http.post(
            "/mcp", content=jsonrpc("tools/list"), headers={"Content-Type": "application/json"}
        )
    assert metadata.status_code == 200, metadata.text
    assert metadata.json()["resource"] == f"{base}/mcp"
    assert unauthorized.status_code == 401
    assert (
        f'resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"'
        in (unauthorized.headers["www-authenticate"])
    )


@pytest.mark.parametrize("tls", TLS_OR_NOT)
async def test_the_sse_endpoint_event_resolves_to_the_address_the_client_used_and_works_there(
    stack: Stack, tls: bool
) -> None:
    base = stack.base_url(tls)
    async with stack.client(tls=tls) as http, open_sse(http, "GET", "/sse") as stream:
        assert stream.response.status_code == 200
        endpoint = await stream.next_event(timeout_s=FIRST_EVENT_TIMEOUT_S)
        assert endpoint.event == "endpoint"
        messages_url = urljoin(f"{base}/sse", endpoint.data)
        assert messages_url.startswith(f"{base}/messages?session_id="), endpoint.data
        assert not any(upstream in endpoint.data for upstream in stack.upstreams)
        await sse_initialize(http, messages_url, stream)


# --- streams ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", TLS_OR_NOT)
@pytest.mark.parametrize(
    ("path", "first"),
    [
        pytest.param("/sse", "endpoint", id="sse-endpoint-event"),
        pytest.param("/events?session_id=nginx-first-event", "retry", id="datapulse-api-retry-preamble"),
    ],
)
async def test_the_first_event_of_a_stream_passes_nginx_at_once(stack: Stack, path: str, first: str, tls: bool) -> None:
    async with stack.client(tls=tls) as http, open_sse(http, "GET", path) as stream:
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        event = await stream.next_event(timeout_s=FIRST_EVENT_TIMEOUT_S)
    if first == "endpoint":
        assert event.event == "endpoint", event
    else:
        assert event.retry_ms is not None, event


@pytest.mark.parametrize("tls", TLS_OR_NOT)
async def test_a_datapulse_api_stream_gets_each_result_posted_to_any_instance_at_once_through_nginx(
    stack: Stack, tls: bool
) -> None:
    session = f"nginx-api-{tls}"
    since = len(stack.nginx.access_log())
    async with stack.client(tls=tls) as http, open_sse(http, "GET", f"/events?session_id={session}") as stream:
        assert (await stream.next_event(timeout_s=FIRST_EVENT_TIMEOUT_S)).retry_ms is not None
        results = []
        for n in range(1, 5):  # one at a time: each result must come through on its own, not with the next ones
            posted = await http.post(f"/message?session_id={session}", json=api_call(f"r{n}", f"m{n}"))
            assert posted.status_code == 202, posted.text
            results.append(result_of(await stream.next_event(timeout_s=FIRST_EVENT_TIMEOUT_S)))
    assert results == [(f"r{n}", f"m{n}") for n in range(1, 5)]
    assert await stack.upstreams_serving(since, "POST", "/message", 4) == stack.upstreams


# --- real MCP clients -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("connection", PYTHON_CONNECTIONS)
async def test_python_sdk_client_lists_tools_and_calls_one_through_nginx(
    stack: Stack, connection: PythonConnection
) -> None:
    wire = Wire()
    async with python_client(RunningServer(stack.nginx.url), connection, wire) as client:
        assert client.protocol_version == connection.negotiated
        listed = await client.list_tools()
        echoed = await client.call_tool("echo", {"message": NON_ASCII})
        added = await client.call_tool("add", {"a": 2, "b": 40.5})
    assert [tool.name for tool in listed.tools] == DEMO_TOOLS
    assert only_text(echoed) == NON_ASCII
    assert added.structured_content == {"result": 42.5}
    assert wire.exchanges
    assert all(exchange.status < 400 for exchange in wire.exchanges), wire.exchanges


async def test_nginx_spreads_one_clients_requests_over_both_instances(stack: Stack) -> None:
    since = len(stack.nginx.access_log())
    legacy = PythonConnection("streamable-http", "legacy", "2025-11-25")
    async with python_client(RunningServer(stack.nginx.url), legacy, Wire()) as client:
        for n in range(4):
            assert (await client.call_tool("add", {"a": n, "b": 1})).structured_content == {"result": n + 1}
    assert await stack.upstreams_serving(since, "POST", "/mcp", 6) == stack.upstreams


async def test_python_sdk_client_works_through_nginx_over_tls(stack: Stack) -> None:
    assert stack.nginx.tls is not None
    context = stack.nginx.tls.client_context()
    with anyio.fail_after(CLIENT_TIMEOUT_S):
        async with (
            httpx2.AsyncClient(headers=bearer(), timeout=10.0, verify=context) as http,
            Client(streamable_http_client(f"{stack.nginx.tls_url}/mcp", http_client=http), mode="legacy") as client,
        ):
            result = await client.call_tool("echo", {"message": NON_ASCII})
    assert only_text(result) == NON_ASCII


JS_CONNECTIONS: Final = [
    pytest.param("v2", "streamable", "2025-11-25", id="ts-v2-streamable-2025-11-25"),
    pytest.param("v2", "streamable", "2026-07-28", id="ts-v2-streamable-2026-07-28"),
    pytest.param("v2", "sse", "2025-11-25", id="ts-v2-sse"),
    pytest.param("v1", "streamable", "2025-11-25", id="ts-v1-streamable"),
    pytest.param("v1", "sse", "2025-11-25", id="ts-v1-sse"),
]


@pytest.mark.interop
@needs_node
@pytest.mark.parametrize(("script", "transport", "protocol"), JS_CONNECTIONS)
async def test_typescript_sdk_client_lists_tools_and_calls_one_through_nginx(
    stack: Stack, script: JsClient, transport: JsTransport, protocol: JsProtocol
) -> None:
    report = await run_js_client(
        script,
        url=stack.nginx.url + ("/sse" if transport == "sse" else "/mcp"),
        transport=transport,
        protocol=protocol,
        token=TOKEN,
        call="echo",
        args={"message": NON_ASCII},
        timeout_s=NODE_TIMEOUT_S,
    )
    assert report["protocolVersion"] == protocol
    assert report["serverName"] == SERVER_NAME
    assert report["tools"] == DEMO_TOOLS
    assert report["call"]["structuredContent"] == {"result": NON_ASCII}


@pytest.mark.interop
@needs_node
@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_inspector_cli_calls_a_tool_through_nginx(stack: Stack, transport: InspectorTransport) -> None:
    output = await run_inspector_cli(
        stack.nginx.url + ("/sse" if transport == "sse" else "/mcp"),
        transport=transport,
        token=TOKEN,
        method="tools/call",
        tool_name="echo",
        tool_args={"message": NON_ASCII},
        timeout_s=NODE_TIMEOUT_S,
    )
    assert output["result"]["structuredContent"] == {"result": NON_ASCII}
