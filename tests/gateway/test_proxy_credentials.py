"""``datapulse proxy`` authenticates to its upstream with credentials of its own, never the client's token:
a bearer token from an environment variable, or OAuth client credentials against a real token endpoint, refreshed
once when the upstream refuses the cached token; a refusal that stays becomes a clear JSON-RPC error and an audit
record."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.gateway.test_proxy import PASSTHROUGH_OR_NOT, ClientEra, client
from tests.support.asgi_serving import serving
from tests.support.bridging import CALL_TIMEOUT_S, call
from tests.support.http_upstream import BEARER_PATH, Era, spawn_upstream
from tests.support.processes import run_collecting
from tests.support.servers import REPO_ROOT, TOKEN, spawn_datapulse

pytestmark = pytest.mark.anyio

UPSTREAM_TOKEN: Final = "upstream-own-token-0123456789"
CLIENT_ID: Final = "datapulse-gateway"
CLIENT_SECRET: Final = "gateway-secret-9876543210"


async def seen(upstream_seen_url: str) -> dict[str, Any]:
    async with httpx2.AsyncClient(timeout=CALL_TIMEOUT_S) as http:
        answer: dict[str, Any] = (await http.get(upstream_seen_url)).json()
    return answer


async def rotate(upstream_url: str, token: str) -> None:
    """Make the upstream accept only ``token`` from now on (the gateway's cached token turns stale)."""
    async with httpx2.AsyncClient(timeout=CALL_TIMEOUT_S) as http:
        answer = await http.put(upstream_url + BEARER_PATH, content=token)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    ("upstream_era", "client_era"),
    [("2026", "2025"), ("2025", "2025"), ("2024", "2025"), ("2026", "2026")],
    ids=["2026-upstream", "2025-upstream", "2024-upstream", "2026-upstream-passthrough"],
)
async def test_the_upstream_gets_datapulses_own_bearer_token_and_never_the_clients(
    upstream_era: Era, client_era: ClientEra
) -> None:
    async with (
        spawn_upstream(upstream_era, bearer=UPSTREAM_TOKEN) as upstream,
        spawn_datapulse(
            ["--upstream-bearer-env", "UPSTREAM_TOKEN", upstream.mcp_url],
            env={"DATAPULSE_TOKEN": TOKEN, "UPSTREAM_TOKEN": UPSTREAM_TOKEN},
            command="proxy",
        ) as server,
        client(server, client_era) as connected,
    ):
        assert await call(connected, "echo", {"message": "with our own token"}) == "with our own token"
        last = await seen(upstream.seen_url)
    assert last["authorization"] == f"Bearer {UPSTREAM_TOKEN}"
    assert TOKEN not in json.dumps(last)


