"""The runtime: what every transport of one DataPulse app shares (server, lifespan state, sessions, shutdown)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from datapulse import _sdk
from datapulse.config import Settings
from datapulse.dashboard.tap import FrameTaps
from datapulse.sessions.live import FastLane, LiveSession
from datapulse.sessions.manager import SessionManager
from datapulse.sessions.registry import SessionKind, SessionRecord
from datapulse.sessions.streams import EventJournal

if TYPE_CHECKING:
    from datapulse.audit import Auditor
    from datapulse.cluster.bus import RedisSubscriptionBus
    from datapulse.cluster.node import ClusterNode
    from datapulse.metrics import Metrics
    from datapulse.security import Security


SessionRestorer = Callable[["Runtime", SessionRecord], Awaitable[LiveSession | None]]
"""Rebuilds a session held by a dead instance from its registry record (and journal); None: it cannot be."""


@dataclass
class Runtime:
    """Shared state of one app instance; created by `create_app`, filled in by its lifespan.

    Attributes:
        settings: the validated settings.
        server: the SDK low-level server (handler registry) being served.
        sessions: the session manager for every session-based transport.
        security: who may call, what they may use, how much (`datapulse.security`).
        lifespan_state: the value the server's lifespan yielded (entered once per process).
        shutdown: set when the server begins shutting down; long-lived streams end when it is set.
        started_at: process start, `time.time()` seconds.
        node_id: a random id for this process (log correlation, cluster routing).
        cluster: the cluster services when ``redis_url`` is set, else None (single-process mode).
        taps: who watches which session's messages (``GET /dashboard/api/watch``); the session transports
            record their messages there only while ``taps.watching(session_id)``.
    """

    settings: Settings
    server: _sdk.Server[Any]
    sessions: SessionManager
    security: Security
    metrics: Metrics
    auditor: Auditor
    lifespan_state: Any = None
    shutdown: anyio.Event = field(default_factory=anyio.Event)
    started_at: float = field(default_factory=time.time)
    node_id: str = field(default_factory=lambda: secrets.token_hex(4))
    cluster: ClusterNode | None = None
    local_bus: _sdk.SubscriptionBus | None = None
    """The server's own change-event bus (its listen streams hear it), or None for a low-level Server."""
    restorers: dict[SessionKind, SessionRestorer] = field(default_factory=dict)
    """Cluster mode: how each session kind is rebuilt from its registry record when this instance takes it over (set
    by `create_app` from the transports, so routing needs none of them); a kind without one cannot be taken over."""
    app_target: Any = None
    """What is served: an SDK ``MCPServer`` or a low-level ``Server`` (the dashboard's catalog lists an MCPServer's)."""
    cluster_bus: RedisSubscriptionBus | None = None
    """Cluster mode: the bus that relays change events between instances."""
    modern_streams: set[anyio.CancelScope] = field(default_factory=set)
    """Cancel scopes of 2026-07-28 responses streaming right now (listen streams and streamed calls)."""
    listen_streams: set[anyio.CancelScope] = field(default_factory=set)
    """The open 2026-07-28 ``subscriptions/listen`` streams (also in ``modern_streams``): ended when the cluster's
    change bus loses its subscription, since they would miss other instances' events (the clients listen again)."""
    modern_in_flight: int = 0
    """2026-07-28 requests being served right now, ``subscriptions/listen`` streams excepted (the drain waits
    for these to finish; listen streams are ended instead)."""
    gauged_sessions: set[tuple[str, str]] = field(default_factory=set)
    """(transport, protocol version) pairs the session gauge was last set for (zeroed when they empty)."""
    draining: bool = False
    """True from the start of a graceful shutdown: /ready answers 503 and no new session opens."""
    running: bool = False
    """True between the lifespan's start and the beginning of shutdown's stream teardown."""
    taps: FrameTaps = field(default_factory=FrameTaps)
    """Watchers of sessions' JSON-RPC traffic (the dashboard's watch streams), by session id."""
    fast_path: FastLane | None = None
    """Serves the hot methods with the least work: an MCPServer's (`datapulse.fastpath`), or a gateway's forwarded
    to a 2026-07-28 upstream (`datapulse.bridge.passthrough`); None when off or neither."""
    upstreams: Callable[[], Mapping[str, str | None]] | None = None
    """A bridge or gateway's servers, each with why it is down (None: up), for ``/ready``; None otherwise."""

    def new_session_id(self) -> str:
        """A fresh, unguessable session id (192 random bits, URL-safe)."""
        return secrets.token_urlsafe(24)

    def journal(self, session_id: str) -> EventJournal | None:
        """Where ``session_id``'s SSE events are stored durably (cluster mode), or None."""
        return None if self.cluster is None else self.cluster.journal(session_id)
