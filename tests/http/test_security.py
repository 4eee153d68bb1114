"""Security on a real server: JWTs from a real local issuer, RFC 9728 metadata, scopes, hijack attempts,
rate limits, stream caps, stream tickets and CORS."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import MCPServer

from tests.support.issuer import LocalIssuer, local_issuer
from tests.support.mcp_http import (
    initialize_request,
    jsonrpc,
    legacy_call,
    legacy_headers,
    legacy_initialize,
    modern_call,
)
from tests.support.redis_server import free_port
from tests.support.servers import ALICE_TOKEN, BOB_TOKEN, RunningServer, make_settings, serve_in_process
from tests.support.sse import open_sse

pytestmark = pytest.mark.anyio

SCOPES = "tool:admin_*=admin;resource:secret://*=secret;prompt:private_*=private"


def build_scoped_server() -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer("scoped")

    @server.tool()
    async def whoami() -> str:
        token = get_access_token()
        assert token is not None
        return json.dumps({"client_id": token.client_id, "subject": token.subject, "scopes": token.scopes})

    @server.tool()
    async def echo(message: str) -> str:
        return message

    @server.tool()
    async def admin_reset() -> str:
        return "reset"

    @server.resource("public://readme")
    def readme() -> str:
        return "hello"

    @server.resource("secret://key")
    def key() -> str:
        return "s3cr3t"

    @server.prompt()
    def greet() -> str:
        return "hi"

    @server.prompt()
    def private_notes() -> str:
        return "notes"

    return server


@pytest.fixture
async def issuer() -> AsyncIterator[LocalIssuer]:
    async with local_issuer(keys=("RSA", "EC", "OKP")) as running:
        yield running


def jwt_settings(issuer: LocalIssuer, **overrides: Any) -> Any:
    return make_settings(jwt_issuer=issuer.url, jwt_audience=issuer.audience, scopes=SCOPES, **overrides)


@pytest.fixture
async def server(issuer: LocalIssuer) -> AsyncIterator[RunningServer]:
    async with serve_in_process(jwt_settings(issuer), server=build_scoped_server()) as running:
        yield running


def result_of(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_jwt_from_the_issuer_is_accepted_and_handlers_see_its_subject_client_and_scopes(
    server: RunningServer, issuer: LocalIssuer
) -> None:
    for kind in ("RSA", "EC", "OKP"):
        kid = next(key.kid for key in issuer.keys.values() if key.kind == kind)
        token = issuer.sign(kid=kid, sub="carol", client_id="app-1", scope="read admin")
        async with server.client(token=token) as client:
            body = result_of(await modern_call(client, "tools/call", {"name": "whoami", "arguments": {}}))
        assert json.loads(body["result"]["content"][0]["text"]) == {
            "client_id": "app-1",
            "subject": "carol",
            "scopes": ["admin", "read"],
        }


@pytest.mark.parametrize(
    ("overrides", "described"),
    [
        ({"exp": 1_000_000}, "expired"),
        ({"aud": "https://someone-else.example/mcp"}, "not meant for this server"),
        ({"iss": "https://evil.example"}, "issuer"),
    ],
)
async def test_an_invalid_jwt_is_401_with_a_reason_and_the_metadata_url(
    server: RunningServer, issuer: LocalIssuer, overrides: dict[str, Any], described: str
) -> None:
    async with server.client(token=issuer.sign(**overrides)) as client:
        response = await modern_call(client, "tools/list")
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge
    assert f'resource_metadata="{server.url}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert described in response.json()["error"]["message"]


async def test_an_unreachable_jwks_is_a_503_with_retry_after_not_a_hang(issuer: LocalIssuer) -> None:
    settings = jwt_settings(issuer, jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json", jwks_timeout_s=2)
    async with (
        serve_in_process(settings, server=build_scoped_server()) as running,
        running.client(token=issuer.sign()) as client,
        running.client(token=ALICE_TOKEN) as static,
    ):
        response = await modern_call(client, "tools/list")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert "signing keys" in response.json()["error"]["message"]
        assert (await modern_call(static, "tools/list")).status_code == 200  # static tokens work beside JWT


async def test_protected_resource_metadata_is_public_at_the_root_and_path_aware_locations(
    server: RunningServer, issuer: LocalIssuer
) -> None:
    async with server.client(token=None) as client:
        for path, resource in [("", ""), ("/mcp", "/mcp"), ("/sse", "/sse")]:
            response = await client.get(
                f"/.well-known/oauth-protected-resource{path}", headers={"Origin": "https://inspector.example"}
            )
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == "*"
            assert response.json() == {
                "resource": server.url + resource,
                "authorization_servers": [issuer.url],
                "scopes_supported": ["admin", "secret", "private"],
                "bearer_methods_supported": ["header"],
                "resource_name": "scoped",
            }


async def test_a_token_without_a_required_scope_is_403_insufficient_scope_naming_it(issuer: LocalIssuer) -> None:
    settings = jwt_settings(issuer, required_scopes="mcp:use")
    async with serve_in_process(settings, server=build_scoped_server()) as running:
        async with running.client(token=issuer.sign(scope="read")) as client:
            refused = await modern_call(client, "tools/list")
        assert refused.status_code == 403
        challenge = refused.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="datapulse", error="insufficient_scope", scope="mcp:use"')
        assert refused.json()["error"]["data"] == {"requiredScopes": ["mcp:use"]}
        async with running.client(token=issuer.sign(scope="mcp:use")) as client:
            assert (await modern_call(client, "tools/list")).status_code == 200
        async with running.client(token=None) as client:
            missing = await modern_call(client, "tools/list")
        assert 'scope="mcp:use"' in missing.headers["www-authenticate"]


async def test_lists_show_a_principal_only_what_its_scopes_allow_and_uses_of_the_rest_are_refused(
    server: RunningServer, issuer: LocalIssuer
) -> None:
    async with server.client(token=issuer.sign(scope="read")) as client:
        tools = result_of(await modern_call(client, "tools/list"))["result"]["tools"]
        assert sorted(tool["name"] for tool in tools) == ["echo", "whoami"]
        resources = result_of(await modern_call(client, "resources/list"))["result"]["resources"]
        assert [r["uri"] for r in resources] == ["public://readme"]
        prompts = result_of(await modern_call(client, "prompts/list"))["result"]["prompts"]
        assert [p["name"] for p in prompts] == ["greet"]
        uses: list[tuple[str, dict[str, Any], str]] = [
            ("tools/call", {"name": "admin_reset", "arguments": {}}, "admin"),
            ("resources/read", {"uri": "secret://key"}, "secret"),
            ("prompts/get", {"name": "private_notes"}, "private"),
        ]
        for method, params, scope in uses:
            error = result_of(await modern_call(client, method, params))["error"]
            assert error["code"] == -32001
            assert error["data"] == {"requiredScopes": [scope]}
            assert f"needs the scope(s) {scope}" in error["message"]
        echoed = result_of(await modern_call(client, "tools/call", {"name": "echo", "arguments": {"message": "x"}}))
        assert echoed["result"]["content"][0]["text"] == "x"
    async with server.client(token=issuer.sign(scope="admin secret private")) as client:
        tools = result_of(await modern_call(client, "tools/list"))["result"]["tools"]
        assert "admin_reset" in {tool["name"] for tool in tools}
        reset = result_of(await modern_call(client, "tools/call", {"name": "admin_reset", "arguments": {}}))
        assert reset["result"]["content"][0]["text"] == "reset"
        read = result_of(await modern_call(client, "resources/read", {"uri": "secret://key"}))
        assert read["result"]["contents"][0]["text"] == "s3cr3t"
    async with server.client(token=ALICE_TOKEN) as client:  # a static token is an operator credential
        tools = result_of(await modern_call(client, "tools/list"))["result"]["tools"]
        assert "admin_reset" in {tool["name"] for tool in tools}


async def test_the_scope_policy_also_applies_inside_a_2025_session(server: RunningServer, issuer: LocalIssuer) -> None:
    async with server.client(token=issuer.sign(scope="read")) as client:
        session_id = await legacy_initialize(client)
        listed = result_of(await legacy_call(client, session_id, "tools/list", {}))
        assert "admin_reset" not in {tool["name"] for tool in listed["result"]["tools"]}
        refused = result_of(await legacy_call(client, session_id, "tools/call", {"name": "admin_reset"}, 2))
        assert refused["error"]["data"] == {"requiredScopes": ["admin"]}


async def test_a_second_principal_using_the_first_ones_session_id_gets_404_on_every_endpoint(
    server: RunningServer, issuer: LocalIssuer
) -> None:
    alice_jwt, mallory_jwt = issuer.sign(sub="alice"), issuer.sign(sub="mallory")
    async with server.client(token=alice_jwt) as alice:
        session_id = await legacy_initialize(alice)
        listed = {"type": "list_tools", "request_id": "r1", "data": {}}
        opened = await alice.post("/message?session_id=api-1", json=listed)
        assert opened.status_code == 202  # the DataPulse API session api-1 now belongs to alice's JWT principal
        async with open_sse(alice, "GET", "/sse") as stream:
            endpoint = await stream.next_event()
            messages_path = endpoint.data
            # the same subject through a static token is another principal too
            for token in (mallory_jwt, ALICE_TOKEN, BOB_TOKEN):
                async with server.client(token=token) as other:
                    attempts = [
                        await legacy_call(other, session_id, "tools/list", {}),
                        await other.delete("/mcp", headers=legacy_headers(session_id)),
                        await other.get("/mcp", headers={**legacy_headers(session_id), "Accept": "text/event-stream"}),
                        await other.post(messages_path, content=jsonrpc("ping"), headers=json_headers()),
                        await other.post("/message?session_id=api-1", json=listed),
                        await other.get("/events?session_id=api-1", headers={"Accept": "text/event-stream"}),
                    ]
                    assert [a.status_code for a in attempts] == [404] * len(attempts)
        assert result_of(await legacy_call(alice, session_id, "tools/list", {}))["result"]["tools"]


def json_headers() -> dict[str, str]:
    return {"Content-Type": "application/json"}


async def test_a_stream_ticket_opens_one_stream_as_its_principal_and_never_twice(server: RunningServer) -> None:
    async with server.client(token=ALICE_TOKEN) as alice:
        issued = await alice.post("/tickets")
        assert issued.status_code == 201
        assert issued.headers["cache-control"] == "no-store"
        ticket = issued.json()["ticket"]
        assert issued.json()["expires_in"] == 60
    async with server.client(token=None) as browser:
        async with open_sse(browser, "GET", f"/sse?ticket={ticket}") as stream:
            assert stream.response.status_code == 200
            messages_path = (await stream.next_event()).data
            async with server.client(token=ALICE_TOKEN) as alice:
                accepted = await alice.post(messages_path, content=jsonrpc("ping"), headers=json_headers())
                assert accepted.status_code == 202
            async with server.client(token=BOB_TOKEN) as bob:
                refused = await bob.post(messages_path, content=jsonrpc("ping"), headers=json_headers())
                assert refused.status_code == 404
        again = await browser.get(f"/sse?ticket={ticket}", headers={"Accept": "text/event-stream"})
        assert again.status_code == 401
        assert "already used" in again.json()["error"]["message"]
        on_post = await browser.post(f"/message?session_id=x&ticket={ticket}", content=jsonrpc("ping"))
        assert on_post.status_code == 401  # tickets open stream GETs only


async def test_cors_preflight_is_answered_for_allowed_origins_and_exposes_the_session_header(
    issuer: LocalIssuer,
) -> None:
    settings = jwt_settings(issuer, cors_origins="https://app.example")
    async with serve_in_process(settings, server=build_scoped_server()) as running:
        async with running.client(token=None) as client:
            preflight = await client.options(
                "/mcp",
                headers={
                    "Origin": "https://app.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, content-type, mcp-session-id",
                },
            )
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "https://app.example"
            assert "mcp-session-id" in preflight.headers["access-control-allow-headers"].lower()
            foreign = await client.options(
                "/mcp", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
            )
            assert foreign.status_code == 400
        async with running.client(token=ALICE_TOKEN) as browser:
            init = await browser.post(
                "/mcp",
                content=initialize_request(),
                headers={**legacy_headers(), "Origin": "https://app.example"},
            )
            assert init.status_code == 200
            assert "mcp-session-id" in init.headers["access-control-expose-headers"].lower()
            blocked = await browser.post(
                "/mcp", content=jsonrpc("ping"), headers={**legacy_headers(), "Origin": "https://evil.example"}
            )
            assert blocked.status_code == 403


async def test_over_the_rate_limit_a_post_is_429_with_retry_after_and_a_tool_limit_is_a_jsonrpc_error() -> None:
    settings = make_settings(rate_limit="4/hour", tool_rate_limits="echo=1/hour")
    async with (
        serve_in_process(settings, server=build_scoped_server()) as running,
        running.client(token=ALICE_TOKEN) as alice,
        running.client(token=BOB_TOKEN) as bob,
    ):
        first = result_of(await modern_call(alice, "tools/call", {"name": "echo", "arguments": {"message": "a"}}))
        assert first["result"]["content"][0]["text"] == "a"
        limited = result_of(await modern_call(alice, "tools/call", {"name": "echo", "arguments": {"message": "b"}}))
        assert limited["error"]["code"] == -32000
        assert 1 <= limited["error"]["data"]["retryAfterSeconds"] <= 3600
        assert "echo" in limited["error"]["message"]
        assert (await modern_call(alice, "tools/list")).status_code == 200
        assert (await modern_call(alice, "tools/list")).status_code == 200
        refused = await modern_call(alice, "tools/list")
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 3600
        assert refused.json()["error"]["message"].startswith("Too Many Requests")
        assert (await modern_call(bob, "tools/list")).status_code == 200  # per principal


async def test_a_principal_over_its_stream_cap_gets_429_and_its_other_streams_stay_open() -> None:
    async with serve_in_process(make_settings(max_streams_per_principal=1)) as running:
        async with running.client(token=ALICE_TOKEN) as alice, open_sse(alice, "GET", "/sse") as first:
            assert first.response.status_code == 200
            await first.next_event()
            second = await alice.get("/sse", headers={"Accept": "text/event-stream"})
            assert second.status_code == 429
            assert second.headers["retry-after"] == "1"
            async with running.client(token=BOB_TOKEN) as bob, open_sse(bob, "GET", "/sse") as other:
                assert other.response.status_code == 200
        async with running.client(token=ALICE_TOKEN) as alice, open_sse(alice, "GET", "/sse") as again:
            assert again.response.status_code == 200  # the slot came back when the first stream ended
