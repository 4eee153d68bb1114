"""Ready-to-paste snippets that connect an MCP client to a running DataPulse server (``datapulse config CLIENT``).

Every snippet targets ``<url>/mcp`` (Streamable HTTP) and authenticates with ``Authorization: Bearer <token>``. The
token itself is never written: the snippet refers to an environment variable (``DATAPULSE_TOKEN`` unless told
otherwise) in the syntax the client documents, or, where the client cannot read one, to a placeholder the notes
explain. `CLIENTS` is the table of supported clients, each with the documentation page its format follows; the
startup banner's Claude Code snippet comes from `claude_code_config`.

Pure functions only: nothing here reads the environment or the network.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

DEFAULT_URL: Final = "http://127.0.0.1:8000"
"""Where ``datapulse serve`` listens by default (`datapulse.config.Settings` host and port)."""
DEFAULT_TOKEN_ENV: Final = "DATAPULSE_TOKEN"
"""The environment variable a snippet reads the bearer token from unless told otherwise."""
SERVER_NAME: Final = "datapulse"
"""The key a snippet gives the server in the client's configuration."""
TOKEN_PLACEHOLDER: Final = "<your DataPulse token>"
"""Written where a client cannot read the token from an environment variable; the notes say to replace it."""

_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MCP_REMOTE_PLAIN_HTTP_HOSTS: Final = frozenset({"localhost", "127.0.0.1"})

Format = Literal["json", "shell"]


@dataclass(frozen=True)
class Client:
    """One MCP client: how to render its snippet and where it goes.

    Attributes:
        name: the ``datapulse config`` argument (lower case).
        title: the product's name.
        format: ``"json"`` (a configuration file's content) or ``"shell"`` (one POSIX shell command line).
        location: where the snippet goes, as a sentence (``"Put it in .mcp.json ..."``).
        doc_urls: the documentation pages the snippet's format follows, most specific first.
        render: ``(endpoint, token_env) -> snippet text``; ``endpoint`` is the full ``.../mcp`` URL.
        explain: ``token_env -> notes`` printed next to the snippet (how the token reaches the client).
    """

    name: str
    title: str
    format: Format
    location: str
    doc_urls: tuple[str, ...]
    render: Callable[[str, str], str]
    explain: Callable[[str], tuple[str, ...]]


def mcp_endpoint(url: str) -> str:
    """The Streamable HTTP endpoint of the server at ``url``: ``http://127.0.0.1:8000`` -> ``http://127.0.0.1:8000/mcp``."""
    return url.rstrip("/") + "/mcp"


