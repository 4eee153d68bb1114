"""Building the DataPulse app(s) that serve bridged stdio servers: one server at the root, or several under
their path prefixes behind a `PrefixRouter` (``datapulse bridge --config FILE``).

Each bridged server is a full DataPulse app (`create_app`) whose MCP server is a `Bridge`. Its settings are
the command's settings with, per server: ``root_path`` extended by the server's path, ``public_url`` likewise,
``scopes`` replaced by the server's own when it sets them, and its own Redis key prefix, so that in cluster
mode two bridged servers never share session keys or channels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

import anyio
from fastapi import FastAPI
from mcp import types

from datapulse.app import create_app, runtime_of
from datapulse.bridge.child import ChildStartError
from datapulse.bridge.config import BridgedServer
from datapulse.bridge.continuity import UpstreamSessions
from datapulse.bridge.federation import Federation, federation_settings
from datapulse.bridge.passthrough import passthrough_for
from datapulse.bridge.proxy import Bridge, probe
from datapulse.config import ConfigurationError, Settings
from datapulse.mounts import Mount, PrefixRouter
from datapulse.runtime import Runtime

__all__ = ["BridgeStartError", "bridge_app", "federation_app", "mount_settings", "mounted_bridges", "probe_all"]

_MAX_KEY_PREFIX_CHARS: Final = 32


class BridgeStartError(RuntimeError):
    """A bridged server's command does not work at start-up.

    Attributes:
        server: the bridged server's name.
    """

    def __init__(self, server: str, cause: ChildStartError) -> None:
        super().__init__(f"{server}: {cause}")
        self.server = server


async def probe_all(specs: Sequence[BridgedServer]) -> list[tuple[types.InitializeResult, BridgedServer]]:
    """`probe` every server at once; their handshake answers and settled specs in the order of ``specs``.

    Raises:
        BridgeStartError: the first server (in ``specs`` order) whose command does not work.
    """
    answers: dict[int, tuple[types.InitializeResult, BridgedServer] | ChildStartError] = {}

    async def one(index: int, spec: BridgedServer) -> None:
        try:
            answers[index] = await probe(spec)
        except ChildStartError as exc:
            answers[index] = exc

    async with anyio.create_task_group() as probes:
        for index, spec in enumerate(specs):
            probes.start_soon(one, index, spec)
    results: list[tuple[types.InitializeResult, BridgedServer]] = []
    for index, spec in enumerate(specs):
        answer = answers[index]
        if isinstance(answer, ChildStartError):
            raise BridgeStartError(spec.name, answer)
        results.append(answer)
    return results


def mount_settings(settings: Settings, spec: BridgedServer) -> Settings:
    """The settings of the app serving ``spec`` under its path (see the module docstring)."""
    key_prefix = f"{settings.redis_key_prefix}.{spec.name}"
    if len(key_prefix) > _MAX_KEY_PREFIX_CHARS:
        key_prefix = f"{settings.redis_key_prefix}.{hashlib.sha256(spec.name.encode()).hexdigest()[:12]}"
        key_prefix = key_prefix[-_MAX_KEY_PREFIX_CHARS:]
    update: dict[str, object] = {
        "root_path": settings.root_path + spec.path,
        "redis_key_prefix": key_prefix,
        "scopes": spec.scopes if spec.scopes is not None else settings.scopes,
    }
    if settings.public_url:
        update["public_url"] = settings.public_url.rstrip("/") + spec.path
    return settings.model_copy(update=update)


def bridge_app(bridge: Bridge, settings: Settings) -> FastAPI:
    """The DataPulse app serving ``bridge``; the bridge is given its sessions, metrics and auditor (`Bridge.sessions`),
    and ``/ready`` reports whether it is down. A 2026-07-28 upstream's 2026-07-28 requests take the pass-through
    (`datapulse.bridge.passthrough`) unless ``settings.fast_path`` is off.

    Raises:
        ConfigurationError: see `create_app`.
    """
    app = create_app(settings, server=bridge.server)
    runtime = runtime_of(app)
    attach(bridge, runtime)
    runtime.upstreams = lambda: {bridge.spec.name: bridge.down}
    forward = passthrough_for(bridge, settings.fast_path)
    if forward is not None:
        runtime.fast_path = forward
    return app


def attach(bridge: Bridge, runtime: Runtime) -> None:
    """Give ``bridge`` the app's sessions, metrics and auditor, and in cluster mode, for a Streamable HTTP upstream,
    the record of its upstream sessions (`Bridge.continuity`)."""
    bridge.sessions, bridge.metrics, bridge.auditor = runtime.sessions, runtime.metrics, runtime.auditor
    if runtime.cluster is not None and bridge.spec.remote and bridge.spec.transport == "streamable-http":
        redis = runtime.cluster.redis
        bridge.continuity = UpstreamSessions(redis, runtime.settings.redis_key_prefix, bridge.spec.name)


def federation_app(probed: Sequence[tuple[types.InitializeResult, BridgedServer]], settings: Settings) -> FastAPI:
    """One app serving every server of ``probed`` (from `probe_all`) composed into one (`Federation`): each
    member's scopes and rate limit on its prefixed names (`federation_settings`), ``/ready`` naming members that are
    down.

    Raises:
        ConfigurationError: prefixes that could collide (`check_prefixes`), a member's scopes that do not parse, or
            see `create_app`.
    """
    federation = Federation(probed)
    app = create_app(federation_settings(settings, [spec for _, spec in probed]), server=federation.server)
    runtime = runtime_of(app)
    for member in federation.members:
        attach(member.bridge, runtime)
    runtime.upstreams = federation.status
    return app


def mounted_bridges(probed: Sequence[tuple[types.InitializeResult, BridgedServer]], settings: Settings) -> PrefixRouter:
    """One app per bridged server, each under its path (``probed``: from `probe_all`).

    Raises:
        ConfigurationError: see `create_app` (e.g. a server's ``scopes`` do not parse).
    """
    mounts = []
    for info, spec in probed:
        try:
            app = bridge_app(Bridge(spec, info), mount_settings(settings, spec))
        except ConfigurationError as exc:
            raise ConfigurationError(f"servers.{spec.name}: {exc}") from None
        mounts.append(Mount(spec.name, spec.path, app))
    return PrefixRouter(mounts)