async def test_a_proxy_refused_by_its_upstream_exits_1_saying_the_upstream_refused_its_credentials() -> None:
    async with spawn_upstream("2025", bearer=UPSTREAM_TOKEN) as upstream:
        finished = await run_collecting(
            [str(REPO_ROOT / ".venv" / "bin" / "datapulse"), "proxy", "--port", "0", upstream.mcp_url],
            timeout_s=60,
            env={"DATAPULSE_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
        )
    assert finished.returncode == 1, finished
    assert "refused DataPulse's credentials (HTTP 401)" in finished.stderr, finished.stderr


async def test_a_proxy_whose_upstream_token_variable_is_unset_exits_1_naming_it() -> None:
    finished = await run_collecting(
        [
            str(REPO_ROOT / ".venv" / "bin" / "datapulse"),
            "proxy",
            "--port",
            "0",
            "--upstream-bearer-env",
            "NOT_SET_ANYWHERE",
            "http://127.0.0.1:9/mcp",
        ],
        timeout_s=60,
        env={"DATAPULSE_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
    )
    assert finished.returncode == 1, finished
    assert "NOT_SET_ANYWHERE" in finished.stderr, finished.stderr


@dataclass
class TokenEndpoint:
    """An OAuth token endpoint for the client-credentials grant (RFC 6749 §4.4): it issues ``token``."""

    token: str
    requests: list[dict[str, str]] = field(default_factory=list)
    failing: bool = False
    """True: every token request is answered 503 ``temporarily_unavailable`` (RFC 6749 §5.2)."""

    async def handle(self, request: Request) -> JSONResponse:
        form = {key: str(value) for key, value in (await request.form()).items()}
        self.requests.append(form)
        if self.failing:
            return JSONResponse({"error": "temporarily_unavailable"}, status_code=503)
        if form.get("grant_type") != "client_credentials" or not request.headers.get("authorization"):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        return JSONResponse({"access_token": self.token, "token_type": "Bearer", "expires_in": 3600})


@asynccontextmanager
async def token_endpoint(token: str) -> AsyncIterator[tuple[TokenEndpoint, str]]:
    endpoint = TokenEndpoint(token)
    app = Starlette(routes=[Route("/token", endpoint.handle, methods=["POST"])])
    async with serving(app) as url:
        yield endpoint, url + "/token"


@pytest.mark.parametrize(("upstream_era", "client_era"), PASSTHROUGH_OR_NOT, ids=["2025-session", "2026-passthrough"])
async def test_oauth_client_credentials_are_fetched_once_refreshed_once_when_refused_and_then_an_audited_error(
    tmp_path: Path, upstream_era: Era, client_era: ClientEra
) -> None:
    audit = tmp_path / "audit.jsonl"
    async with (
        spawn_upstream(upstream_era, bearer="first-token") as upstream,
        token_endpoint("first-token") as (endpoint, token_url),
        spawn_datapulse(
            [
                *("--upstream-oauth-token-url", token_url),
                *("--upstream-oauth-client-id", CLIENT_ID),
                *("--upstream-oauth-client-secret-env", "UPSTREAM_SECRET"),
                upstream.mcp_url,
            ],
            env={"DATAPULSE_TOKEN": TOKEN, "UPSTREAM_SECRET": CLIENT_SECRET, "DATAPULSE_AUDIT_SINKS": f"file:{audit}"},
            command="proxy",
        ) as server,
        client(server, client_era) as connected,
    ):
        assert await call(connected, "echo", {"message": "one"}) == "one"
        fetched = len(endpoint.requests)  # the start-up check's token, and the server's own
        assert fetched == 2
        assert await call(connected, "echo", {"message": "one again"}) == "one again"
        assert len(endpoint.requests) == fetched  # cached

        await rotate(upstream.url, "second-token")  # the cached token is refused from now on
        endpoint.token = "second-token"
        assert await call(connected, "echo", {"message": "two"}) == "two"
        assert len(endpoint.requests) == fetched + 1  # refused once, refreshed once, resent

        await rotate(upstream.url, "third-token")  # and the endpoint keeps issuing a token the upstream refuses
        with anyio.fail_after(CALL_TIMEOUT_S), pytest.raises(MCPError) as caught:
            await connected.call_tool("echo", {"message": "three"})
        assert len(endpoint.requests) == fetched + 2  # one refresh, not a loop
    assert caught.value.error.code == -32000
    assert "refused DataPulse's credentials (HTTP 401)" in caught.value.error.message
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    denials = [record for record in records if record["kind"] == "upstream_auth"]
    assert [(record["outcome"], record["name"]) for record in denials] == [("denied_401", "127.0.0.1")]
    assert CLIENT_SECRET not in audit.read_text()


@pytest.mark.parametrize(("upstream_era", "client_era"), PASSTHROUGH_OR_NOT, ids=["2025-session", "2026-passthrough"])
async def test_a_token_endpoint_that_stops_issuing_tokens_fails_calls_clearly_until_it_issues_them_again(
    upstream_era: Era, client_era: ClientEra
) -> None:
    async with (
        spawn_upstream(upstream_era, bearer="first-token") as upstream,
        token_endpoint("first-token") as (endpoint, token_url),
        spawn_datapulse(
            [
                *("--upstream-oauth-token-url", token_url),
                *("--upstream-oauth-client-id", CLIENT_ID),
                *("--upstream-oauth-client-secret-env", "UPSTREAM_SECRET"),
                upstream.mcp_url,
            ],
            env={"DATAPULSE_TOKEN": TOKEN, "UPSTREAM_SECRET": CLIENT_SECRET},
            command="proxy",
        ) as server,
        client(server, client_era) as connected,
    ):
        assert await call(connected, "echo", {"message": "one"}) == "one"
        endpoint.failing = True
        await rotate(upstream.url, "second-token")  # the cached token is refused, and no new one comes
        with anyio.fail_after(CALL_TIMEOUT_S), pytest.raises(MCPError) as caught:
            await connected.call_tool("echo", {"message": "two"})
        endpoint.failing, endpoint.token = False, "second-token"
        with anyio.fail_after(CALL_TIMEOUT_S):
            assert await call(connected, "echo", {"message": "three"}) == "three"
    error = caught.value.error
    assert error.code == -32000, error
    # The full path sees the upstream's 401 end its connection; the pass-through sees the token request fail.
    expected = {"2025": ("upstream_unauthorized", "refused DataPulse's credentials (HTTP 401)")}.get(
        client_era, ("upstream_credentials", "could not get a token for the upstream server '127.0.0.1'")
    )
    assert isinstance(error.data, dict), error
    assert (error.data["reason"], expected[1] in error.message) == (expected[0], True), error
    assert CLIENT_SECRET not in error.message
