"""The ``datapulse`` command: ``datapulse serve [APP] [options]``.

Every option maps 1:1 onto a `Settings` field (``--max-body-bytes`` → ``max_body_bytes``) and
falls back to its environment variable (``DATAPULSE_MAX_BODY_BYTES``), then the default.
"""

from __future__ import annotations

import re
import secrets
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import click
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo

from datapulse._version import __version__
from datapulse.client_config import (
    CLIENT_NAMES,
    DEFAULT_TOKEN_ENV,
    DEFAULT_URL,
    check_env_name,
    check_url,
    client_named,
    notes,
    snippet,
)
from datapulse.config import Settings

if TYPE_CHECKING:  # imported lazily at run time: `datapulse serve` need not load the bridge
    from datapulse.bridge.config import BridgedServer

_CLI_FIELDS = [name for name in Settings.model_fields if name != "app"]


def _env_names(name: str, field: FieldInfo) -> str:
    names = [f"DATAPULSE_{name.upper()}"]
    alias = field.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        names = [choice for choice in choices if isinstance(choice, str) and choice.isupper()]
    return ", ".join(names)


def _settings_options(command: Any) -> Any:
    for name in reversed(_CLI_FIELDS):
        field = Settings.model_fields[name]
        flag = "--" + name.replace("_", "-")
        default = field.get_default(call_default_factory=True)
        help_text = f"{field.description} [env: {_env_names(name, field)}"
        if field.annotation is not SecretStr and default not in (None, [], ""):
            shown = ",".join(default) if isinstance(default, list) else default
            help_text += f"; default: {shown}"
        help_text += "]"
        if field.annotation is bool:
            command = click.option(flag, name, is_flag=True, default=None, help=help_text)(command)
        else:
            command = click.option(flag, name, default=None, help=help_text, metavar=name.upper())(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(__version__, prog_name="datapulse")
def main() -> None:
    """DataPulse: serve MCP tools, resources and prompts over every MCP HTTP generation."""


@main.command()
@click.argument("app", required=False)
@_settings_options
def serve(app: str | None, **options: Any) -> None:
    """Serve APP ('module:attribute' naming an SDK MCPServer or low-level Server; default: the demo tools).

    Endpoints on one port: /mcp (Streamable HTTP, 2025-03-26 ... 2026-07-28), /sse + /messages
    (HTTP+SSE, 2024-11-05), /events + /message (DataPulse API), /health.

    Auth is on by default: without DATAPULSE_TOKEN / LOCAL_BEARER_TOKEN / DATAPULSE_TOKENS a random
    token is generated and printed once.
    """
    settings, generated, json_logs = _prepare(options, app)
    from datapulse.app import ConfigurationError, create_app, runtime_of
    from datapulse.server import banner, run
    from datapulse.workers import Supervisor

    if settings.workers > 1:
        try:
            server_name = runtime_of(create_app(settings)).server.name  # checks the settings before any worker
            supervisor = Supervisor(settings, json_logs)
        except ConfigurationError as exc:
            raise click.UsageError(str(exc)) from None

        def announce(url: str) -> None:
            print(banner(url, settings, server_name, generated, workers=settings.workers), flush=True)

        supervisor.on_ready = announce
        sys.exit(supervisor.run())
    run(_build(settings, json_logs), settings, generated_token=generated)


def _prepare(options: dict[str, Any], app: str | None) -> tuple[Settings, str | None, bool | None]:
    """Settings from the command's options (then environment, then defaults), a generated token when no auth is
    configured, and logging configured; returns (settings, generated token or None, JSON logs or auto).

    Raises:
        click.UsageError: invalid settings (naming the option).
    """
    overrides: dict[str, Any] = {name: value for name, value in options.items() if value is not None}
    if app is not None:
        overrides["app"] = app
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise click.UsageError(_validation_message(exc)) from None
    generated: str | None = None
    if not settings.auth_enabled and not settings.insecure_no_auth:
        generated = secrets.token_urlsafe(32)
        settings = settings.model_copy(update={"token": SecretStr(generated)})
    elif settings.insecure_no_auth and not settings.is_loopback:
        click.echo(f"WARNING: serving {settings.host} without authentication (--insecure-no-auth)", err=True)
    from datapulse.logs import configure_logging

    json_logs = {"auto": None, "json": True, "console": False}[settings.log_format]
    configure_logging(settings.log_level, json=json_logs)
    if app is not None and "." not in sys.path:
        sys.path.insert(0, ".")
    return settings, generated, json_logs


def _build(settings: Settings, json_logs: bool | None, *, make: Callable[[], Any] | None = None) -> Any:
    """The app (``make()``, default `create_app` of ``settings``), then logging with the node id and tracing
    configured.

    Raises:
        click.UsageError: the settings cannot make a working server, or OTLP export lacks its packages.
    """
    from datapulse.app import ConfigurationError, create_app
    from datapulse.logs import configure_logging
    from datapulse.mounts import runtimes_of
    from datapulse.tracing import configure_tracing

    try:
        application = make() if make is not None else create_app(settings)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from None
    runtime = runtimes_of(application)[0]
    configure_logging(settings.log_level, json=json_logs, node_id=runtime.node_id)
    try:
        configure_tracing(settings.otlp_endpoint, runtime.server.name)
    except RuntimeError as exc:
        raise click.UsageError(str(exc)) from None
    return application


def _check_url(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return check_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _check_env_name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return check_env_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command("config")
@click.argument("client", metavar="CLIENT", type=click.Choice(CLIENT_NAMES, case_sensitive=False))
@click.option(
    "--url",
    default=DEFAULT_URL,
    show_default=True,
    callback=_check_url,
    help="Base URL of the running server, as its banner prints it (the snippet targets URL/mcp).",
)
@click.option(
    "--token-env",
    default=DEFAULT_TOKEN_ENV,
    show_default=True,
    metavar="NAME",
    callback=_check_env_name,
    help="Environment variable holding the bearer token; the snippet refers to it, never to the token itself.",
)
def config_command(client: str, url: str, token_env: str) -> None:
    """Print a configuration snippet connecting CLIENT to a running DataPulse server (Streamable HTTP at URL/mcp,
    Authorization: Bearer token). CLIENT: claude-code, claude-desktop, cursor, vscode, windsurf or inspector.

    The snippet goes to stdout, ready to paste or redirect into the file; where it goes, how the client reads the
    token and the documentation its format follows go to stderr as '#' lines.
    """
    chosen = client_named(client)
    click.echo(f"# {chosen.title}. {chosen.location}", err=True)
    for line in notes(client, token_env):
        click.echo(f"# {line}", err=True)
    click.echo(f"# Format: {', '.join(chosen.doc_urls)}", err=True)
    click.echo(snippet(client, url, token_env))


_BRIDGE_OPTIONS: dict[str, str] = {
    "isolation": "isolation",
    "env_items": "env",
    "env_allow": "env_allow",
    "cwd": "cwd",
    "start_timeout_s": "start_timeout_s",
    "max_children": "max_children",
    "idle_timeout_s": "idle_timeout_s",
    "restart_backoff_s": "restart_backoff_s",
    "max_restart_backoff_s": "max_restart_backoff_s",
}
"""Bridge options of one COMMAND → `BridgedServer` field (in a config file these are keys of each server)."""
_FILTER_OPTIONS = ("allow_tools", "deny_tools", "allow_resources", "deny_resources", "allow_prompts", "deny_prompts")


def _pool_and_filter_options(command: Any) -> Any:
    """The options `bridge` and `proxy` share: isolation, start and restart timing, child caps, filters."""
    for option in reversed(_POOL_AND_FILTER_OPTIONS):
        command = option(command)
    return command


_POOL_AND_FILTER_OPTIONS: list[Callable[[Any], Any]] = [
    click.option(
        "--isolation",
        type=click.Choice(["per-session", "shared"]),
        default=None,
        help="per-session: a child process per MCP session (started lazily); shared: one child for every client "
        "[default: per-session].",
    ),
    click.option("--start-timeout-s", type=float, default=None, help="Time allowed for a child's start [default: 30]."),
    click.option("--max-children", type=int, default=None, help="per-session: cap on live children [default: 100]."),
    click.option("--idle-timeout-s", type=float, default=None, help="Stop a child idle this long [default: 600]."),
    click.option(
        "--restart-backoff-s",
        type=float,
        default=None,
        help="Delay before restarting a failed child, doubled per failure in a row [default: 0.5].",
    ),
    click.option("--max-restart-backoff-s", type=float, default=None, help="Cap on the restart delay [default: 30]."),
    click.option(
        "--allow-tools", default=None, metavar="GLOBS", help="Only these tools are exposed (comma-separated)."
    ),
    click.option("--deny-tools", default=None, metavar="GLOBS", help="These tools are hidden and refused."),
    click.option("--allow-resources", default=None, metavar="GLOBS", help="Only these resource URIs are exposed."),
    click.option("--deny-resources", default=None, metavar="GLOBS", help="These resource URIs are hidden and refused."),
    click.option("--allow-prompts", default=None, metavar="GLOBS", help="Only these prompts are exposed."),
    click.option("--deny-prompts", default=None, metavar="GLOBS", help="These prompts are hidden and refused."),
]


@main.command(context_settings={"ignore_unknown_options": False})
@click.option(
    "--config",
    "config_file",
    default=None,
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="A TOML file declaring several bridged servers, each under its own path prefix (instead of a COMMAND).",
)
@click.option("--env", "env_items", multiple=True, metavar="NAME=VALUE", help="Set a variable in the child.")
@click.option(
    "--env-allow",
    default=None,
    metavar="NAMES",
    help="Comma-separated names or globs of our variables the child inherits "
    "[default: HOME,LANG,LC_ALL,LOGNAME,PATH,SHELL,TERM,TMPDIR,USER].",
)
@click.option("--cwd", default=None, help="The child's working directory.")
@_pool_and_filter_options
@click.argument("command", nargs=-1, required=False, type=click.UNPROCESSED)
@_settings_options
def bridge(command: tuple[str, ...], config_file: str | None, **options: Any) -> None:
    """Serve the stdio MCP server started by COMMAND on every DataPulse transport:

        datapulse bridge [options] -- COMMAND [ARGS...]

        datapulse bridge --config bridges.toml [options]

    Its tools, resources and prompts are served at /mcp, /sse, /events + /message with DataPulse's auth,
    limits, metrics and audit. With --config, each server of the file is served under its own path
    (/github/mcp, /github/sse, ...). Every command is started once at start-up to check it works.
    """
    from datapulse.bridge.config import load_bridge_config
    from datapulse.bridge.host import bridge_app, mounted_bridges
    from datapulse.bridge.proxy import Bridge
    from datapulse.config import ConfigurationError

    ours = {key: options.pop(key) for key in [*_BRIDGE_OPTIONS, *_FILTER_OPTIONS]}
    given = [key for key, value in ours.items() if value not in (None, ())]
    if config_file is not None and command:
        raise click.UsageError("give either --config FILE or a COMMAND to bridge, not both")
    if config_file is not None and given:
        flags = ", ".join("--" + _BRIDGE_OPTIONS.get(key, key).replace("_", "-") for key in given)
        raise click.UsageError(
            f"{flags}: with --config, set this per server in the file (or under [defaults]), not on the command line"
        )
    if config_file is None and not command:
        raise click.UsageError("nothing to bridge: give a COMMAND after '--', or --config FILE")
    if options.get("workers") not in (None, 1):
        raise click.UsageError("--workers: datapulse bridge serves from one process; it applies to datapulse serve")
    try:
        specs = load_bridge_config(config_file) if config_file is not None else [_command_server(command, ours)]
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from None
    except ValidationError as exc:
        raise click.UsageError(_validation_message(exc)) from None
    settings, generated, json_logs = _prepare(options, None)
    probed = _probe_or_exit(specs, "the bridged server {!r}" if config_file is not None else "the bridged command")
    if config_file is None:
        info, spec = probed[0]
        application = _build(settings, json_logs, make=lambda: bridge_app(Bridge(spec, info), settings))
    else:
        application = _build(settings, json_logs, make=lambda: mounted_bridges(probed, settings))
    from datapulse.server import run

    run(application, settings, generated_token=generated)


@main.command()
@click.option(
    "--upstream-transport",
    type=click.Choice(["auto", "modern", "streamable-http", "sse"]),
    default="auto",
    show_default=True,
    help="How to reach URL: auto tries 2026-07-28 server/discover, then a 2025 initialize, then a 2024-11-05 "
    "SSE GET; the others pin one era.",
)
@click.option(
    "--request-timeout-s", type=float, default=None, help="Longest wait for one forwarded answer [default: 300]."
)
@click.option("--name", "upstream_name", default=None, help="The upstream's name in logs and metrics [default: host].")
@click.option(
    "--upstream-header",
    "upstream_headers",
    multiple=True,
    metavar="NAME=VALUE",
    help="A header every upstream request carries (e.g. an API key); repeatable.",
)
@click.option(
    "--upstream-bearer-env",
    default=None,
    metavar="NAME",
    help="An environment variable whose value is sent upstream as 'Authorization: Bearer <value>'.",
)
@click.option("--upstream-oauth-token-url", default=None, help="OAuth client credentials: the token endpoint.")
@click.option("--upstream-oauth-client-id", default=None, help="OAuth client credentials: the client id.")
@click.option(
    "--upstream-oauth-client-secret-env",
    default=None,
    metavar="NAME",
    help="OAuth client credentials: the environment variable holding the client secret.",
)
@click.option("--upstream-oauth-scope", default=None, help="OAuth client credentials: the scope to ask for.")
@click.option(
    "--upstream-oauth-resource", default=None, help="OAuth client credentials: the resource (RFC 8707) to ask for."
)
@click.option(
    "--config",
    "config_file",
    default=None,
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="A TOML file of several servers (urls and commands) composed into one, each name prefixed (instead of URL).",
)
@_pool_and_filter_options
@click.argument("url", required=False)
@_settings_options
def proxy(
    url: str | None,
    config_file: str | None,
    upstream_transport: str,
    request_timeout_s: float | None,
    upstream_name: str | None,
    **options: Any,
) -> None:
    """Serve the remote MCP server at URL on every DataPulse transport:

        datapulse proxy [options] https://mcp.example.com/mcp

        datapulse proxy --config federation.toml [options]

    Clients of any era reach it at /mcp (2026-07-28 and 2025 Streamable HTTP), /sse (2024-11-05) and
    /events + /message, with DataPulse's auth, scopes, limits, metrics and audit; DataPulse talks to the
    upstream in the era it speaks, found at start. Each client session gets its own upstream session
    (--isolation per-session, the default) unless the upstream is 2026-07-28, which has none.
    """
    from datapulse.bridge.config import load_bridge_config
    from datapulse.bridge.federation import check_prefixes
    from datapulse.bridge.host import bridge_app, federation_app
    from datapulse.bridge.proxy import Bridge
    from datapulse.config import ConfigurationError

    ours = {key: options.pop(key) for key in [*_BRIDGE_OPTIONS, *_FILTER_OPTIONS] if key in options}
    upstream_options = {key: options.pop(key) for key in list(options) if key.startswith("upstream_")}
    if options.get("workers") not in (None, 1):
        raise click.UsageError("--workers: datapulse proxy serves from one process; it applies to datapulse serve")
    if (url is None) == (config_file is None):
        raise click.UsageError("give either a URL to proxy or --config FILE, not both and not neither")
    given = [key for key, value in {**ours, **upstream_options}.items() if value not in (None, ())]
    overridden = given or request_timeout_s is not None or upstream_name is not None or upstream_transport != "auto"
    if config_file is not None and overridden:
        raise click.UsageError("with --config, set upstream options per server in the file (or under [defaults])")
    try:
        if config_file is not None:
            specs = load_bridge_config(config_file)
            check_prefixes(specs)
        else:
            assert url is not None
            ours["credentials"] = _upstream_credentials(upstream_options)
            specs = [_url_server(url, upstream_name, upstream_transport, request_timeout_s, ours)]
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from None
    except ValidationError as exc:
        raise click.UsageError(_validation_message(exc)) from None
    settings, generated, json_logs = _prepare(options, None)
    probed = _probe_or_exit(specs, "the upstream server" if config_file is None else "the server {!r}")
    if config_file is not None:
        application = _build(settings, json_logs, make=lambda: federation_app(probed, settings))
    else:
        info, settled = probed[0]
        application = _build(settings, json_logs, make=lambda: bridge_app(Bridge(settled, info), settings))
    from datapulse.server import run

    run(application, settings, generated_token=generated)


def _probe_or_exit(specs: Sequence[BridgedServer], what: str) -> list[tuple[Any, BridgedServer]]:
    """`probe_all` the servers, or exit 1 naming the first that does not work (``what``: how to name it, ``{!r}``
    for its name) and why.

    Raises:
        click.ClickException: a server does not work (exit status 1).
    """
    from datapulse.bridge.host import BridgeStartError, probe_all

    try:
        return anyio.run(probe_all, specs)
    except BridgeStartError as exc:
        raise click.ClickException(f"{what.format(exc.server)} does not work: {exc.__cause__ or exc}") from None


def _url_server(
    url: str, name: str | None, transport: str, request_timeout_s: float | None, options: dict[str, Any]
) -> BridgedServer:
    """The `BridgedServer` of ``datapulse proxy [options] URL``; options left None take the defaults.

    Raises:
        ConfigurationError, ValidationError: an option's value is invalid.
    """
    from urllib.parse import urlsplit

    from datapulse.bridge.config import BridgedServer

    fields = _pool_and_filter_fields(options)
    fields["transport"] = transport
    fields["credentials"] = options.get("credentials")
    if request_timeout_s is not None:
        fields["request_timeout_s"] = request_timeout_s
    host = urlsplit(url).hostname or "upstream"
    return BridgedServer(name=name or _server_name(host), url=url, **fields)


def _upstream_credentials(options: dict[str, Any]) -> Any:
    """The `UpstreamCredentials` of proxy's ``--upstream-*`` options, or None when none is given.

    Raises:
        ConfigurationError: a header is not NAME=VALUE; ValidationError: a value is invalid.
    """
    from datapulse.bridge.credentials import UpstreamCredentials
    from datapulse.config import ConfigurationError

    headers: dict[str, str] = {}
    for item in options.get("upstream_headers") or ():
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise ConfigurationError(f"--upstream-header {name.strip() or item!r}: expected NAME=VALUE")
        headers[name.strip()] = value
    oauth = {
        key.removeprefix("upstream_oauth_"): value
        for key, value in options.items()
        if key.startswith("upstream_oauth_") and value is not None
    }
    bearer_env = options.get("upstream_bearer_env")
    if not headers and not oauth and bearer_env is None:
        return None
    return UpstreamCredentials.model_validate({"headers": headers, "bearer_env": bearer_env, "oauth": oauth or None})


def _pool_and_filter_fields(options: dict[str, Any]) -> dict[str, Any]:
    """`BridgedServer` fields from the options of `_pool_and_filter_options` that were given."""
    from datapulse.bridge.filters import NameFilter, parse_patterns

    fields: dict[str, Any] = {
        field: options[key] for key, field in _BRIDGE_OPTIONS.items() if options.get(key) not in (None, ())
    }
    for kind in ("tools", "resources", "prompts"):
        allow, deny = parse_patterns(options.get(f"allow_{kind}")), parse_patterns(options.get(f"deny_{kind}"))
        fields[kind] = NameFilter(allow, deny)
    return fields


def _command_server(command: tuple[str, ...], options: dict[str, Any]) -> BridgedServer:
    """The `BridgedServer` of ``datapulse bridge [options] -- COMMAND``; options left None take the defaults.

    Raises:
        ConfigurationError, ValidationError: an option's value is invalid.
    """
    from datapulse.bridge.config import BridgedServer
    from datapulse.bridge.environment import parse_env_assignments

    fields = _pool_and_filter_fields(options)
    fields["env"] = parse_env_assignments(options["env_items"])
    return BridgedServer(name=_server_name(command[0]), command=command[0], args=tuple(command[1:]), **fields)


def _server_name(command: str) -> str:
    """A bridged server's name from its command (``npx`` -> ``npx``; for logs and metrics)."""
    base = command.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", base)[:64] or "bridged"


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(item) for item in error["loc"]) or "settings"
        parts.append(f"--{location.replace('_', '-')}: {error['msg']}")
    return "; ".join(parts)
