"""The ``datapulse`` command: ``datapulse serve [APP] [options]``.

Every option maps 1:1 onto a `Settings` field (``--max-body-bytes`` → ``max_body_bytes``) and
falls back to its environment variable (``DATAPULSE_MAX_BODY_BYTES``), then the default.
"""

from __future__ import annotations

import re
import secrets
import sys
from typing import Any

import anyio
import click
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo

from datapulse import __version__
from datapulse.config import Settings

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


def _build(settings: Settings, json_logs: bool | None, *, server: object | None = None) -> Any:
    """`create_app`, then logging with the node id and tracing configured.

    Raises:
        click.UsageError: the settings cannot make a working server, or OTLP export lacks its packages.
    """
    from datapulse.app import ConfigurationError, create_app, runtime_of
    from datapulse.logs import configure_logging
    from datapulse.tracing import configure_tracing

    try:
        application = create_app(settings, server=server)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from None
    runtime = runtime_of(application)
    configure_logging(settings.log_level, json=json_logs, node_id=runtime.node_id)
    try:
        configure_tracing(settings.otlp_endpoint, runtime.server.name)
    except RuntimeError as exc:
        raise click.UsageError(str(exc)) from None
    return application


@main.command(context_settings={"ignore_unknown_options": False})
@click.option(
    "--isolation",
    type=click.Choice(["per-session", "shared"]),
    default="per-session",
    show_default=True,
    help="per-session: a child process per MCP session (started lazily); shared: one child for every client.",
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
@click.option(
    "--start-timeout-s", type=float, default=30.0, show_default=True, help="Time allowed for a child's start."
)
@click.option("--max-children", type=int, default=100, show_default=True, help="per-session: cap on live children.")
@click.option("--idle-timeout-s", type=float, default=600.0, show_default=True, help="Stop a child idle this long.")
@click.option("--allow-tools", default=None, metavar="GLOBS", help="Only these tools are exposed (comma-separated).")
@click.option("--deny-tools", default=None, metavar="GLOBS", help="These tools are hidden and refused.")
@click.option("--allow-resources", default=None, metavar="GLOBS", help="Only these resource URIs are exposed.")
@click.option("--deny-resources", default=None, metavar="GLOBS", help="These resource URIs are hidden and refused.")
@click.option("--allow-prompts", default=None, metavar="GLOBS", help="Only these prompts are exposed.")
@click.option("--deny-prompts", default=None, metavar="GLOBS", help="These prompts are hidden and refused.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@_settings_options
def bridge(command: tuple[str, ...], **options: Any) -> None:
    """Serve the stdio MCP server started by COMMAND on every DataPulse transport:

        datapulse bridge [options] -- COMMAND [ARGS...]

    Its tools, resources and prompts are served at /mcp, /sse, /events + /message with DataPulse's auth,
    limits, metrics and audit. The command is started once at start-up to check it works.
    """
    from datapulse.bridge.config import BridgedServer
    from datapulse.bridge.environment import DEFAULT_ENV_ALLOW, parse_env_assignments
    from datapulse.bridge.filters import NameFilter, parse_patterns
    from datapulse.config import ConfigurationError

    bridge_keys = {
        "isolation", "env_items", "env_allow", "cwd", "start_timeout_s", "max_children", "idle_timeout_s",
        "allow_tools", "deny_tools", "allow_resources", "deny_resources", "allow_prompts", "deny_prompts",
    }  # fmt: skip
    ours = {key: options.pop(key) for key in bridge_keys}
    try:
        spec = BridgedServer(
            name=_server_name(command[0]),
            command=command[0],
            args=tuple(command[1:]),
            isolation=ours["isolation"],
            env=parse_env_assignments(ours["env_items"]),
            env_allow=parse_patterns(ours["env_allow"]) if ours["env_allow"] is not None else DEFAULT_ENV_ALLOW,
            cwd=ours["cwd"],
            start_timeout_s=ours["start_timeout_s"],
            max_children=ours["max_children"],
            idle_timeout_s=ours["idle_timeout_s"],
            tools=NameFilter(parse_patterns(ours["allow_tools"]), parse_patterns(ours["deny_tools"])),
            resources=NameFilter(parse_patterns(ours["allow_resources"]), parse_patterns(ours["deny_resources"])),
            prompts=NameFilter(parse_patterns(ours["allow_prompts"]), parse_patterns(ours["deny_prompts"])),
        )
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from None
    except ValidationError as exc:
        raise click.UsageError(_validation_message(exc)) from None
    settings, generated, json_logs = _prepare(options, None)
    from datapulse.bridge.child import ChildStartError
    from datapulse.bridge.proxy import Bridge, probe

    try:
        info = anyio.run(probe, spec)
    except ChildStartError as exc:
        raise click.ClickException(f"the bridged command does not work: {exc}") from None
    bridged = Bridge(spec, info)
    application = _build(settings, json_logs, server=bridged.server)
    from datapulse.app import runtime_of

    runtime = runtime_of(application)
    bridged.session_alive = lambda session_id: runtime.sessions.peek(session_id) is not None
    from datapulse.server import run

    run(application, settings, generated_token=generated)


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
