"""datapulse.azure (deploy/azure): DataPulse behind Azure Functions, exercised in-process the way the Python worker
runs it: real ``azure.functions.HttpRequest`` objects passed to the user code of the function the ``FunctionApp``
registers, through the package's own ASGI adapter. Request/response paths are served (2026-07-28 ``/mcp``, the
synchronous ``POST /message``, ``/health``), auth still applies, long-lived streams are refused at once, and the
DataPulse lifespan starts once per worker on the first request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import typing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import anyio
import azure.functions as func
import pytest
from azure.functions._abc import RetryContext, TraceContext
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from datapulse.app import create_app, runtime_of
from datapulse.azure import FUNCTIONS_HOST, DataPulseFunctionApp, function_app
from datapulse.config import ConfigurationError, Settings
from tests.support.mcp_http import modern_headers, modern_params

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "azure"
TOKEN = "azure-test-token"
BASE = "https://datapulse-test.azurewebsites.net"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
BOUND_S = 10.0


class InvocationContext(func.Context):
    """What the worker passes as ``context`` (only the fields the ASGI adapter reads)."""

    def __init__(self) -> None:
        self._local = threading.local

    @property
    def invocation_id(self) -> str:
        return "00000000-0000-0000-0000-000000000001"

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return self._local

    @property
    def function_name(self) -> str:
        return "datapulse"

    @property
    def function_directory(self) -> str:
        return str(DEPLOY)

    @property
    def trace_context(self) -> TraceContext:
        return cast(TraceContext, None)

    @property
    def retry_context(self) -> RetryContext:
        return cast(RetryContext, None)


def settings(**overrides: Any) -> Settings:
    return Settings(token=SecretStr(TOKEN), host=FUNCTIONS_HOST, **overrides)


class Worker:
    """What the Python worker does with a function app: index it once (``get_functions``), then run the HTTP
    function's user code on each request."""

    def __init__(self, app: DataPulseFunctionApp) -> None:
        self.app = app
        (self.function,) = app.get_functions()
        self.handler = self.function.get_user_function()

    async def invoke(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> func.HttpResponse:
        """One request, answered within ``BOUND_S``."""
        request = func.HttpRequest(method, BASE + path, headers=headers or {}, body=body)
        with anyio.fail_after(BOUND_S):
            return cast(func.HttpResponse, await self.handler(request, InvocationContext()))


@asynccontextmanager
async def serving(app: DataPulseFunctionApp) -> AsyncIterator[Worker]:
    """A worker serving ``app``, whose lifespan is shut down afterwards (on Azure it lives as long as the process)."""
    try:
        yield Worker(app)
    finally:
        with anyio.fail_after(BOUND_S):
            await app.aclose()


def json_of(response: func.HttpResponse) -> Any:
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return json.loads(response.get_body())


def modern_body(method: str, params: dict[str, Any] | None = None, request_id: int = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": modern_params(params)}).encode()


def jsonrpc_body(method: str, params: dict[str, Any] | None = None, request_id: int = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}).encode()


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No DATAPULSE_* / credential variables from the machine leak into `Settings()`."""
    for name in list(os.environ):
        if name.upper().startswith("DATAPULSE_") or name.upper() in ("LOCAL_BEARER_TOKEN", "JWT_ISSUER", "REDIS_URL"):
            monkeypatch.delenv(name)
    return monkeypatch


async def test_the_function_app_registers_one_catch_all_http_function_the_python_worker_accepts() -> None:
    app = function_app(settings=settings())
    (function,) = app.get_functions()
    trigger = json.loads(function.get_function_json())["bindings"][0]
    assert trigger["type"] == "httpTrigger"
    assert trigger["route"] == "/{*route}"
    assert trigger["authLevel"] == "ANONYMOUS"  # DataPulse checks the bearer token itself
    assert {"GET", "POST", "DELETE"} <= set(trigger["methods"])
    # The worker resolves the signature with typing.get_type_hints and wants a real Context annotation.
    hints = typing.get_type_hints(function.get_user_function())
    assert hints == {"req": func.HttpRequest, "context": func.Context, "return": func.HttpResponse}


async def test_health_answers_200_json_without_a_token() -> None:
    async with serving(function_app(settings=settings())) as worker:
        response = await worker.invoke("GET", "/health")
        assert response.status_code == 200
        assert json_of(response)["status"] == "ok"


async def test_a_2026_tools_call_over_mcp_is_answered_200_with_the_tool_result_as_json() -> None:
    async with serving(function_app(settings=settings())) as worker:
        params = {"name": "add", "arguments": {"a": 2, "b": 3}}
        headers = {**BEARER, **modern_headers("tools/call", "add", accept="application/json")}
        response = await worker.invoke("POST", "/mcp", headers=headers, body=modern_body("tools/call", params, 7))
        assert response.status_code == 200
        message = json_of(response)  # JSON, not an SSE body
        assert message["id"] == 7
        assert message["result"]["structuredContent"] == {"result": 5.0}
        assert message["result"]["isError"] is False


async def test_post_message_without_session_id_answers_the_result_in_the_response() -> None:
    async with serving(function_app(settings=settings())) as worker:
        body = jsonrpc_body("tools/call", {"name": "echo", "arguments": {"message": "from azure"}}, 3)
        response = await worker.invoke(
            "POST", "/message", headers={**BEARER, "Content-Type": "application/json"}, body=body
        )
        assert response.status_code == 200
        message = json_of(response)
        assert message["id"] == 3
        assert message["result"]["content"] == [{"type": "text", "text": "from azure"}]


@pytest.mark.parametrize("authorization", [None, "Bearer not-the-token"], ids=["missing", "wrong"])
async def test_a_missing_or_wrong_bearer_token_gets_401_with_www_authenticate(authorization: str | None) -> None:
    async with serving(function_app(settings=settings())) as worker:
        headers = modern_headers("tools/list", accept="application/json")
        if authorization is not None:
            headers["Authorization"] = authorization
        response = await worker.invoke("POST", "/mcp", headers=headers, body=modern_body("tools/list"))
        assert response.status_code == 401
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        # The metadata URL names the function's public host, taken from the request URL.
        assert f'resource_metadata="{BASE}/.well-known/oauth-protected-resource/mcp"' in challenge
        assert json_of(response)["error"]["code"] == -32001


LONG_LIVED = [
    pytest.param("GET", "/sse", {}, b"", None, id="2024-11-05 GET /sse"),
    pytest.param("GET", "/events?session_id=abc123", {}, b"", None, id="DataPulse API GET /events"),
    pytest.param(
        "POST",
        "/message?session_id=abc123",
        {"Content-Type": "application/json"},
        json.dumps({"type": "list_tools", "request_id": "r1", "data": {}}).encode(),
        None,
        id="DataPulse API POST /message?session_id (result only on the stream)",
    ),
    pytest.param(
        "POST",
        "/mcp",
        modern_headers("subscriptions/listen"),
        modern_body("subscriptions/listen", request_id=9),
        9,
        id="2026-07-28 subscriptions/listen",
    ),
]


@pytest.mark.parametrize(("method", "path", "headers", "body", "request_id"), LONG_LIVED)
async def test_a_long_lived_stream_is_refused_at_once_with_a_json_rpc_error_naming_a_container_host(
    method: str, path: str, headers: dict[str, str], body: bytes, request_id: int | None
) -> None:
    async with serving(function_app(settings=settings())) as worker:
        response = await worker.invoke(method, path, headers={**BEARER, **headers}, body=body)
        assert response.status_code == 501
        error = json_of(response)
        assert error["jsonrpc"] == "2.0"
        assert error["id"] == request_id
        assert error["error"]["code"] == -32000
        assert "Azure Functions cannot serve" in error["error"]["message"]
        assert "container host" in error["error"]["message"]
        assert error["error"]["data"] == {"reason": "streams_unsupported_on_azure_functions"}


async def test_get_mcp_answers_405_so_a_2025_client_goes_on_without_a_standalone_stream() -> None:
    async with serving(function_app(settings=settings())) as worker:
        headers = {**BEARER, "Accept": "text/event-stream", "MCP-Protocol-Version": "2025-11-25"}
        response = await worker.invoke("GET", "/mcp", headers=headers)
        assert response.status_code == 405
        assert response.headers["allow"] == "POST, DELETE"
        assert "container host" in json_of(response)["error"]["message"]


async def test_the_datapulse_lifespan_starts_once_on_the_first_requests_and_drains_on_aclose() -> None:
    datapulse = create_app(settings())
    lifespans = 0

    async def counting(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal lifespans
        if scope["type"] == "lifespan":
            lifespans += 1
        await datapulse(scope, receive, send)

    app = function_app(counting)
    runtime = runtime_of(datapulse)
    assert not runtime.running  # nothing runs at import (function indexing) time
    async with serving(app) as worker:
        statuses: list[int] = []

        async def health() -> None:
            statuses.append((await worker.invoke("GET", "/health")).status_code)

        async with anyio.create_task_group() as concurrent_first_requests:
            for _ in range(3):
                concurrent_first_requests.start_soon(health)
        assert statuses == [200, 200, 200]
        assert (await worker.invoke("GET", "/ready")).status_code == 200
        assert runtime.running
        assert lifespans == 1
    assert not runtime.running
    assert runtime.shutdown.is_set()


async def test_a_failed_start_answers_503_and_the_next_request_starts_it_again() -> None:
    attempts = 0

    @asynccontextmanager
    async def flaky_lifespan(_app: Starlette) -> AsyncIterator[None]:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("first start fails")
        yield

    async def ok(_request: Request) -> Response:
        return JSONResponse({"attempts": attempts})

    app = function_app(Starlette(routes=[Route("/ok", ok)], lifespan=flaky_lifespan))
    async with serving(app) as worker:
        failed = await worker.invoke("GET", "/ok")
        assert failed.status_code == 503
        assert failed.headers["retry-after"] == "1"
        message = json_of(failed)["error"]["message"]
        assert "did not start" in message
        assert "first start fails" not in message  # the cause is only logged, never sent
        served = await worker.invoke("GET", "/ok")
        assert served.status_code == 200
        assert json_of(served) == {"attempts": 2}


async def test_from_app_settings_alone_a_request_to_the_public_host_name_is_served(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    clean_environment.setenv("DATAPULSE_TOKEN", TOKEN)
    async with serving(function_app()) as worker:
        headers = {**BEARER, **modern_headers("tools/list", accept="application/json")}
        headers["Host"] = "datapulse-test.azurewebsites.net"  # not loopback: accepted, since auth is required
        response = await worker.invoke("POST", "/mcp", headers=headers, body=modern_body("tools/list"))
        assert response.status_code == 200
        assert "add" in {tool["name"] for tool in json_of(response)["result"]["tools"]}


def test_without_credentials_the_function_app_is_not_built(clean_environment: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="no credentials configured"):
        function_app()


def test_an_app_and_settings_together_are_refused() -> None:
    with pytest.raises(TypeError, match="not both"):
        function_app(create_app(settings()), settings=settings())


def test_deploy_azure_serves_function_app_at_the_root_and_installs_the_extra() -> None:
    host = json.loads((DEPLOY / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensions"]["http"]["routePrefix"] == ""
    assert host["functionTimeout"]
    lines = (DEPLOY / "requirements.txt").read_text().splitlines()
    assert [line.strip() for line in lines if line.strip() and not line.startswith("#")] == ["datapulse[azure]"]
    entry = (DEPLOY / "function_app.py").read_text()
    assert "from datapulse.azure import function_app" in entry
    assert "app = function_app(" in entry


def test_without_the_extra_importing_datapulse_azure_says_what_to_install() -> None:
    probe = "import sys; sys.modules['azure.functions'] = None; import datapulse.azure"  # None: import fails
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "ImportError: datapulse.azure needs the azure-functions package: pip install 'datapulse[azure]'" in (
        result.stderr
    )
