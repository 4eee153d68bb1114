"""`datapulse.client_config`: each client's snippet follows its documented format, targets URL/mcp and refers to the
token's environment variable instead of the token; the startup banner's snippet comes from the same code."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from datapulse.client_config import (
    CLIENT_NAMES,
    CLIENTS,
    DEFAULT_TOKEN_ENV,
    DEFAULT_URL,
    TOKEN_PLACEHOLDER,
    check_env_name,
    check_url,
    claude_code_config,
    client_named,
    mcp_endpoint,
    notes,
    snippet,
)
from datapulse.config import Settings
from datapulse.server import banner

DOCS = Path(__file__).resolve().parents[2] / "docs" / "clients.md"
URL = "http://127.0.0.1:8765"
SECRET = "s3cret-value-of-the-token"


def _header_value(header: str) -> str:
    """``"Authorization: Bearer X"`` -> ``"Bearer X"`` (the ``Name: value`` form of mcp-remote and the Inspector)."""
    name, _, value = header.partition(": ")
    assert name == "Authorization"
    return value


def _claude_code(text: str) -> tuple[str, str]:
    entry = json.loads(text)["mcpServers"]["datapulse"]
    assert entry["type"] == "http"
    return entry["url"], entry["headers"]["Authorization"]


def _claude_desktop(text: str) -> tuple[str, str]:
    entry = json.loads(text)["mcpServers"]["datapulse"]
    assert entry["command"] == "npx"
    args: list[str] = entry["args"]
    assert args[:2] == ["-y", "mcp-remote"]
    return args[2], _header_value(args[args.index("--header") + 1])


def _cursor(text: str) -> tuple[str, str]:
    entry = json.loads(text)["mcpServers"]["datapulse"]
    return entry["url"], entry["headers"]["Authorization"]


def _vscode(text: str) -> tuple[str, str]:
    entry = json.loads(text)["servers"]["datapulse"]
    assert entry["type"] == "http"
    return entry["url"], entry["headers"]["Authorization"]


def _windsurf(text: str) -> tuple[str, str]:
    entry = json.loads(text)["mcpServers"]["datapulse"]
    return entry["serverUrl"], entry["headers"]["Authorization"]


def _inspector(text: str) -> tuple[str, str]:
    argv = shlex.split(text)
    assert argv[:3] == ["npx", "@modelcontextprotocol/inspector", "--cli"]
    assert argv[argv.index("--transport") + 1] == "http"
    return argv[3], _header_value(argv[argv.index("--header") + 1])


@dataclass(frozen=True)
class Row:
    client: str
    endpoint_and_authorization: Callable[[str], tuple[str, str]]
    """Parses the snippet (JSON, or a shell command line) and returns its endpoint and Authorization value."""
    reference: Callable[[str], str]
    """The token's reference in the client's documented syntax, from the environment variable's name."""


ROWS = [
    Row("claude-code", _claude_code, lambda env: f"${{{env}}}"),
    Row("claude-desktop", _claude_desktop, lambda env: f"${{{env}}}"),  # expanded by mcp-remote from its env
    Row("cursor", _cursor, lambda env: f"${{env:{env}}}"),
    Row("vscode", _vscode, lambda env: f"${{input:{env.lower().replace('_', '-')}}}"),
    Row("windsurf", _windsurf, lambda env: f"${{env:{env}}}"),
    Row("inspector", _inspector, lambda env: f"${env}"),  # POSIX shell parameter expansion
]


def test_the_table_has_one_row_per_supported_client() -> None:
    assert [row.client for row in ROWS] == list(CLIENT_NAMES)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.client)
