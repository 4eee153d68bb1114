"""``datapulse bridge --config FILE``: several stdio MCP servers on one port, each under its own path prefix with
its own filters, isolation and scopes; a real process, real children, the SDK's Python client and real JWTs."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from tests.support.bridging import bridge_toml, call, sdk_client
from tests.support.issuer import local_issuer
from tests.support.mcp_http import LEGACY, legacy_headers, legacy_initialize
from tests.support.processes import run_collecting
from tests.support.servers import REPO_ROOT, TOKEN, ServerProcess, bearer, spawn_datapulse

pytestmark = pytest.mark.anyio

TWO_SERVERS = {
    "defaults": {"env_allow": ["PATH", "HOME", "PYTHONPATH"], "command": None},
    "servers": {
        "alpha": {"scopes": "tool:admin_*=admin", "tools": {"deny": ["delete_*"]}},
        "beta": {"path": "/team/beta", "isolation": "shared", "tools": {"allow": ["echo", "pid"]}},
    },
}
"""alpha at /alpha (default path), per-session, its own scope rule; beta at /team/beta, shared, two tools."""


@asynccontextmanager
async def bridge_config(
    tmp_path: Path, config: Mapping[str, Any], *options: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[ServerProcess]:
    """``datapulse bridge --port 0 --config FILE OPTIONS`` with ``config`` written to FILE; ``env`` (default: the
    static test token) is added to its environment."""
    file = tmp_path / "bridges.toml"
    file.write_text(bridge_toml(config))
    async with spawn_datapulse(
        ["--config", str(file), *options],
        env={"PYTHONPATH": str(REPO_ROOT), **(env if env is not None else {"DATAPULSE_TOKEN": TOKEN})},
        command="bridge",
    ) as server:
        yield server


@pytest.mark.parametrize("transport", ["mcp", "sse"])
async def test_each_configured_server_is_served_under_its_own_prefix_with_its_own_filters(
    tmp_path: Path, transport: Literal["mcp", "sse"]
) -> None:
    async with bridge_config(tmp_path, TWO_SERVERS) as server:
        await server.banner.wait_for(lambda line: f"alpha: {server.url}/alpha/mcp " in line)
        await server.banner.wait_for(lambda line: f"beta: {server.url}/team/beta/mcp " in line)
        async with (
            sdk_client(server.url + "/alpha", transport) as alpha,
            sdk_client(server.url + "/team/beta", transport) as beta,
        ):
            alpha_tools = {tool.name for tool in (await alpha.list_tools()).tools}
            assert {"increment", "echo", "admin_reset"} <= alpha_tools
            assert "delete_everything" not in alpha_tools
            assert {tool.name for tool in (await beta.list_tools()).tools} == {"echo", "pid"}
            assert await call(alpha, "echo", {"message": "to alpha"}) == "to alpha"
            assert await call(beta, "echo", {"message": "to beta"}) == "to beta"
            assert await call(alpha, "pid") != await call(beta, "pid")  # a child of each server
            with pytest.raises(MCPError) as refused:
                await beta.call_tool("increment", {})
            assert "Unknown tool" in refused.value.error.message


async def test_a_session_opened_under_one_prefix_is_unknown_under_another(tmp_path: Path) -> None:
    async with (
        bridge_config(tmp_path, TWO_SERVERS) as server,
        httpx2.AsyncClient(base_url=server.url, headers=bearer(TOKEN), timeout=30) as http,
    ):
        http.base_url = httpx2.URL(server.url + "/alpha/")
        session_id = await legacy_initialize(http)
        ping = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping"})
        here = await http.post(server.url + "/alpha/mcp", content=ping, headers=legacy_headers(session_id))
        assert here.status_code == 200, here.text
        there = await http.post(server.url + "/team/beta/mcp", content=ping, headers=legacy_headers(session_id))
        assert there.status_code == 404, there.text
        assert "Session not found" in there.json()["error"]["message"]
        assert here.headers.get("mcp-protocol-version", LEGACY) == LEGACY


async def test_the_top_level_health_lists_every_server_and_other_paths_are_not_found(tmp_path: Path) -> None:
    async with (
        bridge_config(tmp_path, TWO_SERVERS) as server,
        httpx2.AsyncClient(base_url=server.url, timeout=30) as http,
    ):
        health = await http.get("/health")
        assert health.status_code == 200
        assert health.json()["servers"] == {
            "alpha": {"path": "/alpha", "status": "ok"},
            "beta": {"path": "/team/beta", "status": "ok"},
        }
        assert (await http.get("/ready")).json() == {"status": "ready", "problems": []}
        assert (await http.get("/team/beta/health")).json()["status"] == "ok"  # each server's own, too
        unknown = await http.post("/mcp", content=b"{}", headers=bearer(TOKEN))
        assert unknown.status_code == 404
        assert unknown.json()["error"]["message"] == "Not Found: nothing is served at '/mcp'"
        unauthenticated = await http.post("/alpha/mcp", content=b"{}")
        assert unauthenticated.status_code == 401  # each server keeps DataPulse's auth


async def test_a_servers_own_scope_rules_replace_the_command_lines_and_the_others_keep_them(tmp_path: Path) -> None:
    config = {
        "defaults": TWO_SERVERS["defaults"],
        "servers": {"alpha": {"scopes": "tool:admin_*=admin"}, "beta": {"path": "/beta"}},
    }
    async with local_issuer(keys=("EC",)) as issuer:
        options = ["--jwt-issuer", issuer.url, "--jwt-audience", issuer.audience, "--scopes", "tool:pid=ops"]
        async with bridge_config(tmp_path, config, *options, env={}) as server:
            plain = issuer.sign(sub="plain")
            async with (
                sdk_client(server.url + "/alpha", token=plain) as alpha,
                sdk_client(server.url + "/beta", token=plain) as beta,
            ):
                alpha_tools = {tool.name for tool in (await alpha.list_tools()).tools}
                assert "admin_reset" not in alpha_tools  # alpha's own rule
                assert "pid" in alpha_tools  # the command line's rule does not apply to alpha
                beta_tools = {tool.name for tool in (await beta.list_tools()).tools}
                assert "pid" not in beta_tools  # beta inherits the command line's rule
                assert "admin_reset" in beta_tools
                with pytest.raises(MCPError) as refused:
                    await alpha.call_tool("admin_reset", {})
                assert "admin" in refused.value.error.message
            async with sdk_client(server.url + "/alpha", token=issuer.sign(sub="root", scope="admin")) as admin:
                assert await call(admin, "admin_reset") != ""


async def test_a_configured_server_whose_command_does_not_work_stops_start_up_naming_it(tmp_path: Path) -> None:
    broken = {
        "defaults": TWO_SERVERS["defaults"],
        "servers": {"alpha": {}, "broken": {"command": sys.executable, "args": ["-c", "raise SystemExit(3)"]}},
    }
    file = tmp_path / "bridges.toml"
    file.write_text(bridge_toml(broken))
    result = await run_collecting(_datapulse_bridge("--config", str(file)), cwd=REPO_ROOT, timeout_s=60)
    assert result.returncode == 1, result
    assert "the bridged server 'broken' does not work" in result.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--config", "bridges.toml", "--", "python"], "either --config FILE or a COMMAND"),
        (["--config", "bridges.toml", "--isolation", "shared"], "--isolation: with --config, set this per server"),
        ([], "nothing to bridge"),
        (["--config", "missing.toml"], "cannot read it"),
        (["--workers", "2", "--", "python"], "--workers: datapulse bridge serves from one process"),
    ],
)
async def test_contradictory_or_missing_bridge_arguments_are_refused_with_a_message(
    tmp_path: Path, arguments: Sequence[str], message: str
) -> None:
    (tmp_path / "bridges.toml").write_text(bridge_toml(TWO_SERVERS))
    result = await run_collecting(_datapulse_bridge(*arguments), cwd=tmp_path, timeout_s=60)
    assert result.returncode == 2, result
    assert message in result.stderr


def _datapulse_bridge(*arguments: str) -> list[str]:
    return [str(Path(sys.executable).parent / "datapulse"), "bridge", "--port", "0", "--token", TOKEN, *arguments]
