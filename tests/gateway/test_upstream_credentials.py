"""The gateway's own upstream credentials against a real token endpoint and a real protected upstream.

Both are small Starlette apps under real uvicorn on free loopback ports in the test's event loop. The
token endpoint authenticates the client (RFC 6749 §2.3.1), issues random tokens and counts its requests;
the upstream accepts only tokens it was told are valid and answers 401 otherwise. Time is a fake clock.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import anyio
import anyio.lowlevel
import httpx2
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from datapulse.bridge.credentials import (
    ClientCredentialsAuth,
    OAuthClientCredentials,
    UpstreamAuthError,
    UpstreamCredentials,
    resolve,
)
from datapulse.config import ConfigurationError
from tests.support.asgi_serving import WAIT_S, serving
from tests.support.redis_server import free_port

pytestmark = pytest.mark.anyio

CLIENT_ID = "gateway client:1"
SECRET_ENV = "UPSTREAM_CLIENT_SECRET"
SECRET = f"s3cret:{secrets.token_hex(8)}/+ %&="
"""Characters that Basic authentication must form-encode (RFC 6749 §2.3.1), and a random part."""
ENVIRON = {SECRET_ENV: SECRET}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class TokenRequest:
    """What the token endpoint received."""

    headers: dict[str, str]
    form: dict[str, str]


@dataclass
class Upstream:
    """A protected resource: 200 for a valid bearer token, else 401 (RFC 6750 §3)."""

    valid: set[str] = field(default_factory=set)
    reject_all: bool = False
    seen: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    """(the token sent, the body, all headers) per request."""
    url: str = ""
    refusals: list[anyio.Event] = field(default_factory=list)
    """Set one by one, one per 401 answered (tests wait on them)."""

    async def handle(self, request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        self.seen.append((token, await request.body(), dict(request.headers)))
        if self.reject_all or token not in self.valid:
            if unset := [event for event in self.refusals if not event.is_set()]:
                unset[0].set()
            return JSONResponse(
                {"error": "invalid_token"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return JSONResponse({"ok": True})

    def tokens_seen(self) -> list[str]:
        return [token for token, _, _ in self.seen]


@dataclass
class TokenEndpoint:
    """An OAuth token endpoint for the client-credentials grant (RFC 6749 §4.4) of one client.

    ``respond`` replaces the normal answer; while ``gate`` is set, answers wait for it.
    """

    upstream: Upstream
    expires_in: object = 3600
    respond: Callable[[], Response] | None = None
    gate: anyio.Event | None = None
    reissue: str | None = None
    """Set: every token issued has this value (an endpoint that hands out the same token again)."""
    requests: list[TokenRequest] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    received: anyio.Event = field(default_factory=anyio.Event)
    url: str = ""

    async def handle(self, request: Request) -> Response:
        form = {key: str(value) for key, value in (await request.form()).items()}
        self.requests.append(TokenRequest(dict(request.headers), form))
        self.received.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.respond is not None:
            return self.respond()
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        if self._client(request.headers.get("authorization"), form) != (CLIENT_ID, SECRET):
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Client authentication failed"}, status_code=401
            )
        token = self.reissue or f"access-{len(self.issued) + 1}-{secrets.token_hex(12)}"
        self.issued.append(token)
        self.upstream.valid.add(token)
        body: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @staticmethod
    def _client(authorization: str | None, form: dict[str, str]) -> tuple[str | None, str | None]:
        if authorization is not None and authorization.startswith("Basic "):
            pair = base64.b64decode(authorization.removeprefix("Basic ")).decode()
            client_id, _, secret = pair.partition(":")
            return unquote_plus(client_id), unquote_plus(secret)
        return form.get("client_id"), form.get("client_secret")

    @property
    def token_url(self) -> str:
        return f"{self.url}/oauth/token"


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    running = Upstream()
    app = Starlette(routes=[Route("/mcp", running.handle, methods=["GET", "POST", "DELETE"])])
    async with serving(app) as url:
        running.url = url
        yield running


@pytest.fixture
async def token_endpoint(upstream: Upstream) -> AsyncIterator[TokenEndpoint]:
    endpoint = TokenEndpoint(upstream)
    app = Starlette(routes=[Route("/oauth/token", endpoint.handle, methods=["POST"])])
    async with serving(app) as url:
        endpoint.url = url
        try:
            yield endpoint
        finally:
            if endpoint.gate is not None:
                endpoint.gate.set()  # let a held request finish so the server stops promptly


def oauth_config(endpoint: TokenEndpoint, **overrides: Any) -> OAuthClientCredentials:
    values: dict[str, Any] = {
        "token_url": endpoint.token_url,
        "client_id": CLIENT_ID,
        "client_secret_env": SECRET_ENV,
        "scope": "mcp:tools mcp:resources",
        "resource": "https://mcp.example.test/mcp",
    }
    values.update(overrides)
    return OAuthClientCredentials(**values)


def oauth_auth(endpoint: TokenEndpoint, clock: FakeClock | None = None, **overrides: Any) -> ClientCredentialsAuth:
    credentials = UpstreamCredentials(oauth=oauth_config(endpoint, **overrides))
    headers, auth = resolve(credentials, ENVIRON, clock=clock if clock is not None else FakeClock())
    assert headers == {}
    assert isinstance(auth, ClientCredentialsAuth)
    return auth


@asynccontextmanager
async def upstream_client(
    upstream: Upstream, auth: httpx2.Auth | None = None, headers: dict[str, str] | None = None
) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=upstream.url, auth=auth, headers=headers, timeout=WAIT_S) as client:
        try:
            yield client
        finally:
            if isinstance(auth, ClientCredentialsAuth):
                await auth.aclose()


async def get(client: httpx2.AsyncClient, **kwargs: Any) -> httpx2.Response:
    with anyio.fail_after(WAIT_S):
        return await client.get("/mcp", **kwargs)


async def auth_failure(client: httpx2.AsyncClient) -> UpstreamAuthError:
    with anyio.fail_after(WAIT_S), pytest.raises(UpstreamAuthError) as caught:
        await client.get("/mcp")
    assert SECRET not in str(caught.value)
    return caught.value


# --- static headers and bearer_env ------------------------------------------------------------------


async def test_bearer_env_sends_the_variable_as_a_bearer_token_with_the_static_headers(upstream: Upstream) -> None:
    upstream.valid.add("static-token-123")
    credentials = UpstreamCredentials(headers={"X-Team": "data"}, bearer_env="UPSTREAM_TOKEN")

    headers, auth = resolve(credentials, {"UPSTREAM_TOKEN": "static-token-123\n"})

    assert auth is None
    assert headers == {"X-Team": "data", "Authorization": "Bearer static-token-123"}
    async with upstream_client(upstream, headers=headers) as client:
        assert (await get(client)).status_code == 200
    token, _, seen = upstream.seen[0]
    assert (token, seen["x-team"]) == ("static-token-123", "data")


async def test_static_headers_alone_are_sent_as_configured_and_need_no_auth_handler(upstream: Upstream) -> None:
    credentials = UpstreamCredentials(headers={"X-Api-Key": "key-abc", "X-Team": "data"})

    headers, auth = resolve(credentials, {})

    assert (headers, auth) == ({"X-Api-Key": "key-abc", "X-Team": "data"}, None)
    assert headers is not credentials.headers
    async with upstream_client(upstream, headers=headers) as client:
        assert (await get(client)).status_code == 401  # no bearer token: the upstream refuses, as it should
    assert upstream.seen[0][2]["x-api-key"] == "key-abc"


async def test_no_credentials_resolve_to_no_headers_and_no_auth_handler() -> None:
    assert resolve(None, ENVIRON) == ({}, None)
    assert resolve(UpstreamCredentials(), ENVIRON) == ({}, None)


@pytest.mark.parametrize(
    ("credentials", "environ", "expected"),
    [
        pytest.param({"bearer_env": "UPSTREAM_TOKEN"}, {}, "UPSTREAM_TOKEN (bearer_env) is not set", id="bearer-unset"),
        pytest.param(
            {"bearer_env": "UPSTREAM_TOKEN"},
            {"UPSTREAM_TOKEN": " \n"},
            "UPSTREAM_TOKEN (bearer_env) is empty",
            id="bearer-blank",
        ),
        pytest.param(
            {"bearer_env": "UPSTREAM_TOKEN"},
            {"UPSTREAM_TOKEN": "two words-secretvalue"},
            "UPSTREAM_TOKEN (bearer_env) has whitespace or control characters",
            id="bearer-with-space",
        ),
        pytest.param(
            {"oauth": {"token_url": "https://auth.example.test/token", "client_id": "c", "client_secret_env": "SEC"}},
            {},
            "SEC (oauth.client_secret_env) is not set; set it to the client secret of 'c'",
            id="secret-unset",
        ),
        pytest.param(
            {"oauth": {"token_url": "https://auth.example.test/token", "client_id": "c", "client_secret_env": "SEC"}},
            {"SEC": ""},
            "SEC (oauth.client_secret_env) is empty",
            id="secret-empty",
        ),
    ],
)
def test_a_missing_or_unusable_variable_is_a_configuration_error_naming_it(
    credentials: dict[str, Any], environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        resolve(UpstreamCredentials.model_validate(credentials), environ)

    assert expected in str(caught.value)
    assert "secretvalue" not in str(caught.value)


# --- validation ---------------------------------------------------------------------------------------

TOKEN_URL = "https://auth.example.test/oauth/token"
OAUTH = {"token_url": TOKEN_URL, "client_id": "gw", "client_secret_env": "SEC"}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            {"oauth": {**OAUTH, "token_url": "http://auth.example.test/token"}},
            "uses plain http to 'auth.example.test', which would send the client secret in clear text; use https",
            id="http-not-loopback",
        ),
        pytest.param(
            {"oauth": {**OAUTH, "token_url": "ftp://auth.example.test/token"}},
            "must be an absolute https:// URL",
            id="not-http",
        ),
        pytest.param({"oauth": {**OAUTH, "token_url": "/oauth/token"}}, "must be an absolute https:// URL", id="rel"),
        pytest.param(
            {"oauth": {**OAUTH, "token_url": "https://gw:pw@auth.example.test/token"}},
            "must not carry a user name or password",
            id="userinfo",
        ),
        pytest.param(
            {"oauth": {**OAUTH, "token_url": "https://auth.example.test/token#x"}},
            "must not have a fragment",
            id="frag",
        ),
        pytest.param(
            {"oauth": {**OAUTH, "token_url": "https://auth.example.test:99999/token"}}, "not a valid URL", id="port"
        ),
        pytest.param({"oauth": {**OAUTH, "client_id": " "}}, "client_id must not be empty", id="client-id"),
        pytest.param(
            {"oauth": {**OAUTH, "client_secret_env": "s3cr3t value"}},
            "is not an environment variable name",
            id="secret-env-not-a-name",
        ),
        pytest.param(
            {"oauth": {**OAUTH, "client_secret": "inline"}},
            "client_secret cannot be written in the configuration; put the secret in an environment variable",
            id="inline-secret",
        ),
        pytest.param({"oauth": {**OAUTH, "scope": "  "}}, "scope must not be empty", id="scope-empty"),
        pytest.param({"oauth": {**OAUTH, "scope": 'read "all"'}}, "'\"all\"' has a character", id="scope-quote"),
        pytest.param({"oauth": {**OAUTH, "resource": "mcp/server"}}, "must be an absolute URI", id="resource-rel"),
        pytest.param(
            {"oauth": {**OAUTH, "resource": "https://mcp.example.test/mcp#x"}},
            "must not have a fragment",
            id="resource-fragment",
        ),
        pytest.param({"oauth": {**OAUTH, "auth_method": "private_key_jwt"}}, "client_secret_basic", id="method"),
        pytest.param({"oauth": {**OAUTH, "refresh_margin_s": -1}}, "greater than or equal to 0", id="margin"),
        pytest.param({"oauth": {**OAUTH, "timeout_s": 0}}, "greater than 0", id="timeout"),
        pytest.param({"oauth": {**OAUTH, "tokenurl": TOKEN_URL}}, "Extra inputs are not permitted", id="extra"),
        pytest.param(
            {"bearer_env": "TOKEN", "oauth": OAUTH}, "set either bearer_env or oauth, not both", id="bearer-and-oauth"
        ),
        pytest.param(
            {"bearer_env": "TOKEN", "headers": {"authorization": "Basic abc"}},
            "headers must not set Authorization when bearer_env is set",
            id="authorization-with-bearer",
        ),
        pytest.param(
            {"oauth": OAUTH, "headers": {"Authorization": "Basic abc"}},
            "headers must not set Authorization when oauth is set",
            id="authorization-with-oauth",
        ),
        pytest.param({"bearer_env": "1TOKEN"}, "bearer_env is not an environment variable name", id="env"),
        pytest.param({"headers": {"X Key": "v"}}, "'X Key' is not an HTTP field name", id="header-name"),
        pytest.param({"headers": {"X-Key:": "v"}}, "'X-Key:' is not an HTTP field name", id="header-colon"),
        pytest.param({"headers": {"X-Key": "a\r\nX-Evil: 1"}}, "contains a line break", id="header-injection"),
        pytest.param({"headers": {"Host": "evil.test"}}, "'Host' is set by the gateway itself", id="header-host"),
        pytest.param({"headers": {"Mcp-Session-Id": "s"}}, "set by the gateway itself", id="header-mcp-session"),
        pytest.param({"headers": {"X-Key": "a", "x-key": "b"}}, "are the same header", id="header-duplicate"),
    ],
)
def test_invalid_credentials_are_refused_with_an_actionable_message(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as caught:
        UpstreamCredentials.model_validate(data)

    assert expected in str(caught.value)


@pytest.mark.parametrize(
    "data",
    [
        {"bearer_env": "eyJhbGciOi.secret-token"},
        {"oauth": {**OAUTH, "client_secret_env": "secret-value-xyz"}},
        {"oauth": {**OAUTH, "client_secret": "secret-value-xyz"}},
        {"headers": {"X-Api-Key": "secret-value-xyz\r\n"}},
    ],
)
def test_a_secret_written_into_the_configuration_is_not_echoed_by_the_error(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        UpstreamCredentials.model_validate(data)

    assert "secret-value-xyz" not in str(caught.value)
    assert "secret-token" not in str(caught.value)


@pytest.mark.parametrize(
    "token_url",
    [
        "https://auth.example.test/oauth/token",
        "https://auth.example.test/token?tenant=a",
        "http://localhost:8080/token",
        "http://127.0.0.1/token",
        "http://[::1]:9000/token",
    ],
)
def test_https_token_urls_and_plain_http_on_loopback_hosts_are_accepted(token_url: str) -> None:
    assert OAuthClientCredentials.model_validate({**OAUTH, "token_url": token_url}).token_url == token_url


def test_oauth_settings_have_documented_defaults_and_a_normalised_scope() -> None:
    config = OAuthClientCredentials.model_validate({**OAUTH, "scope": "  read   write "})

    assert config.scope == "read write"
    assert (config.resource, config.auth_method) == (None, "client_secret_basic")
    assert (config.refresh_margin_s, config.timeout_s) == (30.0, 10.0)


# --- the client-credentials grant -------------------------------------------------------------------


async def test_the_token_is_requested_once_and_reused_across_requests(
    token_endpoint: TokenEndpoint, upstream: Upstream
) -> None:
    async with upstream_client(upstream, oauth_auth(token_endpoint)) as client:
        for _ in range(3):
            assert (await get(client)).status_code == 200

    assert len(token_endpoint.requests) == 1
    assert token_endpoint.requests[0].form == {
        "grant_type": "client_credentials",
        "scope": "mcp:tools mcp:resources",
        "resource": "https://mcp.example.test/mcp",
    }
    assert upstream.tokens_seen() == token_endpoint.issued * 3


async def test_concurrent_first_requests_cause_one_token_request(
    token_endpoint: TokenEndpoint, upstream: Upstream
) -> None:
    token_endpoint.gate = anyio.Event()
    statuses: list[int] = []
    auth = oauth_auth(token_endpoint)
    async with upstream_client(upstream, auth) as client:

        async def call() -> None:
            statuses.append((await get(client)).status_code)

        with anyio.fail_after(WAIT_S):
            async with anyio.create_task_group() as tasks:
                for _ in range(10):
                    tasks.start_soon(call)
                await token_endpoint.received.wait()
                while auth.waiting < 9:  # the other nine queue behind the token request
                    await anyio.lowlevel.checkpoint()
                token_endpoint.gate.set()

    assert statuses == [200] * 10
    assert len(token_endpoint.requests) == 1
    assert upstream.tokens_seen() == token_endpoint.issued * 10


async def test_a_token_is_replaced_refresh_margin_s_before_it_expires(
    token_endpoint: TokenEndpoint, upstream: Upstream
) -> None:
    token_endpoint.expires_in = 120
    clock = FakeClock()
    async with upstream_client(upstream, oauth_auth(token_endpoint, clock, refresh_margin_s=30)) as client:
        await get(client)
        clock.advance(89)
        await get(client)
        assert len(token_endpoint.requests) == 1

        clock.advance(1.5)  # 90.5 s: within 30 s of expires_in
        await get(client)

    assert len(token_endpoint.requests) == 2
    first, second = token_endpoint.issued
    assert upstream.tokens_seen() == [first, first, second]


async def test_a_token_living_no_longer_than_the_margin_is_replaced_after_half_its_lifetime(
    token_endpoint: TokenEndpoint, upstream: Upstream
) -> None:
    token_endpoint.expires_in = "20"  # some servers send a string
    clock = FakeClock()
    async with upstream_client(upstream, oauth_auth(token_endpoint, clock, refresh_margin_s=30)) as client:
        await get(client)
        clock.advance(9)
        await get(client)
        clock.advance(1.5)
        await get(client)

    first, second = token_endpoint.issued
    assert upstream.tokens_seen() == [first, first, second]


async def test_a_token_without_expires_in_is_kept_until_the_upstream_rejects_it(
    token_endpoint: TokenEndpoint, upstream: Upstream
) -> None:
    token_endpoint.expires_in = None
    clock = FakeClock()
    async with upstream_client(upstream, oauth_auth(token_endpoint, clock)) as client:
        await get(client)
        clock.advance(10_000_000)
        await get(client)
        assert len(token_endpoint.requests) == 1

        upstream.valid.clear()
        assert (await get(client)).status_code == 200

    first, second = token_endpoint.issued
    assert upstream.tokens_seen() == [first, first, first, second]


async def test_a_401_drops_the_token_gets_one_new_token_and_resends_the_request_once(
    token_endpoint: TokenEndpoint, upstream: Upstream
) -> None:
    async with upstream_client(upstream, oauth_auth(token_endpoint)) as client:
        await get(client)
        upstream.valid.discard(token_endpoint.issued[0])  # revoked at the upstream, still cached by the gateway

        async def streamed_body() -> AsyncIterator[bytes]:  # as a gateway forwards an inbound body: once only
            yield b'{"jsonrpc":"2.0",'
            yield b'"id":7,"method":"tools/list"}'

        with anyio.fail_after(WAIT_S):
            response = await client.post("/mcp", content=streamed_body())

    assert response.status_code == 200
    assert len(token_endpoint.requests) == 2
    first, second = token_endpoint.issued
    assert upstream.tokens_seen() == [first, first, second]
    rejected_body, resent_body = upstream.seen[1][1], upstream.seen[2][1]
    assert rejected_body == resent_body == b'{"jsonrpc":"2.0","id":7,"method":"tools/list"}'


async def test_a_second_401_is_returned_without_another_token_request(
    token_endpoint: TokenEndpoint, upstream: Upstream
) -> None:
    upstream.reject_all = True
    async with upstream_client(upstream, oauth_auth(token_endpoint)) as client:
        response = await get(client)

    assert response.status_code == 401
    assert len(token_endpoint.requests) == 2
    assert upstream.tokens_seen() == token_endpoint.issued


async def test_requests_rejected_together_share_one_new_token(
    token_endpoint: TokenEndpoint, upstream: Upstream
) -> None:
    statuses: list[int] = []
    async with upstream_client(upstream, oauth_auth(token_endpoint)) as client:
        await get(client)
        upstream.valid.clear()

        async def call() -> None:
            statuses.append((await get(client)).status_code)

        async with anyio.create_task_group() as tasks:
            for _ in range(5):
                tasks.start_soon(call)

    assert statuses == [200] * 5
    assert len(token_endpoint.requests) == 2


async def test_requests_rejected_together_share_one_new_token_even_when_it_has_the_rejected_value(
    token_endpoint: TokenEndpoint, upstream: Upstream
) -> None:
    token_endpoint.reissue = "the-same-token-every-time"
    statuses: list[int] = []
    async with upstream_client(upstream, oauth_auth(token_endpoint)) as client:
        await get(client)
        upstream.valid.clear()  # refused until the endpoint issues it again
        upstream.refusals = [anyio.Event() for _ in range(5)]
        token_endpoint.gate = anyio.Event()  # the new token is held back until all five were refused

        async def call() -> None:
            statuses.append((await get(client)).status_code)

        async with anyio.create_task_group() as tasks:
            for _ in range(5):
                tasks.start_soon(call)
            with anyio.fail_after(WAIT_S):
                for refused in upstream.refusals:
                    await refused.wait()
            token_endpoint.gate.set()

    assert statuses == [200] * 5
    assert len(token_endpoint.requests) == 2  # a value equal to the refused one is still a new token


async def test_a_delete_refused_with_401_is_returned_as_is_without_a_new_token(
    token_endpoint: TokenEndpoint, upstream: Upstream
) -> None:
    async with upstream_client(upstream, oauth_auth(token_endpoint)) as client:
        await get(client)
        upstream.valid.clear()
        with anyio.fail_after(WAIT_S):
            deleted = await client.delete("/mcp", headers={"Mcp-Session-Id": "s-1"})
        after = await get(client)  # any other request still gets a new token and is sent again

    assert deleted.status_code == 401
    assert after.status_code == 200
    first, second = token_endpoint.issued
    assert upstream.tokens_seen() == [first, first, first, second]


async def test_an_inbound_authorization_header_is_replaced_by_the_gateway_token(
    token_endpoint: TokenEndpoint, upstream: Upstream
) -> None:
    async with upstream_client(upstream, oauth_auth(token_endpoint)) as client:
        response = await get(client, headers={"Authorization": "Bearer inbound-client-token"})

    assert response.status_code == 200
    assert upstream.tokens_seen() == token_endpoint.issued


async def test_the_upstream_client_headers_do_not_reach_the_token_endpoint(
    token_endpoint: TokenEndpoint, upstream: Upstream
) -> None:
    headers, auth = resolve(
        UpstreamCredentials(headers={"X-Api-Key": "upstream-only-key"}, oauth=oauth_config(token_endpoint)), ENVIRON
    )
    async with upstream_client(upstream, auth, headers) as client:
        assert (await get(client)).status_code == 200

    assert upstream.seen[0][2]["x-api-key"] == "upstream-only-key"
    assert "x-api-key" not in token_endpoint.requests[0].headers


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
async def test_the_client_authenticates_at_the_token_endpoint_as_auth_method_says(
    token_endpoint: TokenEndpoint, upstream: Upstream, auth_method: str
) -> None:
    async with upstream_client(upstream, oauth_auth(token_endpoint, auth_method=auth_method)) as client:
        assert (await get(client)).status_code == 200  # the endpoint authenticated the client

    seen = token_endpoint.requests[0]
    if auth_method == "client_secret_basic":
        pair = base64.b64decode(seen.headers["authorization"].removeprefix("Basic ")).decode()
        client_id, _, secret = pair.partition(":")  # both form-encoded first (RFC 6749 §2.3.1)
        assert client_id == "gateway+client%3A1"
        assert (unquote_plus(secret), ":" in secret, " " in secret) == (SECRET, False, False)
        assert "client_id" not in seen.form
        assert "client_secret" not in seen.form
    else:
        assert "authorization" not in seen.headers
        assert (seen.form["client_id"], seen.form["client_secret"]) == (CLIENT_ID, SECRET)
    assert seen.form["grant_type"] == "client_credentials"
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded"


# --- token endpoint failures --------------------------------------------------------------------------


def oauth_error(status: int, error: str, description: str) -> Callable[[], Response]:
    return lambda: JSONResponse({"error": error, "error_description": description}, status_code=status)


@pytest.mark.parametrize(
    ("respond", "expected", "status", "error"),
    [
        pytest.param(
            oauth_error(401, "invalid_client", "Unknown client or bad secret"),
            [
                "HTTP 401, error 'invalid_client': Unknown client or bad secret",
                "check client_id, the secret in $UPSTREAM_CLIENT_SECRET, and auth_method",
            ],
            401,
            "invalid_client",
            id="invalid-client",
        ),
        pytest.param(
            oauth_error(400, "invalid_scope", "mcp:resources is not allowed"),
            ["error 'invalid_scope': mcp:resources is not allowed", "check scope (now 'mcp:tools mcp:resources')"],
            400,
            "invalid_scope",
            id="invalid-scope",
        ),
        pytest.param(
            oauth_error(400, "invalid_target", "unknown resource"),
            ["error 'invalid_target': unknown resource", "check resource (now 'https://mcp.example.test/mcp'"],
            400,
            "invalid_target",
            id="invalid-target",
        ),
        pytest.param(
            oauth_error(401, "invalid_client", f"bad secret {SECRET}"),
            ["bad secret [redacted]"],
            401,
            "invalid_client",
            id="echoed-secret-redacted",
        ),
        pytest.param(
            lambda: PlainTextResponse("Bad Gateway", status_code=502),
            ["HTTP 502 with no OAuth error in the answer: 'Bad Gateway'"],
            502,
            None,
            id="server-error",
        ),
        pytest.param(
            lambda: PlainTextResponse("access_token=abc&token_type=bearer"),
            ["HTTP 200 but the answer is not a JSON object (text/plain", "RFC 6749 §5.1"],
            200,
            None,
            id="not-json",
        ),
        pytest.param(
            lambda: JSONResponse({"token_type": "Bearer"}),
            ["HTTP 200 but the answer has no access_token"],
            200,
            None,
            id="no-access-token",
        ),
        pytest.param(
            lambda: JSONResponse({"access_token": "abc", "token_type": "DPoP"}),
            ["issued a 'DPoP' token; only Bearer tokens (RFC 6750) are supported"],
            200,
            None,
            id="not-bearer",
        ),
        pytest.param(
            lambda: JSONResponse({"access_token": "abc", "token_type": "bearer", "expires_in": "soon"}),
            ["expires_in is 'soon', not a number of seconds"],
            200,
            None,
            id="bad-expires-in",
        ),
        pytest.param(
            lambda: RedirectResponse("https://elsewhere.example.test/token?tenant=x", status_code=307),
            ["HTTP 307 redirect to https://elsewhere.example.test/token; set token_url to the final address"],
            307,
            None,
            id="redirect",
        ),
    ],
)
async def test_a_failed_token_request_raises_upstream_auth_error_saying_what_to_check(
    token_endpoint: TokenEndpoint,
    upstream: Upstream,
    respond: Callable[[], Response],
    expected: list[str],
    status: int,
    error: str | None,
) -> None:
    token_endpoint.respond = respond
    async with upstream_client(upstream, oauth_auth(token_endpoint)) as client:
        failure = await auth_failure(client)

    message = str(failure)
    assert message.startswith(f"cannot get an access token for the upstream from {token_endpoint.token_url} ")
    assert f"(client_id {CLIENT_ID!r})" in message
    for fragment in expected:
        assert fragment in message
    assert (failure.status_code, failure.error) == (status, error)
    assert upstream.seen == []
    assert len(token_endpoint.requests) == 1  # a redirect is not followed


async def test_an_unreachable_token_endpoint_raises_upstream_auth_error(upstream: Upstream) -> None:
    endpoint = TokenEndpoint(upstream, url=f"http://127.0.0.1:{free_port()}")
    async with upstream_client(upstream, oauth_auth(endpoint)) as client:
        failure = await auth_failure(client)

    assert "cannot reach it (ConnectError" in str(failure)
    assert failure.status_code is None


async def test_a_token_endpoint_silent_for_timeout_s_raises_upstream_auth_error(
    token_endpoint: TokenEndpoint, upstream: Upstream
) -> None:
    token_endpoint.gate = anyio.Event()  # never set during the test: the endpoint does not answer
    async with upstream_client(upstream, oauth_auth(token_endpoint, timeout_s=0.2)) as client:
        failure = await auth_failure(client)

    assert "no answer within 0.2 s (timeout_s)" in str(failure)


async def test_requests_waiting_on_a_failed_token_request_share_its_error_and_a_later_request_tries_again(
    token_endpoint: TokenEndpoint, upstream: Upstream
) -> None:
    token_endpoint.gate = anyio.Event()
    token_endpoint.respond = oauth_error(503, "temporarily_unavailable", "try later")
    failures: list[UpstreamAuthError] = []
    async with upstream_client(upstream, oauth_auth(token_endpoint)) as client:

        async def call() -> None:
            failures.append(await auth_failure(client))

        with anyio.fail_after(WAIT_S):
            async with anyio.create_task_group() as tasks:
                for _ in range(5):
                    tasks.start_soon(call)
                await token_endpoint.received.wait()
                await anyio.wait_all_tasks_blocked()
                token_endpoint.gate.set()
        assert len(token_endpoint.requests) == 1
        assert {(str(failure), failure.error) for failure in failures} == {
            (str(failures[0]), "temporarily_unavailable")
        }
        assert len(failures) == 5

        token_endpoint.respond = None
        assert (await get(client)).status_code == 200

    assert len(token_endpoint.requests) == 2


# --- secrecy ------------------------------------------------------------------------------------------


async def test_secrets_and_tokens_appear_in_no_repr_and_no_log(
    token_endpoint: TokenEndpoint, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    credentials = UpstreamCredentials(headers={"X-Api-Key": "api-key-value-42"}, oauth=oauth_config(token_endpoint))
    headers, auth = resolve(credentials, ENVIRON)
    async with upstream_client(upstream, auth, headers) as client:
        await get(client)
        upstream.valid.clear()  # a 401, a new token, a resend: every path that logs
        await get(client)
        token_endpoint.respond = oauth_error(401, "invalid_client", "bad secret")
        upstream.valid.clear()
        await auth_failure(client)
        shown = [repr(credentials), repr(auth), caplog.text]

    with pytest.raises(ValidationError) as inline_secret:
        OAuthClientCredentials.model_validate({**OAUTH, "client_secret": SECRET})
    with pytest.raises(ValidationError) as bad_header:
        UpstreamCredentials.model_validate({"headers": {"X-Api-Key": "api-key-value-42\n"}})
    shown += [str(inline_secret.value), str(bad_header.value)]

    assert len(token_endpoint.issued) == 2
    assert any("401" in record.getMessage() for record in caplog.records)  # the flow did log
    for text in shown:
        for secret in [SECRET, "api-key-value-42", *token_endpoint.issued]:
            assert secret not in text