@pytest.mark.parametrize("token_env", [DEFAULT_TOKEN_ENV, "MY_MCP_TOKEN"])
def test_each_snippet_parses_and_sends_a_bearer_reference_to_the_mcp_endpoint(row: Row, token_env: str) -> None:
    text = snippet(row.client, URL, token_env)
    endpoint, authorization = row.endpoint_and_authorization(text)
    assert endpoint == f"{URL}/mcp"
    assert authorization == f"Bearer {row.reference(token_env)}"
    if token_env != DEFAULT_TOKEN_ENV:
        assert DEFAULT_TOKEN_ENV not in text


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.client)
def test_no_snippet_or_note_contains_the_token_even_when_it_is_in_the_environment(
    row: Row, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DEFAULT_TOKEN_ENV, SECRET)
    monkeypatch.setenv("LOCAL_BEARER_TOKEN", SECRET)
    text = snippet(row.client, URL, DEFAULT_TOKEN_ENV)
    assert SECRET not in text
    assert SECRET not in "\n".join(notes(row.client, DEFAULT_TOKEN_ENV))
    assert "Bearer " + row.reference(DEFAULT_TOKEN_ENV) in text


@pytest.mark.parametrize("name", ["cursor", "CURSOR", "Cursor", "VSCode", "Claude-Code", "INSPECTOR"])
def test_client_names_are_accepted_in_any_letter_case(name: str) -> None:
    assert client_named(name).name == name.lower()
    assert snippet(name, URL) == snippet(name.lower(), URL)


def test_an_unknown_client_is_refused_with_the_list_of_choices() -> None:
    with pytest.raises(ValueError, match="unknown client 'emacs'") as refused:
        snippet("emacs", URL)
    for name in CLIENT_NAMES:
        assert name in str(refused.value)


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://example.com", "http://", "", "/mcp"])
def test_urls_that_are_not_absolute_http_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="is not an http:// or https:// URL"):
        check_url(url)
    with pytest.raises(ValueError, match="is not an http:// or https:// URL"):
        snippet("cursor", url)


@pytest.mark.parametrize("name", ["", "1TOKEN", "MY-TOKEN", "MY TOKEN", "$TOKEN", 'TOKEN"', "TOKEN}"])
def test_environment_variable_names_that_would_not_expand_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="is not an environment variable name"):
        check_env_name(name)
    with pytest.raises(ValueError, match="is not an environment variable name"):
        snippet("claude-code", URL, name)


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/mcp"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/mcp"),
        ("https://api.example.com/team/alpha", "https://api.example.com/team/alpha/mcp"),
    ],
)
def test_the_endpoint_is_the_base_url_plus_mcp_without_a_doubled_slash(url: str, endpoint: str) -> None:
    assert mcp_endpoint(url) == endpoint
    assert _cursor(snippet("cursor", url))[0] == endpoint


@pytest.mark.parametrize(
    ("url", "allow_http"),
    [
        ("http://127.0.0.1:8000", False),
        ("http://localhost:8000", False),
        ("https://mcp.example.com", False),
        ("http://10.0.0.5:8000", True),
        ("http://[::1]:8000", True),  # mcp-remote compares the hostname with 'localhost' and '127.0.0.1' only
    ],
)
def test_claude_desktop_passes_allow_http_exactly_where_mcp_remote_refuses_plain_http(
    url: str, allow_http: bool
) -> None:
    args = json.loads(snippet("claude-desktop", url))["mcpServers"]["datapulse"]["args"]
    assert ("--allow-http" in args) is allow_http


def test_claude_desktop_gives_mcp_remote_the_token_through_env_as_a_placeholder_the_notes_explain() -> None:
    entry = json.loads(snippet("claude-desktop", URL, "MY_TOKEN"))["mcpServers"]["datapulse"]
    assert entry["env"] == {"MY_TOKEN": TOKEN_PLACEHOLDER}
    explained = "\n".join(notes("claude-desktop", "MY_TOKEN"))
    assert TOKEN_PLACEHOLDER in explained
    assert "does not expand environment variables" in explained
    assert "stdio" in explained


