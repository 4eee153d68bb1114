"""The runtime: what every transport of one DataPulse app shares (server, lifespan state, sessions, shutdown)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from datapulse import _sdk
from datapulse.config import Settings
from datapulse.sessions.manager import SessionManager


@dataclass
class Runtime:
    """Shared state of one app instance; created by `create_app`, filled in by its lifespan.

    Attributes:
        settings: the validated settings.
        server: the SDK low-level server (handler registry) being served.
        sessions: the session manager for every session-based transport.
        lifespan_state: the value the server's lifespan yielded (entered once per process).
        shutdown: set when the server begins shutting down; long-lived streams end when it is set.
        started_at: process start, `time.time()` seconds.
        node_id: a random id for this process (log correlation; cluster routing later).
    """

    settings: Settings
    server: _sdk.Server[Any]
    sessions: SessionManager
    lifespan_state: Any = None
    shutdown: anyio.Event = field(default_factory=anyio.Event)
    started_at: float = field(default_factory=time.time)
    node_id: str = field(default_factory=lambda: secrets.token_hex(4))
    modern_streams: set[anyio.CancelScope] = field(default_factory=set)
    running: bool = False
    """True between the lifespan's start and the beginning of shutdown's stream teardown."""

    def new_session_id(self) -> str:
        """A fresh, unguessable session id (192 random bits, URL-safe)."""
        return secrets.token_urlsafe(24)
