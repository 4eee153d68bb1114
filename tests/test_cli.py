"""`datapulse serve`: help, banner, generated token, secure defaults, and `python -m datapulse`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from datapulse.config import Settings
from tests.support.servers import TOKEN, bearer, spawn_datapulse

DATAPULSE = str(Path(sys.executable).parent / "datapulse")


def test_serve_help_documents_every_setting_and_its_environment_variable() -> None:
    out = subprocess.run([DATAPULSE, "serve", "--help"], capture_output=True, text=True, timeout=30, check=True).stdout
    for name in Settings.model_fields:
        if name == "app":
            assert "APP" in out
            continue
        assert "--" + name.replace("_", "-") in out, name
    assert "LOCAL_BEARER_TOKEN" in out
    assert "DATAPULSE_MAX_BODY_BYTES" in out.replace("\n", "").replace(" ", "")


def test_python_dash_m_datapulse_is_the_same_command() -> None:
    out = subprocess.run([sys.executable, "-m", "datapulse", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert "serve" in out.stdout


def test_invalid_options_are_refused_with_the_option_named() -> None:
    result = subprocess.run([DATAPULSE, "serve", "--port", "99999"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--port" in result.stderr
    bad_app = subprocess.run(
        [DATAPULSE, "serve", "no_such_module:app", "--token", "t"], capture_output=True, text=True, timeout=30
    )
    assert bad_app.returncode == 2
    assert "cannot import 'no_such_module'" in bad_app.stderr


def test_several_workers_without_redis_are_refused_because_sessions_could_not_be_shared() -> None:
    result = subprocess.run(
        [DATAPULSE, "serve", "--workers", "2", "--token", "t"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "--workers 2 needs cluster mode (--redis-url" in result.stderr


@pytest.mark.anyio
async def test_without_a_token_serve_generates_one_prints_it_once_and_requires_it() -> None:
    async with spawn_datapulse() as proc:
        async with httpx2.AsyncClient(base_url=proc.url, timeout=10) as client:
            assert (await client.get("/health")).status_code == 200
            text = "\n".join(proc.banner)
            token_lines = [line for line in proc.banner if "generated for this run" in line]
            assert len(token_lines) == 1
            token = token_lines[0].split("Bearer ", 1)[1].split()[0]
            assert text.count(token) == 2  # the auth line and the client configuration snippet
            assert (await client.get("/events?session_id=x", headers={"Accept": "application/json"})).status_code == 401
            ok = await client.post(
                "/message", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=bearer(token)
            )
            assert ok.status_code == 200
        assert token not in "".join(proc.stderr_lines)


@pytest.mark.anyio
async def test_the_banner_lists_endpoints_and_a_client_configuration_snippet() -> None:
    async with (
        spawn_datapulse(env={"LOCAL_BEARER_TOKEN": TOKEN}, module=True) as proc,
        httpx2.AsyncClient(base_url=proc.url, timeout=10) as client,
    ):
        assert (
            await client.post("/message", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=bearer())
        ).status_code == 200
    text = "\n".join(proc.banner)
    for path in ("/mcp", "/sse", "/events?session_id=", "/message?session_id=", "/health"):
        assert f"{proc.url}{path}" in text, path
    assert TOKEN not in text
    snippet = json.loads(text[text.index("{") :])
    assert snippet["mcpServers"]["datapulse"]["url"] == f"{proc.url}/mcp"
    assert snippet["mcpServers"]["datapulse"]["headers"]["Authorization"] == "Bearer ${DATAPULSE_TOKEN}"


@pytest.mark.anyio
async def test_serve_runs_a_user_app_named_module_colon_attribute() -> None:
    async with (
        spawn_datapulse(["tests.support.user_app:mcp"], env={"DATAPULSE_TOKEN": TOKEN}) as proc,
        httpx2.AsyncClient(base_url=proc.url, timeout=10) as client,
    ):
        response = await client.post(
            "/message",
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "shout", "arguments": {"word": "hey"}},
            },
            headers=bearer(),
        )
    assert response.json()["result"]["content"][0]["text"] == "HEY!"
    assert "serving user-app" in proc.banner[0]