def test_vscode_prompts_for_the_token_as_a_password_input_named_after_the_variable() -> None:
    config = json.loads(snippet("vscode", URL, "MY_TOKEN"))
    assert config["inputs"] == [
        {
            "type": "promptString",
            "id": "my-token",
            "description": "DataPulse bearer token (the value of MY_TOKEN)",
            "password": True,
        }
    ]
    assert config["servers"]["datapulse"]["headers"]["Authorization"] == "Bearer ${input:my-token}"


def test_the_inspector_command_lets_the_shell_substitute_the_token(tmp_path: Path) -> None:
    """The command line run by sh (with ``npx`` replaced by a script printing its arguments) hands the Inspector the
    endpoint and the header with the variable's value."""
    printer = tmp_path / "npx"
    printer.write_text("#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    printer.chmod(0o755)
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "MY_TOKEN": SECRET}
    done = subprocess.run(
        ["sh", "-c", snippet("inspector", URL, "MY_TOKEN")], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    argv = done.stdout.splitlines()
    assert argv[:3] == ["@modelcontextprotocol/inspector", "--cli", f"{URL}/mcp"]
    assert argv[argv.index("--header") + 1] == f"Authorization: Bearer {SECRET}"


@pytest.mark.parametrize("name", CLIENT_NAMES)
def test_every_client_names_where_its_snippet_goes_and_the_https_documentation_it_follows(name: str) -> None:
    client = CLIENTS[name]
    assert client.location.startswith(("Put it in ", "Run it in "))
    assert client.doc_urls
    assert all(url.startswith("https://") for url in client.doc_urls)
    assert client.format == ("shell" if name == "inspector" else "json")


def test_the_default_url_is_where_serve_listens_by_default() -> None:
    host = Settings.model_fields["host"].default
    port = Settings.model_fields["port"].default
    assert f"http://{host}:{port}" == DEFAULT_URL


def test_claude_code_config_leaves_headers_out_without_authorization() -> None:
    config = claude_code_config({"alpha": "http://h/alpha/mcp", "beta": "http://h/beta/mcp"}, None)
    assert config == {
        "mcpServers": {
            "alpha": {"type": "http", "url": "http://h/alpha/mcp"},
            "beta": {"type": "http", "url": "http://h/beta/mcp"},
        }
    }


def _banner_snippet(text: str) -> Any:
    return json.loads(text[text.index("{") :])


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DataPulse settings from the environment running the tests (the banner reads `Settings`)."""
    for name in list(os.environ):
        if name.startswith("DATAPULSE_") or name == "LOCAL_BEARER_TOKEN":
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
def test_the_banner_shows_the_claude_code_snippet_that_datapulse_config_prints() -> None:
    settings = Settings(token=SecretStr(SECRET))
    text = banner(URL, settings, "demo", None)
    assert _banner_snippet(text) == json.loads(snippet("claude-code", URL))
    assert SECRET not in text
    assert f"datapulse config CLIENT --url {URL}" in text


@pytest.mark.usefixtures("clean_env")
def test_the_banner_shows_a_token_generated_for_this_run_literally() -> None:
    generated = "generated-for-this-run"
    text = banner(URL, Settings(token=SecretStr(generated)), "demo", generated)
    assert _claude_code(json.dumps(_banner_snippet(text))) == (f"{URL}/mcp", f"Bearer {generated}")


@pytest.mark.usefixtures("clean_env")
def test_the_banner_snippet_has_one_entry_per_mount_and_no_headers_without_auth() -> None:
    settings = Settings(insecure_no_auth=True)
    text = banner(URL, settings, "2 servers", None, mounts=[("alpha", "/alpha"), ("beta", "/team/beta")])
    assert _banner_snippet(text) == claude_code_config(
        {"alpha": f"{URL}/alpha/mcp", "beta": f"{URL}/team/beta/mcp"}, None
    )


@pytest.mark.parametrize("name", CLIENT_NAMES)
def test_docs_clients_md_shows_each_clients_current_snippet_and_documentation(name: str) -> None:
    docs = DOCS.read_text()
    assert snippet(name, DEFAULT_URL) in docs
    for url in CLIENTS[name].doc_urls:
        assert url in docs
