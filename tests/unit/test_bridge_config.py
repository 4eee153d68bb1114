"""Bridge configuration: `BridgedServer` validation and `load_bridge_config` on real TOML files, with
defaults, path rules, and errors that name the file and the offending key."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import datapulse.bridge.config as config_module
from datapulse.bridge.config import RESERVED_PATHS, BridgedServer, load_bridge_config
from datapulse.bridge.environment import DEFAULT_ENV_ALLOW
from datapulse.bridge.filters import BridgeFilters, NameFilter
from datapulse.config import ConfigurationError

GITHUB = '[servers.github]\ncommand = "npx"\n'


def write(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "bridge.toml"
    file.write_text(textwrap.dedent(text), encoding="utf-8")
    return file


def load(tmp_path: Path, text: str) -> list[BridgedServer]:
    return load_bridge_config(write(tmp_path, text))


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load(tmp_path, text)
    return str(caught.value)


def test_the_docstring_example_loads_as_documented(tmp_path: Path) -> None:
    assert config_module.__doc__ is not None
    example = config_module.__doc__.split("Example bridge file::\n")[1].split("\nEvery key")[0]
    github, files, search = load(tmp_path, example)
    assert (github.name, github.command, github.args) == (
        "github",
        "npx",
        ("-y", "@modelcontextprotocol/server-github"),
    )
    assert (github.path, github.isolation) == ("/github", "per-session")
    assert github.env == {"GITHUB_TOKEN": "..."}
    assert github.env_allow == ("PATH", "HOME")
    assert not github.filters.permits("tool", "delete_repo")
    assert github.filters.permits("tool", "create_issue")
    assert github.scopes == "tool:create_*=github:write"
    assert (files.name, files.command, files.args) == ("files", "uvx", ("mcp-server-filesystem", "/srv/data"))
    assert (files.path, files.isolation) == ("/files", "shared")
    assert files.filters.permits("resource", "file:///srv/data/docs/a.md")
    assert not files.filters.permits("resource", "file:///srv/data/private/a.md")
    assert github.start_timeout_s == files.start_timeout_s == 20.0  # from [defaults]
    assert github.idle_timeout_s == files.idle_timeout_s == 300.0
    assert (search.url, search.command, search.transport) == ("https://search.example.com/mcp", None, "auto")
    assert (search.path, search.request_timeout_s, search.remote) == ("/search", 60.0, True)


def test_a_server_with_only_a_command_gets_every_default(tmp_path: Path) -> None:
    (server,) = load(tmp_path, GITHUB)
    assert server == BridgedServer(
        name="github",
        command="npx",
        args=(),
        path="/github",
        isolation="per-session",
        env={},
        env_allow=DEFAULT_ENV_ALLOW,
        cwd=None,
        start_timeout_s=30.0,
        max_children=100,
        idle_timeout_s=600.0,
        restart_backoff_s=0.5,
        max_restart_backoff_s=30.0,
        tools=NameFilter(),
        resources=NameFilter(),
        prompts=NameFilter(),
        scopes=None,
    )
    assert server.filters == BridgeFilters()


@pytest.mark.parametrize(
    ("table", "path"),
    [
        ("[servers.github]", "/github"),
        ('[servers."gh.v2"]', "/gh.v2"),
        ("[servers.Files_1]", "/Files_1"),
    ],
)
def test_the_path_defaults_to_slash_and_the_server_name(tmp_path: Path, table: str, path: str) -> None:
    (server,) = load(tmp_path, f'{table}\ncommand = "x"\n')
    assert server.path == path


def test_servers_come_back_in_file_order(tmp_path: Path) -> None:
    text = "".join(f'[servers.{name}]\ncommand = "x"\n' for name in ("zeta", "alpha", "mid"))
    assert [server.name for server in load(tmp_path, text)] == ["zeta", "alpha", "mid"]


@pytest.mark.parametrize(
    ("defaults", "server", "field", "value"),
    [
        ("start_timeout_s = 5", "", "start_timeout_s", 5.0),
        ("start_timeout_s = 5", "start_timeout_s = 7.5", "start_timeout_s", 7.5),  # the server's own value wins
        ('isolation = "shared"', "", "isolation", "shared"),
        ("max_children = 3", "", "max_children", 3),
        ('env_allow = ["PATH"]', "", "env_allow", ("PATH",)),
        ('env = { A = "1" }', 'env = { B = "2" }', "env", {"B": "2"}),  # tables replace, not merge
        ('cwd = "/srv"', "", "cwd", "/srv"),
        ('scopes = "tool:*=x"', "", "scopes", "tool:*=x"),
        ('tools = { deny = ["rm_*"] }', 'tools = { allow = ["get_*"] }', "tools", NameFilter(allow=("get_*",))),
        ('tools = { deny = ["rm_*"] }', "", "tools", NameFilter(deny=("rm_*",))),
    ],
)
def test_a_default_applies_unless_the_server_sets_the_key(
    tmp_path: Path, defaults: str, server: str, field: str, value: object
) -> None:
    (loaded,) = load(tmp_path, f"[defaults]\n{defaults}\n{GITHUB}{server}\n")
    assert getattr(loaded, field) == value


@pytest.mark.parametrize(
    ("given", "path"),
    [
        ("", ""),
        ("/", ""),  # the root
        ("/x/", "/x"),  # a trailing slash is dropped
        ("/a/b", "/a/b"),
        ("/v1.0/x_y-z~", "/v1.0/x_y-z~"),
        ("/mcpx", "/mcpx"),  # only whole reserved segments collide
        ("/healthz", "/healthz"),
        ("/tools/mcp", "/tools/mcp"),  # reserved names are fine below the top level
    ],
)
def test_a_valid_path_is_kept_without_its_trailing_slash(given: str, path: str) -> None:
    assert BridgedServer(name="s", command="x", path=given).path == path


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("github", "must start with '/'"),
        ("/a b", "contains ' '"),
        ("/a?b", "contains '?'"),
        ("/a//b", "empty, '.' or '..' segment"),
        ("/a/../b", "empty, '.' or '..' segment"),
        ("/.", "empty, '.' or '..' segment"),
        ("/mcp/github", "collides with DataPulse's own /mcp endpoint"),
        ("/.well-known/oauth", "collides with DataPulse's own /.well-known endpoint"),
        *((reserved, f"collides with DataPulse's own {reserved} endpoint") for reserved in sorted(RESERVED_PATHS)),
        *((reserved + "/", "collides") for reserved in sorted(RESERVED_PATHS)),
    ],
)
def test_a_malformed_or_reserved_path_is_rejected(given: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BridgedServer(name="s", command="x", path=given)


@pytest.mark.parametrize("name", ["mcp", "health", "metrics", "tickets"])
def test_a_server_named_after_a_reserved_path_must_choose_another_path(tmp_path: Path, name: str) -> None:
    message = load_error(tmp_path, f'[servers.{name}]\ncommand = "x"\n')
    assert f"servers.{name}.path: path '/{name}' collides with DataPulse's own /{name} endpoint" in message
    (server,) = load(tmp_path, f'[servers.{name}]\ncommand = "x"\npath = "/{name}-bridge"\n')
    assert server.path == f"/{name}-bridge"


@pytest.mark.parametrize(
    ("first", "second", "shown"),
    [
        ('path = "/x"', 'path = "/x"', "'/x'"),
        ('path = "/x"', 'path = "/x/"', "'/x'"),  # the same after normalisation
        ('path = ""', 'path = "/"', "the root"),
        ("", 'path = "/a"', "'/a'"),  # the second claims the first's default path
    ],
)
def test_two_servers_at_the_same_path_are_rejected(tmp_path: Path, first: str, second: str, shown: str) -> None:
    text = f'[servers.a]\ncommand = "x"\n{first}\n[servers.b]\ncommand = "y"\n{second}\n'
    assert load_error(tmp_path, text).endswith(
        f"servers.a and servers.b are both served at {shown}; give each its own path"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GITHUB + 'comand = "npx"\n', "servers.github.comand: unknown key; expected one of command, args, path"),
        (GITHUB + 'name = "other"\n', "servers.github.name: not allowed; the server's name is its table key"),
        ("[defaults]\ntimeout = 3\n" + GITHUB, "defaults.timeout: unknown key; expected one of isolation, env"),
        ('[defaults]\ncommand = "npx"\n' + GITHUB, "defaults.command: cannot be a default"),
        ('[defaults]\npath = "/x"\n' + GITHUB, "defaults.path: cannot be a default"),
        ('[server.github]\ncommand = "npx"\n', "server: unknown top-level key"),
        ('title = "x"\n' + GITHUB, "title: unknown top-level key"),
        (GITHUB + '[servers.github.tools]\nalow = ["x"]\n', "servers.github.tools: unknown key 'alow'"),
        (GITHUB + '"a b" = 1\n', 'servers.github."a b": unknown key'),
    ],
)
def test_an_unknown_key_is_rejected_by_its_full_name(tmp_path: Path, text: str, message: str) -> None:
    assert message in load_error(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GITHUB + "start_timeout_s = 0\n", "servers.github.start_timeout_s: Input should be greater than 0"),
        ("[defaults]\nstart_timeout_s = -1\n" + GITHUB, "defaults.start_timeout_s: Input should be greater than 0"),
        (GITHUB + 'start_timeout_s = "soon"\n', "servers.github.start_timeout_s: Input should be a valid number"),
        (GITHUB + "idle_timeout_s = 0\n", "servers.github.idle_timeout_s: Input should be greater than 0"),
        (GITHUB + "restart_backoff_s = 0\n", "servers.github.restart_backoff_s: Input should be greater than 0"),
        (GITHUB + "max_children = 0\n", "servers.github.max_children: Input should be greater than or equal to 1"),
        (GITHUB + 'isolation = "forked"\n', "servers.github.isolation: Input should be 'per-session' or 'shared'"),
        (
            GITHUB + "restart_backoff_s = 5\nmax_restart_backoff_s = 1\n",
            "servers.github: max_restart_backoff_s (1) must be at least restart_backoff_s (5)",
        ),
        ('[servers.github]\nargs = ["x"]\n', "servers.github: give exactly one of command"),
        ('[servers.github]\ncommand = "x"\nurl = "http://h/mcp"\n', "servers.github: give exactly one of command"),
        ('[servers.github]\nurl = "ftp://h/mcp"\n', "servers.github.url: url 'ftp://h/mcp' must be an http://"),
        ('[servers.github]\nurl = "http://u:p@h/mcp"\n', "servers.github.url: url must not carry credentials"),
        ('[servers.github]\nurl = "http://h/mcp"\nargs = ["x"]\n', "servers.github: args apply to a command"),
        ('[servers.github]\ncommand = "x"\ntransport = "sse"\n', "servers.github: transport applies to a url"),
        ('[servers.github]\nurl = "http://h/mcp"\ntransport = "h3"\n', "servers.github.transport: Input should be"),
        ('[servers.github]\ncommand = "  "\n', "servers.github.command: command must not be empty"),
        (GITHUB + 'args = "-y server"\n', "servers.github.args: Input should be a valid tuple"),
        (GITHUB + "args = [1]\n", "servers.github.args.0: Input should be a valid string"),
        (GITHUB + 'cwd = ""\n', "servers.github.cwd: String should have at least 1 character"),
        (GITHUB + "env = { A = 1 }\n", "servers.github.env.A: Input should be a valid string"),
        (GITHUB + 'env = { "A-B" = "x" }\n', "servers.github.env: 'A-B' is not a variable name"),
        (GITHUB + 'env_allow = ["PATH", ""]\n', "servers.github.env_allow: pattern 2 is empty"),
        (GITHUB + 'path = "github"\n', "servers.github.path: path 'github' must start with '/'"),
        (GITHUB + 'tools = { deny = [""] }\n', "servers.github.tools: deny: pattern 1 is empty"),
        (GITHUB + 'prompts = ["x"]\n', "servers.github.prompts: expected a table with 'allow' and/or 'deny'"),
        ('[servers."my server"]\ncommand = "x"\n', "servers.\"my server\": server name 'my server' must be 1-64"),
        (f'[servers.{"a" * 65}]\ncommand = "x"\n', "must be 1-64 characters from A-Z a-z 0-9 _ . -"),
    ],
)
def test_an_invalid_value_is_reported_at_the_key_it_came_from(tmp_path: Path, text: str, message: str) -> None:
    error = load_error(tmp_path, text)
    assert error.startswith(f"{tmp_path / 'bridge.toml'}: ")
    assert message in error


def test_every_invalid_value_of_a_server_is_reported_at_once(tmp_path: Path) -> None:
    error = load_error(tmp_path, GITHUB + "start_timeout_s = 0\nmax_children = 0\n")
    assert "servers.github.start_timeout_s: " in error
    assert "servers.github.max_children: " in error


def test_an_error_message_never_contains_an_env_value(tmp_path: Path) -> None:
    error = load_error(tmp_path, GITHUB + 'env = { GITHUB_TOKEN = "ghp_secret", "bad name" = "other_secret" }\n')
    assert "bad name" in error
    assert "secret" not in error


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no [servers.NAME] table"),
        ("[defaults]\nmax_children = 2\n", "no [servers.NAME] table"),
        ("servers = {}\n", "no [servers.NAME] table"),
        ("servers = 1\n", "no [servers.NAME] table"),
        ("defaults = 1\n" + GITHUB, "defaults: expected a table"),
        ("[servers]\ngithub = 1\n", "servers.github: expected a table ([servers.github]) with a command or a url"),
    ],
)
def test_a_file_without_server_tables_is_rejected(tmp_path: Path, text: str, message: str) -> None:
    assert message in load_error(tmp_path, text)


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigurationError, match=r"bridge config .*nope\.toml: cannot read it \(No such file"):
        load_bridge_config(missing)


def test_a_directory_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=rf"bridge config {tmp_path}: cannot read it"):
        load_bridge_config(str(tmp_path))


def test_a_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, GITHUB + "start_timeout_s = = 1\nmax_children = 2\n")
    assert message.startswith(f"bridge config {tmp_path / 'bridge.toml'}: invalid TOML: ")
    assert "(at line 3, column 19)" in message


def test_a_file_that_is_not_utf8_is_an_error_naming_it(tmp_path: Path) -> None:
    file = tmp_path / "bridge.toml"
    file.write_bytes(b'[servers.github]\ncommand = "\xff"\n')
    with pytest.raises(ConfigurationError, match=r"bridge\.toml: not UTF-8 text"):
        load_bridge_config(file)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('tools = { deny = ["delete_*", "drop_*"] }', NameFilter(deny=("delete_*", "drop_*"))),
        ('tools = { deny = "delete_*, drop_*" }', NameFilter(deny=("delete_*", "drop_*"))),
        ('tools = { allow = "get_*", deny = ["get_secret"] }', NameFilter(allow=("get_*",), deny=("get_secret",))),
        ("tools = {}", NameFilter()),
        ('[servers.github.tools]\nallow = ["a", "b"]', NameFilter(allow=("a", "b"))),
    ],
)
def test_tool_filters_come_from_lists_or_comma_strings(tmp_path: Path, table: str, expected: NameFilter) -> None:
    (server,) = load(tmp_path, f"{GITHUB}{table}\n")
    assert server.tools == expected


def test_each_kind_reads_its_own_filter_table(tmp_path: Path) -> None:
    text = f"""{GITHUB}
    [servers.github.tools]
    deny = ["delete_*"]
    [servers.github.resources]
    allow = "repo://public/*"
    [servers.github.prompts]
    allow = ["summarize"]
    """
    (server,) = load(tmp_path, textwrap.dedent(text))
    assert server.filters == BridgeFilters(
        tools=NameFilter(deny=("delete_*",)),
        resources=NameFilter(allow=("repo://public/*",)),
        prompts=NameFilter(allow=("summarize",)),
    )


def test_a_loaded_deny_glob_wins_over_an_allow_glob(tmp_path: Path) -> None:
    (server,) = load(tmp_path, f'{GITHUB}tools = {{ allow = ["*_repo"], deny = ["delete_*"] }}\n')
    assert server.filters.permits("tool", "create_repo")
    assert not server.filters.permits("tool", "delete_repo")
    assert not server.filters.permits("tool", "get_issue")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('["PATH", "AWS_*"]', ("PATH", "AWS_*")),
        ('"PATH, AWS_*"', ("PATH", "AWS_*")),
        ("[]", ()),  # the child then inherits only what the SDK adds itself
    ],
)
def test_env_allow_takes_a_list_or_a_comma_string(tmp_path: Path, value: str, expected: tuple[str, ...]) -> None:
    (server,) = load(tmp_path, f"{GITHUB}env_allow = {value}\n")
    assert server.env_allow == expected


def test_env_values_stay_out_of_the_repr() -> None:
    server = BridgedServer(name="github", command="npx", env={"GITHUB_TOKEN": "ghp_secret"})
    assert "ghp_secret" not in repr(server)
    assert "ghp_secret" not in str(server)


def test_a_server_is_immutable() -> None:
    server = BridgedServer(name="github", command="npx")
    with pytest.raises(ValidationError, match="frozen"):
        server.path = "/other"


def test_an_unknown_field_is_rejected_when_building_a_server_directly() -> None:
    fields: dict[str, Any] = {"name": "github", "command": "npx", "timeout": 3}
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        BridgedServer.model_validate(fields)


def test_a_dumped_server_validates_back_to_the_same_server() -> None:
    server = BridgedServer(
        name="github",
        command="npx",
        args=("-y", "pkg"),
        path="/gh",
        env={"A": "1"},
        tools=NameFilter(allow=("get_*",), deny=("get_secret",)),
        prompts=NameFilter(deny=("x",)),
    )
    assert BridgedServer.model_validate(server.model_dump()) == server
    assert BridgedServer.model_validate_json(server.model_dump_json()) == server
