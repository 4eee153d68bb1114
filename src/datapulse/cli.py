"""The ``datapulse`` command: ``datapulse serve [APP] [options]``.

Every option maps 1:1 onto a `Settings` field (``--max-body-bytes`` → ``max_body_bytes``) and
falls back to its environment variable (``DATAPULSE_MAX_BODY_BYTES``), then the default.
"""

from __future__ import annotations

import secrets
import sys
from typing import Any

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
    from datapulse.app import ConfigurationError, create_app, runtime_of
    from datapulse.server import banner, run
    from datapulse.workers import Supervisor

    if app is not None and "." not in sys.path:
        sys.path.insert(0, ".")
    try:
        application = create_app(settings)  # with --workers, only to check the settings before starting any
        supervisor = Supervisor(settings, json_logs) if settings.workers > 1 else None
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from None
    if supervisor is not None:
        server_name = runtime_of(application).server.name
        del application

        def announce(url: str) -> None:
            print(banner(url, settings, server_name, generated, workers=settings.workers), flush=True)

        supervisor.on_ready = announce
        sys.exit(supervisor.run())
    configure_logging(settings.log_level, json=json_logs, node_id=runtime_of(application).node_id)
    from datapulse.tracing import configure_tracing

    try:
        configure_tracing(settings.otlp_endpoint, runtime_of(application).server.name)
    except RuntimeError as exc:
        raise click.UsageError(str(exc)) from None
    run(application, settings, generated_token=generated)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(item) for item in error["loc"]) or "settings"
        parts.append(f"--{location.replace('_', '-')}: {error['msg']}")
    return "; ".join(parts)
