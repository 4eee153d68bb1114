"""Running DataPulse under uvicorn, with a shutdown that ends open streams first (bounded).

uvicorn's own graceful shutdown waits for open connections *before* the app's lifespan shutdown,
so an open SSE stream would hold ``Ctrl-C`` forever. `DataPulseServer` stops accepting, ends every
stream and session itself (each client gets a ``retry:`` hint), then lets uvicorn finish, with
in-flight requests bounded by ``graceful_shutdown_timeout_s``.
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import anyio
import uvicorn
from starlette.types import ASGIApp

from datapulse._uvicorn import http_protocol
from datapulse._version import __version__
from datapulse.app import shutdown
from datapulse.client_config import CLIENT_NAMES, DEFAULT_TOKEN_ENV, SERVER_NAME, claude_code_config, mcp_endpoint
from datapulse.config import Settings
from datapulse.mounts import PrefixRouter, runtimes_of

log = logging.getLogger("datapulse")


class DataPulseServer(uvicorn.Server):
    """A uvicorn server that ends DataPulse streams at the start of shutdown and reports readiness.

    Args:
        config: the uvicorn config (its ``app`` must be built by `create_app`, or be a `PrefixRouter` of such apps).
        app: the same app, to reach its runtime(s).
        on_started: called once with the bound base URL after the listening sockets are open.
        freeze_gc: freeze the objects alive after start-up (`freeze_startup_objects`); for a process that
            serves only this app (``datapulse serve``), not for one embedding it.
        gc_gen0_threshold: with ``freeze_gc``, the collector's first-generation threshold from then on
            (``Settings.gc_gen0_threshold``); None leaves it as it is.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        app: ASGIApp,
        on_started: Callable[[str], None] | None = None,
        *,
        freeze_gc: bool = False,
        gc_gen0_threshold: int | None = None,
    ) -> None:
        super().__init__(config)
        self._app = app
        self._on_started = on_started
        self._freeze_gc = freeze_gc
        self._gc_gen0_threshold = gc_gen0_threshold

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        if self._freeze_gc:
            freeze_startup_objects(self._gc_gen0_threshold)
        if self._on_started is not None:
            self._on_started(self.bound_url())

    def bound_url(self) -> str:
        """``http://host:port`` (``https://`` when serving TLS) of the first listening socket (the real port when
        port 0 was asked for)."""
        scheme = "https" if self.config.is_ssl else "http"
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                host = f"[{host}]" if ":" in host else host
                return f"{scheme}://{host}:{port}"
        return f"{scheme}://{self.config.host}:{self.config.port}"

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        async with anyio.create_task_group() as drains:  # every mounted app drains at once, each within its bound
            for runtime in runtimes_of(self._app):
                drains.start_soon(shutdown, runtime)
        await super().shutdown(sockets)
        # uvicorn re-raises the signal that stopped it once serve() returns, which would turn a clean,
        # complete shutdown into a KeyboardInterrupt / SIGTERM death; the shutdown is already done.
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            for sig in captured:
                log.info("stopped by %s", signal.Signals(sig).name)
            captured.clear()


def freeze_startup_objects(gen0_threshold: int | None = None) -> None:
    """Move every object alive after start-up (modules, the app, the SDK's models: about 100,000) out of
    the cyclic garbage collector's reach (`gc.freeze`), then set the collector's first-generation threshold to
    ``gen0_threshold`` if given (``gc.set_threshold``; the older generations' thresholds are kept).

    They live as long as the process, yet each full collection would scan them all again: about 90 ms
    per pass on the benchmark machine, and under forwarding load the collector ran one such pass a
    second on both instances (the p99 spikes of ~100 ms in bench/cluster.py). After the freeze a pass
    scans only what requests created since.
    """
    gc.collect()
    gc.freeze()
    if gen0_threshold is not None:
        gc.set_threshold(gen0_threshold, *gc.get_threshold()[1:])


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """The uvicorn settings DataPulse runs with (uvloop and httptools when installed); ``app`` is the ASGI app,
    or None for a config that only binds the socket (`uvicorn.Config.bind_socket`).

    TLS is uvicorn's (``ssl_certfile``/``ssl_keyfile``, checked when the settings load). uvicorn's own proxy
    headers handling stays off: DataPulse believes ``X-Forwarded-*`` only from ``trusted_proxies`` itself.
    """
    password = settings.ssl_keyfile_password
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        root_path=settings.root_path,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=max(1, int(settings.graceful_shutdown_timeout_s + 0.999)),
        timeout_keep_alive=30,
        backlog=4096,
        proxy_headers=False,
        ssl_certfile=settings.ssl_certfile,
        ssl_keyfile=settings.ssl_keyfile,
        ssl_keyfile_password=password.get_secret_value() if password is not None else None,
        server_header=False,
        http=http_protocol(),  # head and body of a response in one write (datapulse._uvicorn)
        lifespan="on",
        log_config=None,  # uvicorn's lines go through DataPulse's structured logging (datapulse.logs)
    )


