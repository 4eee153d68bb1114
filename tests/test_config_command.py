"""`datapulse config CLIENT`: the real command prints the client's snippet on stdout and its notes on stderr, never
the token, and refuses unknown clients and bad options with a usage error (exit status 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from datapulse.client_config import CLIENT_NAMES, CLIENTS, snippet

DATAPULSE = str(Path(sys.executable).parent / "datapulse")
URL = "http://127.0.0.1:8765"
SECRET = "s3cret-value-of-the-token"


def run_config(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DATAPULSE_")} | (env or {})
    return subprocess.run([DATAPULSE, "config", *args], capture_output=True, text=True, timeout=30, env=full_env)


def test_config_cursor_prints_cursors_mcp_json_for_the_given_url() -> None:
    done = run_config("cursor", "--url", URL)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "mcpServers": {
            "datapulse": {"url": f"{URL}/mcp", "headers": {"Authorization": "Bearer ${env:DATAPULSE_TOKEN}"}}
        }
    }
    assert all(line.startswith("# ") for line in done.stderr.splitlines())
    assert "~/.cursor/mcp.json" in done.stderr
    assert "https://cursor.com/docs/mcp" in done.stderr


@pytest.mark.parametrize("client", CLIENT_NAMES)
def test_stdout_is_exactly_the_clients_snippet_stderr_names_its_documentation_and_the_token_is_never_printed(
    client: str,
) -> None:
    done = run_config(
        client, "--url", URL, "--token-env", "MY_MCP_TOKEN", env={"MY_MCP_TOKEN": SECRET, "DATAPULSE_TOKEN": SECRET}
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == snippet(client, URL, "MY_MCP_TOKEN") + "\n"
    for doc_url in CLIENTS[client].doc_urls:
        assert doc_url in done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_without_options_the_snippet_is_for_the_default_server_and_datapulse_token() -> None:
    done = run_config("claude-code")
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stdout)["mcpServers"]["datapulse"]
    assert entry["url"] == "http://127.0.0.1:8000/mcp"
    assert entry["headers"] == {"Authorization": "Bearer ${DATAPULSE_TOKEN}"}


def test_the_client_name_is_accepted_in_any_letter_case() -> None:
    done = run_config("VSCode", "--url", URL)
    assert done.returncode == 0, done.stderr
    assert done.stdout == snippet("vscode", URL) + "\n"


def test_an_unknown_client_is_a_usage_error_listing_the_choices() -> None:
    done = run_config("emacs")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Invalid value for 'CLIENT': 'emacs' is not one of" in done.stderr
    for name in CLIENT_NAMES:
        assert f"'{name}'" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "127.0.0.1:8000"], "Invalid value for '--url': '127.0.0.1:8000' is not an http:// or https:// URL"),
        (
            ["--token-env", "MY-TOKEN"],
            "Invalid value for '--token-env': 'MY-TOKEN' is not an environment variable name",
        ),
    ],
)
def test_a_bad_url_or_token_variable_is_a_usage_error_naming_the_option(args: list[str], message: str) -> None:
    done = run_config("cursor", *args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert message in done.stderr
