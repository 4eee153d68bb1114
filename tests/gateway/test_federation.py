"""``datapulse proxy --config FILE``: two real HTTP upstreams of different eras and one stdio bridge composed into one
server, reached with the SDK's Python client; plus the pure parts (prefix checks, per-member settings) as tables."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import TextResourceContents, ToolListChangedNotification

from datapulse.bridge.config import BridgedServer
from datapulse.bridge.federation import check_prefixes, federation_settings
from datapulse.bridge.proxy import CHILD_UNAVAILABLE
from datapulse.config import ConfigurationError, Settings
from tests.gateway.test_proxy import client
from tests.support.bridging import CALL_TIMEOUT_S, STDIO_SERVER, Notifications, bridge_toml, call
from tests.support.http_upstream import Upstream, spawn_upstream
from tests.support.processes import run_collecting
from tests.support.servers import REPO_ROOT, TOKEN, ServerProcess, spawn_datapulse

pytestmark = pytest.mark.anyio

OWN_TOOLS: Final = {
    *("echo", "increment", "pid", "crash", "slow", "sample", "log", "change_tools", "touch"),
    *("admin_reset", "delete_everything"),
}


def federation_toml(modern: Upstream, legacy: Upstream) -> str:
    return bridge_toml(
        {
            "defaults": {"start_timeout_s": 20},
            "servers": {
                "modern": {"url": modern.mcp_url, "command": None, "args": None, "restart_backoff_s": 5},
                "legacy": {"url": legacy.mcp_url, "command": None, "args": None, "prefix": "old"},
                "local": {"env_allow": "PATH,HOME,PYTHONPATH", "tools": {"deny": ["crash"]}},
            },
        }
    )


@asynccontextmanager
async def federation(tmp_path: Path) -> AsyncIterator[tuple[ServerProcess, Upstream, Upstream]]:
    async with spawn_upstream("2026") as modern, spawn_upstream("2024") as legacy:
        config = tmp_path / "federation.toml"
        config.write_text(federation_toml(modern, legacy))
        async with spawn_datapulse(
            ["--config", str(config)], env={"DATAPULSE_TOKEN": TOKEN, "PYTHONPATH": str(REPO_ROOT)}, command="proxy"
        ) as server:
            yield server, modern, legacy


@pytest.mark.parametrize("client_era", ["2026", "2025"])
async def test_two_upstreams_and_a_stdio_bridge_are_one_server_with_prefixed_names(
    tmp_path: Path, client_era: str
) -> None:
    async with federation(tmp_path) as (server, _, _), client(server, client_era) as connected:  # type: ignore[arg-type]
        names = {tool.name for tool in (await connected.list_tools()).tools}
        expected = {f"{prefix}_{name}" for prefix in ("modern", "old", "local") for name in OWN_TOOLS}
        assert names == expected - {"local_crash"}  # each member keeps its own filters
        for prefix in ("modern", "old", "local"):
            assert await call(connected, f"{prefix}_echo", {"message": f"via {prefix}"}) == f"via {prefix}"
        pids = {await call(connected, f"{prefix}_pid") for prefix in ("modern", "old", "local")}
        assert len(pids) == 3  # three different processes served them
        prompts = {prompt.name for prompt in (await connected.list_prompts()).prompts}
        assert prompts == {"modern_greet", "old_greet", "local_greet"}
        greeting = await connected.get_prompt("old_greet", {"name": "Ada"})
        assert "Ada" in str(greeting.messages[0].content)
        read = await connected.read_resource("stdio://info")  # every member has it: the first in file order
        content = read.contents[0]
        assert isinstance(content, TextResourceContents)
        assert content.text == "DataPulse stdio test server"
        with pytest.raises(MCPError) as unknown:
            await connected.call_tool("nobody_echo", {"message": "x"})
        assert unknown.value.error.code == -32602
        assert "Unknown tool: nobody_echo" in unknown.value.error.message


async def test_an_upstream_that_is_down_leaves_the_others_serving_and_ready_names_it(tmp_path: Path) -> None:
    async with federation(tmp_path) as (server, modern, _), client(server, "2025") as connected:
        assert await call(connected, "modern_echo", {"message": "up"}) == "up"
        await modern.kill()
        with pytest.raises(MCPError) as failed:
            await connected.call_tool("modern_echo", {"message": "down"})
        assert failed.value.error.code == CHILD_UNAVAILABLE
        assert "modern" in failed.value.error.message
        # The others serve on, and the down member is left out of lists (its restart backoff refuses at once).
        assert await call(connected, "old_echo", {"message": "still"}) == "still"
        assert await call(connected, "local_echo", {"message": "still"}) == "still"
        names = {tool.name for tool in (await connected.list_tools()).tools}
        assert "old_echo" in names
        assert not any(name.startswith("modern_") for name in names)
        with pytest.raises(MCPError) as refused:
            await connected.call_tool("modern_echo", {"message": "again"})
        assert refused.value.error.code == CHILD_UNAVAILABLE
        async with httpx2.AsyncClient(timeout=CALL_TIMEOUT_S) as http:
            ready = await http.get(server.url + "/ready")
        assert ready.status_code == 200, ready.text
        upstreams = ready.json()["upstreams"]
        assert upstreams["legacy"] == upstreams["local"] == "ok"  # by server name, not prefix
        assert upstreams["modern"].startswith("down: ")


async def test_prefixes_that_could_make_names_collide_are_refused_at_start(tmp_path: Path) -> None:
    config = tmp_path / "federation.toml"
    config.write_text(
        bridge_toml(
            {
                "defaults": {},
                "servers": {"a": {"prefix": "gh"}, "b": {"prefix": "gh_issues"}},
            }
        )
    )
    finished = await run_collecting(
        [str(REPO_ROOT / ".venv" / "bin" / "datapulse"), "proxy", "--port", "0", "--config", str(config)],
        timeout_s=60,
        env={"DATAPULSE_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
    )
    assert finished.returncode == 2, finished
    assert "the prefixes 'gh_issues' (servers.b) and 'gh' (servers.a) nest" in finished.stderr, finished.stderr


def spec(name: str, **fields: object) -> BridgedServer:
    return BridgedServer.model_validate({"name": name, "command": STDIO_SERVER[0], **fields})


@pytest.mark.parametrize(
    ("prefixes", "refused"),
    [
        (["github", "files"], None),
        (["github", "git"], None),  # "git_" does not start "github_"
        (["a", "a"], "both use the prefix 'a'"),
        (["a", "a_b"], "nest"),
        (["a_b", "a"], "nest"),
        (["x_y_z", "x_y"], "nest"),
    ],
)
def test_prefixes_are_accepted_only_when_no_name_could_belong_to_two_servers(
    prefixes: list[str], refused: str | None
) -> None:
    specs = [spec(f"s{index}", prefix=prefix) for index, prefix in enumerate(prefixes)]
    if refused is None:
        check_prefixes(specs)
        return
    with pytest.raises(ConfigurationError, match=refused):
        check_prefixes(specs)


@pytest.mark.parametrize(
    ("members", "ours", "scopes", "tool_limits"),
    [
        ([{}], {}, None, None),
        (
            [{"scopes": "tool:create_*=gh:write;resource:file:///*=files:read;prompt:p=x"}],
            {},
            "tool:s0_create_*=gh:write;resource:file:///*=files:read;prompt:s0_p=x",
            None,
        ),
        ([{"prefix": "gh", "rate_limit": "10/minute"}, {}], {}, None, "gh_*=10/minute"),
        (
            [{"scopes": "tool:*=a"}, {"rate_limit": "1/second"}],
            {"scopes": "tool:*=b", "tool_rate_limits": "*=5/second"},
            "tool:s0_*=a;tool:*=b",
            "s1_*=1/second,*=5/second",
        ),
    ],
)
def test_each_members_scopes_and_rate_limit_become_rules_on_its_prefixed_names_ahead_of_the_commands(
    members: list[dict[str, object]], ours: dict[str, str], scopes: str | None, tool_limits: str | None
) -> None:
    settings = Settings(token="t-0123456789abcdef", **ours)  # type: ignore[arg-type]
    result = federation_settings(settings, [spec(f"s{index}", **fields) for index, fields in enumerate(members)])
    assert result.scopes == (scopes if scopes is not None else ours.get("scopes"))
    assert result.tool_rate_limits == (tool_limits if tool_limits is not None else ours.get("tool_rate_limits"))


@pytest.mark.parametrize("prefix", ["modern", "old", "local"])
async def test_a_list_change_of_any_member_reaches_the_clients_session(tmp_path: Path, prefix: str) -> None:
    notifications = Notifications()
    async with (
        federation(tmp_path) as (server, _, _),
        client(server, "2025", message_handler=notifications) as connected,
    ):
        assert await call(connected, f"{prefix}_change_tools") == "changed"
        await notifications.wait_for(ToolListChangedNotification)
