"""Several DataPulse apps on one port, each under its own path prefix (``/github/mcp``, ``/files/sse``).

`PrefixRouter` is a pure ASGI app: a request goes to the app whose prefix is the longest one that starts its
path (relative to the ASGI ``root_path`` a proxy or uvicorn sets), with ``root_path`` extended by that prefix,
so the app answers ``/github/mcp`` as its ``/mcp`` and its HTTP+SSE ``endpoint`` event names
``/github/messages``. The RFC 9728 metadata of a prefixed resource lives at
``/.well-known/oauth-protected-resource/github/mcp`` (the well-known segment goes first, RFC 9728 §3.1); such
a request goes to the app that serves that location. The router runs every app's DataPulse lifespan
(`datapulse.app.mounted_lifespan`) in its own ASGI lifespan, and answers ``/health`` and ``/ready`` for all of
them unless an app is mounted at the root. Any other path is a 404 naming no prefix (the caller may not be
authenticated yet).

Each app keeps its own sessions, limits, metrics (``/github/metrics``) and audit: a session opened under one
prefix is unknown under another.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from datapulse._version import __version__
from datapulse.app import mounted_lifespan, runtime_of
from datapulse.auth.resource import WELL_KNOWN
from datapulse.errors import MethodNotFound
from datapulse.runtime import Runtime
from datapulse.transports._http import send_error, send_json

__all__ = ["Mount", "PrefixRouter", "runtimes_of"]

WELL_KNOWN_PREFIX = "/.well-known/"


@dataclass(frozen=True)
class Mount:
    """One app under a prefix.

    Attributes:
        name: names the app in ``/health`` and logs.
        prefix: ``/github`` (no trailing ``/``); ``""`` mounts the app at the root, under every other prefix.
        app: an app built by `datapulse.app.create_app` with ``settings.root_path`` ending in ``prefix``.
    """

    name: str
    prefix: str
    app: FastAPI


class PrefixRouter:
    """Dispatches requests by path prefix to DataPulse apps and runs their lifespans.

    Args:
        mounts: the apps; prefixes must differ.

    Raises:
        ValueError: two mounts share a prefix or a name, a prefix is not ``""`` or ``/segment[/...]`` without a
            trailing ``/``, or there is no mount.
    """

    def __init__(self, mounts: Sequence[Mount]) -> None:
        if not mounts:
            raise ValueError("PrefixRouter needs at least one mount")
        for mount in mounts:
            if mount.prefix and (not mount.prefix.startswith("/") or mount.prefix.endswith("/")):
                raise ValueError(f"mount prefix {mount.prefix!r} must be '' or start with '/' and not end with '/'")
        for what, values in (("prefix", [m.prefix for m in mounts]), ("name", [m.name for m in mounts])):
            if len(set(values)) != len(values):
                raise ValueError(f"two mounts share a {what}: {sorted(values)}")
        self.mounts: tuple[Mount, ...] = tuple(sorted(mounts, key=lambda mount: len(mount.prefix), reverse=True))

    @property
    def runtimes(self) -> list[Runtime]:
        """The runtime of every mounted app, longest prefix first."""
        return [runtime_of(mount.app) for mount in self.mounts]

    def match(self, path: str) -> Mount | None:
        """The mount serving ``path`` (relative to the ASGI root path), or None."""
        if path.startswith(WELL_KNOWN_PREFIX):
            for mount in self.mounts:
                served = runtime_of(mount.app).security.resource.served_paths()
                unprefixed = path == WELL_KNOWN + served.get(path, "")  # every app serves these; only the root's count
                if path in served and not (mount.prefix and unprefixed):
                    return mount
        for mount in self.mounts:
            if not mount.prefix or path == mount.prefix or path.startswith(mount.prefix + "/"):
                return mount
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] not in ("http", "websocket"):
            return
        root: str = scope.get("root_path", "")
        path: str = scope["path"]
        relative = path[len(root) :] if root and path.startswith(root) else path
        mount = self.match(relative)
        if mount is not None:
            child = dict(scope)
            if not relative.startswith(WELL_KNOWN_PREFIX):
                child["root_path"] = root + mount.prefix
            await mount.app(child, receive, send)
        elif scope["type"] == "http" and relative == "/health":
            await self._health(send)
        elif scope["type"] == "http" and relative == "/ready":
            await self._ready(send)
        elif scope["type"] == "http":
            await send_error(send, MethodNotFound(f"Not Found: nothing is served at {relative!r}"))

    async def _health(self, send: Send) -> None:
        servers: dict[str, Any] = {}
        for mount in self.mounts:
            runtime = runtime_of(mount.app)
            status = "draining" if runtime.draining else "ok" if runtime.running else "starting"
            servers[mount.name] = {"path": mount.prefix or "/", "status": status}
        draining = any(server["status"] == "draining" for server in servers.values())
        await send_json(
            send, 200, {"status": "draining" if draining else "ok", "version": __version__, "servers": servers}
        )

    async def _ready(self, send: Send) -> None:
        problems = []
        for mount in self.mounts:
            runtime = runtime_of(mount.app)
            if not runtime.running:
                problems.append(f"{mount.name}: not started")
            elif runtime.draining:
                problems.append(f"{mount.name}: draining")
        extra = ((b"retry-after", b"1"),) if problems else ()
        body = {"status": "not ready" if problems else "ready", "problems": problems}
        await send_json(send, 503 if problems else 200, body, extra)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """The ASGI lifespan protocol: start every app's DataPulse lifespan, then stop them in reverse order."""
        await receive()  # lifespan.startup
        async with contextlib.AsyncExitStack() as stack:
            try:
                for mount in self.mounts:
                    await stack.enter_async_context(mounted_lifespan(mount.app))
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                return
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})


def runtimes_of(app: ASGIApp) -> list[Runtime]:
    """The runtimes of an app built by `datapulse.app.create_app` (one) or of a `PrefixRouter` (one per mount).

    Raises:
        TypeError: ``app`` is neither.
    """
    if isinstance(app, PrefixRouter):
        return app.runtimes
    if isinstance(app, FastAPI):
        return [runtime_of(app)]
    raise TypeError("not an app built by datapulse.create_app or a datapulse PrefixRouter")