def check_url(url: str) -> str:
    """``url`` when it is an absolute ``http://`` or ``https://`` URL.

    Raises:
        ValueError: it is not.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    return url


def check_env_name(name: str) -> str:
    """``name`` when it is a portable environment variable name (``[A-Za-z_][A-Za-z0-9_]*``).

    Raises:
        ValueError: it is not (it would not expand, or would break the snippet's quoting).
    """
    if _ENV_NAME.fullmatch(name) is None:
        raise ValueError(
            f"{name!r} is not an environment variable name (letters, digits and _, not starting with a digit)"
        )
    return name


def claude_code_config(servers: Mapping[str, str], authorization: str | None) -> dict[str, Any]:
    """Claude Code's ``.mcp.json`` content for HTTP servers (also the startup banner's snippet).

    Shape: ``{"mcpServers": {NAME: {"type": "http", "url": ENDPOINT, "headers": {"Authorization": AUTH}}}}``,
    ``headers`` left out when ``authorization`` is None. Claude Code expands ``${VAR}`` (and ``${VAR:-default}``)
    in ``url`` and ``headers`` (https://code.claude.com/docs/en/mcp, "Environment variable expansion in .mcp.json").

    Args:
        servers: server name -> its ``.../mcp`` endpoint.
        authorization: the ``Authorization`` header value (e.g. ``"Bearer ${DATAPULSE_TOKEN}"``), or None.
    """
    entries: dict[str, Any] = {}
    for name, endpoint in servers.items():
        entry: dict[str, Any] = {"type": "http", "url": endpoint}
        if authorization is not None:
            entry["headers"] = {"Authorization": authorization}
        entries[name] = entry
    return {"mcpServers": entries}


def vscode_input_id(token_env: str) -> str:
    """The VS Code input variable holding the token: ``DATAPULSE_TOKEN`` -> ``datapulse-token``."""
    return token_env.lower().replace("_", "-")


def _json(value: Any) -> str:
    return json.dumps(value, indent=2)


def _claude_code(endpoint: str, token_env: str) -> str:
    return _json(claude_code_config({SERVER_NAME: endpoint}, f"Bearer ${{{token_env}}}"))


def _claude_code_notes(token_env: str) -> tuple[str, ...]:
    return (
        f"Claude Code expands ${{{token_env}}} from its own environment when it reads .mcp.json: "
        f"export {token_env} in the shell that starts `claude`.",
    )


def _needs_allow_http(endpoint: str) -> bool:
    """Whether mcp-remote refuses ``endpoint`` without ``--allow-http`` (plain HTTP to a host other than
    ``localhost``/``127.0.0.1``; its ``parseCommandLineArgs``)."""
    parts = urlsplit(endpoint)
    return parts.scheme == "http" and parts.hostname not in _MCP_REMOTE_PLAIN_HTTP_HOSTS


def _claude_desktop(endpoint: str, token_env: str) -> str:
    args = ["-y", "mcp-remote", endpoint]
    if _needs_allow_http(endpoint):
        args.append("--allow-http")
    args += ["--header", f"Authorization: Bearer ${{{token_env}}}"]
    return _json({"mcpServers": {SERVER_NAME: {"command": "npx", "args": args, "env": {token_env: TOKEN_PLACEHOLDER}}}})


def _claude_desktop_notes(token_env: str) -> tuple[str, ...]:
    return (
        "Claude Desktop's config file starts local (stdio) servers only, and its custom connectors reach servers "
        "from Anthropic's cloud with OAuth or no auth; so this runs the mcp-remote stdio bridge (needs Node.js).",
        f"Claude Desktop does not expand environment variables in this file: replace {TOKEN_PLACEHOLDER} in env "
        f"with the token; mcp-remote substitutes ${{{token_env}}} in --header from that env.",
        "On Windows, if the header arrives cut at its spaces, use mcp-remote's workaround: "
        '"Authorization:${AUTH_HEADER}" in args and "AUTH_HEADER": "Bearer <token>" in env.',
    )


def _cursor(endpoint: str, token_env: str) -> str:
    return _json(
        {"mcpServers": {SERVER_NAME: {"url": endpoint, "headers": {"Authorization": f"Bearer ${{env:{token_env}}}"}}}}
    )


def _cursor_notes(token_env: str) -> tuple[str, ...]:
    return (
        f"Cursor resolves ${{env:{token_env}}} from the environment it was started with: "
        f"export {token_env} before launching Cursor.",
    )


def _vscode(endpoint: str, token_env: str) -> str:
    input_id = vscode_input_id(token_env)
    return _json(
        {
            "inputs": [
                {
                    "type": "promptString",
                    "id": input_id,
                    "description": f"DataPulse bearer token (the value of {token_env})",
                    "password": True,
                }
            ],
            "servers": {
                SERVER_NAME: {
                    "type": "http",
                    "url": endpoint,
                    "headers": {"Authorization": f"Bearer ${{input:{input_id}}}"},
                }
            },
        }
    )


def _vscode_notes(token_env: str) -> tuple[str, ...]:
    return (
        f"VS Code asks for ${{input:{vscode_input_id(token_env)}}} when the server first starts (paste the value of "
        f"{token_env}) and keeps it in its secret storage: input variables are its documented way to keep secrets "
        "out of mcp.json headers; ${env:...} in headers is reported not to be substituted (microsoft/vscode#336232).",
    )


def _windsurf(endpoint: str, token_env: str) -> str:
    return _json(
        {
            "mcpServers": {
                SERVER_NAME: {"serverUrl": endpoint, "headers": {"Authorization": f"Bearer ${{env:{token_env}}}"}}
            }
        }
    )


def _windsurf_notes(token_env: str) -> tuple[str, ...]:
    return (
        f"Windsurf interpolates ${{env:{token_env}}} in serverUrl and headers from the environment it was started "
        f"with: export {token_env} before launching Windsurf, then press refresh in the MCP panel.",
    )


def _inspector(endpoint: str, token_env: str) -> str:
    words = ["npx", "@modelcontextprotocol/inspector", "--cli", shlex.quote(endpoint)]
    words += ["--transport", "http", "--method", "tools/list"]
    words += ["--header", f'"Authorization: Bearer ${token_env}"']  # double quotes: the shell expands the variable
    return " ".join(words)


def _inspector_notes(token_env: str) -> tuple[str, ...]:
    return (
        f"Run it in a POSIX shell (bash, zsh) where {token_env} is exported; the shell substitutes ${token_env}.",
        "Other methods: --method tools/call --tool-name NAME --tool-arg key=value; without --cli (and --method) "
        "the same command opens the Inspector's web UI.",
    )


CLIENTS: Final[Mapping[str, Client]] = {
    client.name: client
    for client in (
        Client(
            name="claude-code",
            title="Claude Code",
            format="json",
            location="Put it in .mcp.json in the project root (project scope).",
            doc_urls=("https://code.claude.com/docs/en/mcp",),
            render=_claude_code,
            explain=_claude_code_notes,
        ),
        Client(
            name="claude-desktop",
            title="Claude Desktop",
            format="json",
            location="Put it in claude_desktop_config.json (Settings > Developer > Edit Config; macOS: "
            "~/Library/Application Support/Claude/, Windows: %APPDATA%\\Claude\\).",
            doc_urls=(
                "https://modelcontextprotocol.io/docs/develop/connect-local-servers",
                "https://github.com/geelen/mcp-remote#custom-headers",
                "https://modelcontextprotocol.io/docs/develop/connect-remote-servers",
            ),
            render=_claude_desktop,
            explain=_claude_desktop_notes,
        ),
        Client(
            name="cursor",
            title="Cursor",
            format="json",
            location="Put it in .cursor/mcp.json in the project, or in ~/.cursor/mcp.json for every project.",
            doc_urls=("https://cursor.com/docs/mcp",),
            render=_cursor,
            explain=_cursor_notes,
        ),
        Client(
            name="vscode",
            title="VS Code",
            format="json",
            location="Put it in .vscode/mcp.json in the workspace, or in the user profile's mcp.json "
            "(MCP: Open User Configuration).",
            doc_urls=("https://code.visualstudio.com/docs/copilot/reference/mcp-configuration",),
            render=_vscode,
            explain=_vscode_notes,
        ),
        Client(
            name="windsurf",
            title="Windsurf",
            format="json",
            location="Put it in ~/.codeium/windsurf/mcp_config.json (MCP panel > View raw config).",
            doc_urls=("https://docs.windsurf.com/windsurf/cascade/mcp",),
            render=_windsurf,
            explain=_windsurf_notes,
        ),
        Client(
            name="inspector",
            title="MCP Inspector",
            format="shell",
            location="Run it in a terminal (the Inspector's CLI mode; needs Node.js 22.19 or newer).",
            doc_urls=(
                "https://github.com/modelcontextprotocol/inspector/blob/main/clients/cli/README.md",
                "https://modelcontextprotocol.io/docs/tools/inspector",
            ),
            render=_inspector,
            explain=_inspector_notes,
        ),
    )
}
"""Every supported client by its ``datapulse config`` name."""

CLIENT_NAMES: Final = tuple(CLIENTS)


def client_named(name: str) -> Client:
    """The client called ``name`` (any letter case).

    Raises:
        ValueError: no such client (the message lists the choices).
    """
    client = CLIENTS.get(name.lower())
    if client is None:
        raise ValueError(f"unknown client {name!r}; choose one of: {', '.join(CLIENT_NAMES)}")
    return client


def snippet(client: str, url: str = DEFAULT_URL, token_env: str = DEFAULT_TOKEN_ENV) -> str:
    """The configuration snippet connecting ``client`` to the DataPulse server at ``url`` (its ``/mcp`` endpoint),
    the bearer token read from ``token_env`` (see `CLIENTS` for each client's format and documentation).

    Raises:
        ValueError: unknown client, ``url`` not http(s), or ``token_env`` not an environment variable name.
    """
    chosen = client_named(client)
    return chosen.render(mcp_endpoint(check_url(url)), check_env_name(token_env))


def notes(client: str, token_env: str = DEFAULT_TOKEN_ENV) -> tuple[str, ...]:
    """What to know next to ``client``'s snippet: how the token reaches the client, and any limitation.

    Raises:
        ValueError: unknown client, or ``token_env`` not an environment variable name.
    """
    return client_named(client).explain(check_env_name(token_env))
