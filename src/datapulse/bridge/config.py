"""The configuration of bridged MCP servers: one `BridgedServer` each, from CLI options or a TOML file.

Each bridged server is either a command DataPulse starts as a child process speaking MCP over stdio, or the
``url`` of a remote MCP server (``datapulse proxy``), reached in whichever era it speaks (``transport``); either is
served under a path prefix (``/github/mcp``, ``/github/sse``, ...). ``isolation = "per-session"`` starts one
child per MCP session (at most ``max_children`` at once, each stopped after ``idle_timeout_s`` without
a request); ``"shared"`` starts one child for every session, restarted after a crash with a delay
doubling from ``restart_backoff_s`` up to ``max_restart_backoff_s``. Durations are in seconds.

Example bridge file::

    # Applies to every server that does not set the key itself (a server's value replaces the
    # default's whole value: tables such as env or tools are not merged).
    [defaults]
    start_timeout_s = 20
    idle_timeout_s = 300

    [servers.github]
    command = "npx"
    args = ["-y", "@modelcontextprotocol/server-github"]
    path = "/github"                  # the default is "/" + the server's name
    env_allow = ["PATH", "HOME"]      # copied from DataPulse's environment; globs such as "AWS_*" work
    env = { GITHUB_TOKEN = "..." }    # set explicitly, on top of the allowed ones
    scopes = "tool:create_*=github:write"

    [servers.github.tools]
    deny = ["delete_*"]               # a deny glob wins over any allow glob

    [servers.files]
    command = "uvx"
    args = ["mcp-server-filesystem", "/srv/data"]
    path = "/files"
    isolation = "shared"

    [servers.files.resources]
    allow = "file:///srv/data/public/*, file:///srv/data/docs/*"   # a list or a comma-separated string

    [servers.search]
    url = "https://search.example.com/mcp"   # a remote MCP server instead of a command
    transport = "auto"                        # or "modern", "streamable-http", "sse"
    request_timeout_s = 60

    [servers.search.credentials]              # DataPulse's own, never the client's token
    bearer_env = "SEARCH_TOKEN"               # or oauth = { token_url = ..., client_id = ..., client_secret_env = ... }

Every key of `BridgedServer` except ``name`` (the table's key) may appear under ``[servers.NAME]``;
every key except ``name``, ``command``, ``args``, ``url`` and ``path`` under ``[defaults]``. For a ``url``,
``isolation = "per-session"`` gives each client session its own upstream session (2025 and 2024 upstreams); a
2026-07-28 upstream has no sessions, so one connection serves everyone.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from datapulse.bridge.credentials import UpstreamCredentials
from datapulse.bridge.environment import DEFAULT_ENV_ALLOW, ENV_NAME
from datapulse.bridge.filters import BridgeFilters, NameFilter, parse_patterns
from datapulse.config import ConfigurationError
from datapulse.ratelimit import parse_limit

__all__ = ["RESERVED_PATHS", "BridgedServer", "Isolation", "UpstreamTransport", "load_bridge_config"]

Isolation = Literal["per-session", "shared"]
UpstreamTransport = Literal["auto", "modern", "streamable-http", "sse"]
"""How a remote upstream is reached: found at start (``auto``), the 2026-07-28 stateless Streamable HTTP
(``modern``), the 2025-03-26..2025-11-25 Streamable HTTP with its ``initialize`` handshake (``streamable-http``),
or the 2024-11-05 HTTP+SSE transport (``sse``)."""

RESERVED_PATHS: Final = frozenset(
    {
        "/mcp",
        "/sse",
        "/messages",
        "/events",
        "/message",
        "/health",
        "/ready",
        "/metrics",
        "/tickets",
        "/openapi.json",
        "/.well-known",
    }
)
"""DataPulse's own top-level paths: no bridged server's path may start with one of these segments."""

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PATH_CHARACTERS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.~/-")
_FILTER_KEYS: Final = ("allow", "deny")
_NOT_IN_DEFAULTS: Final = frozenset({"name", "command", "args", "path", "url"})


def _name_filter(value: object) -> NameFilter:
    """A `NameFilter` as is, or one from a table ``{allow = [...], deny = [...]}`` (lists or comma strings)."""
    if isinstance(value, NameFilter):
        return value
    if not isinstance(value, Mapping):
        raise ValueError("expected a table with 'allow' and/or 'deny' glob lists")
    for key in value:
        if key not in _FILTER_KEYS:
            raise ValueError(f"unknown key {key!r}; expected 'allow' or 'deny'")
    patterns: dict[str, tuple[str, ...]] = {}
    for key in _FILTER_KEYS:
        try:
            patterns[key] = parse_patterns(value.get(key))
        except ConfigurationError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return NameFilter(allow=patterns["allow"], deny=patterns["deny"])


def _filter_table(value: NameFilter) -> dict[str, list[str]]:
    """The inverse of `_name_filter`, so a dumped server validates back to the same server."""
    return {"allow": list(value.allow), "deny": list(value.deny)}


FilterField = Annotated[NameFilter, PlainValidator(_name_filter), PlainSerializer(_filter_table)]


class BridgedServer(BaseModel):
    """One stdio MCP server put on the web. Units are in the names (``_s``: seconds).

    Build from Python with keyword arguments, or from a mapping with `model_validate` (filter tables
    and ``env_allow`` then also accept comma-separated strings). Invalid values raise pydantic's
    ``ValidationError``; `load_bridge_config` turns that into a `ConfigurationError`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    name: str = Field(description="Identifies the server in logs, metrics and errors: 1-64 of A-Z a-z 0-9 _ . -.")
    command: str | None = Field(
        default=None, description="The program to run (looked up on the child's PATH); or give `url` instead."
    )
    args: tuple[str, ...] = Field(default=(), description="Arguments passed to the program.")
    path: str = Field(
        default="",
        description="Prefix the server is served under ('/github'); '' is the root. A trailing '/' is dropped.",
    )
    isolation: Isolation = Field(
        default="per-session", description="'per-session': one child per MCP session; 'shared': one child for all."
    )
    env: dict[str, str] = Field(
        default_factory=dict, repr=False, description="Variables set in the child, over the allowed inherited ones."
    )
    env_allow: tuple[str, ...] = Field(
        default=DEFAULT_ENV_ALLOW, description="Names or globs of DataPulse's variables the child inherits."
    )
    cwd: str | None = Field(default=None, min_length=1, description="The child's working directory (default: ours).")
    start_timeout_s: float = Field(default=30.0, gt=0, description="Time allowed for the child to start up.")
    max_children: int = Field(default=100, ge=1, description="Per-session mode: cap on live child processes.")
    idle_timeout_s: float = Field(
        default=600.0, gt=0, description="Per-session mode: a child with no request for this long is stopped."
    )
    restart_backoff_s: float = Field(default=0.5, gt=0, description="First delay before restarting a crashed child.")
    max_restart_backoff_s: float = Field(default=30.0, gt=0, description="Cap on the doubling restart delay.")
    tools: FilterField = Field(default=NameFilter(), description="Which tools are exposed, by name.")
    resources: FilterField = Field(
        default=NameFilter(), description="Which resources are exposed, by URI (templates: by URI template)."
    )
    prompts: FilterField = Field(default=NameFilter(), description="Which prompts are exposed, by name.")
    scopes: str | None = Field(
        default=None, description="Per-item scope rules in DATAPULSE_SCOPES syntax ('tool:admin_*=admin;...')."
    )

    url: str | None = Field(
        default=None,
        description="A remote MCP server's endpoint (http or https), served through DataPulse instead of a command.",
    )
    transport: UpstreamTransport = Field(
        default="auto",
        description="How to reach `url`: 'auto' tries 2026-07-28 server/discover, then a 2025 initialize, then a "
        "2024-11-05 SSE GET; 'modern', 'streamable-http' or 'sse' pins one.",
    )
    request_timeout_s: float = Field(
        default=300.0, gt=0, description="Remote server: longest wait for one forwarded request's answer."
    )
    prefix: str | None = Field(
        default=None,
        description="Federation (proxy --config): what this server's tool and prompt names start with, followed by "
        "'_' (default: its name).",
    )
    rate_limit: str | None = Field(
        default=None,
        description="Federation: a per-principal limit on each of this server's tools, in DATAPULSE_RATE_LIMIT's "
        "syntax ('100/minute', '10/second;1000/hour').",
    )
    credentials: UpstreamCredentials | None = Field(
        default=None,
        repr=False,
        description="Remote server: DataPulse's own credentials there (headers, bearer_env or oauth); never the "
        "client's token.",
    )

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"server name {value!r} must be 1-64 characters from A-Z a-z 0-9 _ . -")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix_shape(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.fullmatch(value):
            raise ValueError(f"prefix {value!r} must be 1-64 characters from A-Z a-z 0-9 _ . -")
        return value

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_shape(cls, value: str | None) -> str | None:
        if value is not None:
            parse_limit(value)  # ValueError names what is wrong
        return value

    @field_validator("command")
    @classmethod
    def _command_present(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("command must not be empty")
        return value

    @field_validator("url")
    @classmethod
    def _url_shape(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"url {value!r} must be an http:// or https:// URL with a host")
        if parsed.username is not None or parsed.password is not None:
            raise ValueError("url must not carry credentials (user:password@); set upstream credentials instead")
        return value

    @field_validator("path")
    @classmethod
    def _path_shape(cls, value: str) -> str:
        path = value.rstrip("/")
        if not path:
            return ""
        if not path.startswith("/"):
            raise ValueError(f"path {value!r} must start with '/' (or be '' for the root)")
        if bad := sorted(set(path) - _PATH_CHARACTERS):
            raise ValueError(
                f"path {value!r} contains {''.join(bad)!r}; use only letters, digits and the characters _ . ~ / -"
            )
        segments = path[1:].split("/")
        if any(segment in ("", ".", "..") for segment in segments):
            raise ValueError(f"path {value!r} has an empty, '.' or '..' segment")
        if (top := "/" + segments[0]) in RESERVED_PATHS:
            raise ValueError(f"path {value!r} collides with DataPulse's own {top} endpoint; choose another prefix")
        return path

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a variable name (letters, digits, '_'; no leading digit)")
        return value

    @field_validator("env_allow", mode="before")
    @classmethod
    def _env_allow_patterns(cls, value: Any) -> tuple[str, ...]:
        return parse_patterns(value)

    @model_validator(mode="after")
    def _one_target(self) -> BridgedServer:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of command (a stdio server to run) and url (a remote MCP server)")
        if self.url is None and self.transport != "auto":
            raise ValueError("transport applies to a url; a command always speaks stdio")
        if self.url is not None and self.args:
            raise ValueError("args apply to a command, not to a url")
        if self.url is None and self.credentials is not None:
            raise ValueError("credentials apply to a url; give a command its secrets with env")
        return self

    @model_validator(mode="after")
    def _backoff_order(self) -> BridgedServer:
        if self.max_restart_backoff_s < self.restart_backoff_s:
            raise ValueError(
                f"max_restart_backoff_s ({self.max_restart_backoff_s:g}) must be at least "
                f"restart_backoff_s ({self.restart_backoff_s:g})"
            )
        return self

    @property
    def remote(self) -> bool:
        """Whether the server is a remote URL (else a stdio command)."""
        return self.url is not None

    @property
    def target(self) -> str:
        """What the server is, for messages: its command, or its URL without query and fragment."""
        if self.url is None:
            assert self.command is not None
            return self.command
        parsed = urlsplit(self.url)
        return parsed._replace(query="", fragment="").geturl()

    @property
    def filters(self) -> BridgeFilters:
        """The tool, resource and prompt filters together."""
        return BridgeFilters(tools=self.tools, resources=self.resources, prompts=self.prompts)


def load_bridge_config(path: str | Path) -> list[BridgedServer]:
    """The servers of a bridge TOML file (format: the module docstring), in file order.

    ``[defaults]`` keys apply to every server that does not set them; a server's ``path`` defaults to
    ``"/" + name``.

    Raises:
        ConfigurationError: the file cannot be read or is not valid TOML (the message names the file, and
            the line for syntax errors); there is no ``[servers.NAME]`` table; a key is unknown; a value
            is invalid; or two servers share a path. Messages start with the file name and name the
            offending key, e.g. ``bridge.toml: servers.github.start_timeout_s: Input should be greater than 0``.
    """
    file = Path(path)
    try:
        with file.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ConfigurationError(f"bridge config {file}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"bridge config {file}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"bridge config {file}: not UTF-8 text") from None
    try:
        return _servers(document)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{file}: {exc}") from None


def _servers(document: Mapping[str, Any]) -> list[BridgedServer]:
    for key in document:
        if key not in ("defaults", "servers"):
            raise ConfigurationError(f"{_key(key)}: unknown top-level key; expected [defaults] and [servers.NAME]")
    defaults = document.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigurationError("defaults: expected a table ([defaults])")
    for key in defaults:
        if key in _NOT_IN_DEFAULTS:
            raise ConfigurationError(f"defaults.{_key(key)}: cannot be a default; set it in each [servers.NAME] table")
        if key not in BridgedServer.model_fields:
            raise ConfigurationError(f"defaults.{_key(key)}: unknown key; expected one of {_known(_NOT_IN_DEFAULTS)}")
    servers = document.get("servers")
    if not isinstance(servers, dict) or not servers:
        raise ConfigurationError(
            "no [servers.NAME] table; define at least one, e.g. [servers.github] with a command or a url"
        )
    result: list[BridgedServer] = []
    by_path: dict[str, str] = {}
    for name, table in servers.items():
        where = f"servers.{_key(name)}"
        if not isinstance(table, dict):
            raise ConfigurationError(f"{where}: expected a table ([{where}]) with a command or a url")
        for key in table:
            if key == "name":
                raise ConfigurationError(f"{where}.name: not allowed; the server's name is its table key")
            if key not in BridgedServer.model_fields:
                raise ConfigurationError(f"{where}.{_key(key)}: unknown key; expected one of {_known({'name'})}")
        try:
            server = BridgedServer.model_validate({"path": "/" + name, **defaults, **table, "name": name})
        except ValidationError as exc:
            raise ConfigurationError(_validation_message(exc, where, defaults, table)) from None
        if server.path in by_path:
            shown = repr(server.path) if server.path else "the root"
            raise ConfigurationError(
                f"servers.{_key(by_path[server.path])} and {where} are both served at {shown}; give each its own path"
            )
        by_path[server.path] = name
        result.append(server)
    return result


def _validation_message(exc: ValidationError, where: str, defaults: Mapping[str, Any], table: Mapping[str, Any]) -> str:
    """Every error of ``exc`` as ``LOCATION: message``, LOCATION naming the TOML key the value came from."""
    parts = []
    for error in exc.errors():
        location = [str(item) for item in error["loc"]]
        if not location or location[0] == "name":
            origin = where
        elif location[0] in defaults and location[0] not in table:
            origin = ".".join(["defaults", *location])
        else:
            origin = ".".join([where, *location])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{origin}: {message}")
    return "; ".join(parts)


def _key(key: str) -> str:
    """``key`` as written in TOML: bare when it can be, else quoted."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _known(excluded: frozenset[str] | set[str]) -> str:
    return ", ".join(field for field in BridgedServer.model_fields if field not in excluded)
