"""Authentication and DNS-rebinding protection on every endpoint."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from tests.support.mcp_http import jsonrpc, legacy_headers, modern_headers
from tests.support.servers import ALICE_TOKEN, TOKEN, RunningServer, make_settings, serve_in_process

pytestmark = pytest.mark.anyio

ENDPOINTS = [
    ("POST", "/mcp", legacy_headers()),
    ("POST", "/mcp", modern_headers("tools/list")),
    ("GET", "/mcp", {"Accept": "text/event-stream", "Mcp-Session-Id": "x"}),
    ("DELETE", "/mcp", {"Mcp-Session-Id": "x"}),
    ("GET", "/sse", {"Accept": "text/event-stream"}),
    ("POST", "/messages?session_id=x", {"Content-Type": "application/json"}),
    ("GET", "/events?session_id=x", {"Accept": "text/event-stream"}),
    ("POST", "/message?session_id=x", {"Content-Type": "application/json"}),
    ("POST", "/message", {"Content-Type": "application/json"}),
]


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with serve_in_process(make_settings(log_level="info")) as running:
        yield running


@pytest.mark.parametrize(("method", "path", "headers"), ENDPOINTS)
async def test_every_endpoint_but_health_needs_a_valid_bearer_token(
    server: RunningServer, method: str, path: str, headers: dict[str, str]
) -> None:
    async with server.client(token=None) as client:
        missing = await client.request(method, path, headers=headers, content=jsonrpc("tools/list"))
        assert missing.status_code == 401
        metadata = f'resource_metadata="{server.url}/.well-known/oauth-protected-resource/mcp"'
        assert missing.headers["www-authenticate"] == f'Bearer realm="datapulse", {metadata}'
        assert missing.json()["error"]["message"].startswith("Unauthorized")
        wrong = await client.request(
            method, path, headers={**headers, "Authorization": "Bearer not-a-token"}, content=jsonrpc("tools/list")
        )
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == (
            'Bearer realm="datapulse", error="invalid_token", '
            f'error_description="the bearer token is not valid", {metadata}'
        )
        basic = await client.request(
            method, path, headers={**headers, "Authorization": f"Basic {TOKEN}"}, content=jsonrpc("tools/list")
        )
        assert basic.status_code == 401
        assert (await client.get("/health")).status_code == 200


async def test_tokens_in_urls_are_refused_even_when_valid(server: RunningServer) -> None:
    async with server.client(token=None) as client:
        for param in ("access_token", "token", "api_key"):
            response = await client.get(
                f"/events?session_id=x&{param}={TOKEN}", headers={"Accept": "text/event-stream"}
            )
            assert response.status_code == 401
            assert "not accepted in URLs" in response.json()["error"]["message"]


async def test_token_values_never_reach_the_logs(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with server.client(token="leaky-secret-value") as bad, server.client(ALICE_TOKEN) as good:
        await bad.post("/mcp", content=jsonrpc("tools/list"), headers=legacy_headers())
        await good.post("/message", content=jsonrpc("tools/list"), headers={"Content-Type": "application/json"})
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "invalid bearer token (unknown_token)" in text
    assert "leaky-secret-value" not in text
    assert ALICE_TOKEN not in text


async def test_foreign_hosts_are_misdirected_and_foreign_origins_forbidden(server: RunningServer) -> None:
    async with server.client() as client:
        rebinding = await client.post(
            "/mcp", content=jsonrpc("tools/list"), headers={**legacy_headers(), "Host": "evil.example:8000"}
        )
        assert rebinding.status_code == 421
        assert "allowed_hosts" in rebinding.json()["error"]["message"]
        cross_origin = await client.post(
            "/mcp", content=jsonrpc("tools/list"), headers={**legacy_headers(), "Origin": "https://evil.example"}
        )
        assert cross_origin.status_code == 403
        local_origin = await client.post(
            "/message",
            content=jsonrpc("tools/list"),
            headers={"Content-Type": "application/json", "Origin": "http://localhost:5173"},
        )
        assert local_origin.status_code == 200
        health_from_evil = await client.get("/health", headers={"Host": "evil.example"})
        assert health_from_evil.status_code == 421


async def test_behind_a_trusted_proxy_the_forwarded_host_is_checked() -> None:
    settings = make_settings(
        allowed_hosts="mcp.example.com", trusted_proxies="127.0.0.1", allowed_origins="https://app.example.com"
    )
    async with serve_in_process(settings) as running, running.client() as client:
        body = jsonrpc("tools/list")
        headers = {"Content-Type": "application/json"}
        proxied = await client.post(
            "/message", content=body, headers={**headers, "X-Forwarded-Host": "mcp.example.com"}
        )
        assert proxied.status_code == 200
        direct = await client.post("/message", content=body, headers=headers)
        assert direct.status_code == 421
        spoofed = await client.post("/message", content=body, headers={**headers, "X-Forwarded-Host": "evil.example"})
        assert spoofed.status_code == 421
        app_origin = await client.post(
            "/message",
            content=body,
            headers={**headers, "X-Forwarded-Host": "mcp.example.com", "Origin": "https://app.example.com"},
        )
        assert app_origin.status_code == 200


async def test_forwarded_host_from_an_untrusted_peer_is_ignored() -> None:
    settings = make_settings(allowed_hosts="mcp.example.com", trusted_proxies="10.0.0.0/8")
    async with serve_in_process(settings) as running, running.client() as client:
        response = await client.post(
            "/message",
            content=jsonrpc("tools/list"),
            headers={"Content-Type": "application/json", "X-Forwarded-Host": "mcp.example.com"},
        )
        assert response.status_code == 421


async def test_insecure_no_auth_serves_everyone_as_anonymous() -> None:
    settings = make_settings(token=None, tokens=None, insecure_no_auth=True)
    async with serve_in_process(settings) as running, running.client(token=None) as client:
        response = await client.post(
            "/message", content=jsonrpc("tools/list"), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 200