def banner(
    url: str,
    settings: Settings,
    server_name: str,
    generated_token: str | None,
    *,
    workers: int = 1,
    mounts: Sequence[tuple[str, str]] = (),
) -> str:
    """The startup text: endpoints, how to authenticate, and a client configuration snippet.

    Args:
        url: the bound ``http://host:port`` (``https://`` when serving TLS).
        server_name: what is served (the MCP server's name, or a summary for several mounts).
        generated_token: the bearer token generated for this run, shown once; None when configured.
        workers: worker processes (``datapulse serve --workers``).
        mounts: ``(name, prefix)`` of each app a `PrefixRouter` serves; empty for one app at the root path.
    """
    base = url + settings.root_path
    if settings.public_url:
        base = settings.base_url
    if settings.insecure_no_auth and not settings.has_static_tokens:
        auth_line = "Auth:      NONE (insecure_no_auth) - anyone who can reach this port can call the tools"
        authorization: str | None = None
    elif generated_token is not None:
        auth_line = f"Auth:      Authorization: Bearer {generated_token}   (generated for this run; shown once)"
        authorization = f"Bearer {generated_token}"
    else:
        auth_line = "Auth:      Authorization: Bearer <your DATAPULSE_TOKEN / DATAPULSE_TOKENS token>"
        authorization = f"Bearer ${{{DEFAULT_TOKEN_ENV}}}"
    entries = {name: base + prefix for name, prefix in mounts} if mounts else {SERVER_NAME: base}
    servers = {name: mcp_endpoint(at) for name, at in entries.items()}
    lines = [
        f"DataPulse {__version__} listening on {url}  (serving {server_name}"
        + (f", {workers} worker processes)" if workers > 1 else ")"),
    ]
    if mounts:
        for name, prefix in mounts:
            at = base + prefix
            lines.append(f"  {name}: {at}/mcp   {at}/sse   {at}/events + {at}/message")
    else:
        lines += [
            f"  Streamable HTTP (2025-03-26 ... 2026-07-28): {base}/mcp",
            f"  HTTP+SSE (2024-11-05):                       {base}/sse",
            f"  DataPulse API:  GET {base}/events?session_id=ID   POST {base}/message?session_id=ID",
        ]
    other_clients = ", ".join(name for name in CLIENT_NAMES if name != "claude-code")
    lines += [
        f"  Health:                                      {base}/health",
        auth_line,
        f"Other clients ({other_clients}): datapulse config CLIENT --url {base}" + ("<prefix>" if mounts else ""),
        "Client configuration for Claude Code (.mcp.json in the project root):",
        json.dumps(claude_code_config(servers, authorization), indent=2),
    ]
    return "\n".join(lines)


def run(app: ASGIApp, settings: Settings, *, generated_token: str | None = None, out: TextIO = sys.stdout) -> None:
    """Serve ``app`` (built by `create_app`, or a `PrefixRouter` of such apps) until SIGINT/SIGTERM, printing the
    banner once listening."""
    mounts: list[tuple[str, str]] = []
    if isinstance(app, PrefixRouter):
        mounts = [(mount.name, mount.prefix) for mount in sorted(app.mounts, key=lambda mount: mount.prefix)]
        server_name = f"{len(mounts)} servers: " + ", ".join(name for name, _prefix in mounts)
    else:
        server_name = runtimes_of(app)[0].server.name

    def announce(url: str) -> None:
        print(banner(url, settings, server_name, generated_token, mounts=mounts), file=out, flush=True)

    DataPulseServer(
        uvicorn_config(app, settings),
        app,
        on_started=announce,
        freeze_gc=True,
        gc_gen0_threshold=settings.gc_gen0_threshold,
    ).run()
