"""The session manager: opens, finds, expires and closes sessions of every kind.

It enforces the three session rules every transport shares: caps (global and per principal, via the
registry), principal binding (a session is found only by the principal that opened it; anyone else
gets exactly the "not found" an unknown id gets), and the idle TTL.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TypeVar

import anyio

from datapulse.errors import SessionMoved, SessionNotFound, Unavailable
from datapulse.sessions.lifecycle import SessionEvent
from datapulse.sessions.live import LiveSession
from datapulse.sessions.registry import SessionKind, SessionRecord, SessionRegistry

log = logging.getLogger("datapulse.sessions")

S = TypeVar("S", bound=LiveSession)


class SessionManager:
    """Owns the live sessions of this process and their records in a `SessionRegistry`.

    Args:
        registry: where session records and caps live.
        idle_ttl_s: a session idle (no request, no open stream) this long is expired.
        max_sessions: cap on open sessions of all kinds.
        max_sessions_per_principal: cap on one principal's open sessions.
        clock: seconds; injectable so tests can expire sessions without waiting. Wall-clock by default,
            so activity times mean the same on every instance of a cluster.
        node_id: this instance, recorded as the owner of the sessions it opens.
    """

    def __init__(
        self,
        registry: SessionRegistry,
        *,
        idle_ttl_s: float,
        max_sessions: int,
        max_sessions_per_principal: int,
        clock: Callable[[], float] = time.time,
        node_id: str = "",
    ) -> None:
        self.node_id = node_id
        self.registry = registry
        self.idle_ttl_s = idle_ttl_s
        self.max_sessions = max_sessions
        self.max_sessions_per_principal = max_sessions_per_principal
        self.clock = clock
        self._live: dict[str, LiveSession] = {}
        self._streams: Counter[SessionKind] = Counter()
        self._changed = anyio.Event()
        self._waiting = 0  # `wait_until` calls in progress
        self.accepting = True

    def signal_change(self) -> None:
        """Wake every `wait_until` to re-check its predicate (sessions call it when they open, close or go idle;
        other in-flight work, such as stateless requests, calls it when it ends). Nothing to do, and nothing
        done, while nobody waits: a session goes idle after almost every request."""
        if self._waiting:
            changed, self._changed = self._changed, anyio.Event()
            changed.set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checking after every session or stream open/close (the
        caller bounds the wait)."""
        self._waiting += 1
        try:
            while not predicate():
                await self._changed.wait()
        finally:
            self._waiting -= 1

    async def open(self, session: S) -> S:
        """Register ``session`` (caps apply) and make it findable.

        Raises:
            Unavailable: the global cap is reached or the server is shutting down (503).
            TooManySessions: the principal's cap is reached (429).
        """
        if not self.accepting:
            raise Unavailable("Service Unavailable: the server is shutting down; reconnect shortly")
        record = SessionRecord(
            session.id, session.kind, session.principal, self.clock(), owner=self.node_id, epoch=session.epoch
        )
        await self.registry.add(record, max_total=self.max_sessions, max_per_principal=self.max_sessions_per_principal)
        session.on_idle = self.signal_change
        self._live[session.id] = session
        self.signal_change()
        log.debug("session %s opened (%s, principal %s)", session.id, session.kind.value, session.principal)
        return session

    def adopt(self, session: LiveSession) -> None:
        """Make a session taken over from a dead instance findable here (its record was claimed already)."""
        session.on_idle = self.signal_change
        self._live[session.id] = session
        self.signal_change()
        log.info("session %s (%s) taken over from a dead instance", session.id[:16], session.kind.value)

    def peek(self, session_id: str) -> LiveSession | None:
        """The live session with ``session_id`` regardless of principal (for id-collision checks)."""
        return self._live.get(session_id)

    async def lookup(self, session_id: str, principal: str, kind: type[S]) -> S:
        """Find an open session of type ``kind`` opened by ``principal`` and record activity on it.

        Raises:
            SessionNotFound: unknown, closed, of another kind, or opened by another principal — one
                error for all, so a guessed or leaked id reveals nothing (HTTP 404).
            SessionMoved: the principal's session is being handed over to another instance (503, retry).
        """
        session = self._live.get(session_id)
        if session is None or not isinstance(session, kind):
            raise SessionNotFound()
        if session.principal != principal:
            log.warning("session %s: refused a request from another principal", session_id[:16])
            raise SessionNotFound()
        if session.moving:  # being handed over: the retry reaches the instance that takes it
            raise SessionMoved()
        if not session.is_open:
            raise SessionNotFound()
        await self.registry.touch(session_id, self.clock())
        return session

    async def close(self, session_id: str, reason: str, event: SessionEvent = SessionEvent.CLOSE) -> bool:
        """Close a session: end its streams and in-flight work, forget it. False if it was not open."""
        session = self._live.get(session_id)
        if session is None or not session.begin_close(event):
            return False
        log.info("session %s (%s) closing: %s", session_id[:16], session.kind.value, reason)
        try:
            session.end_streams(reason)
            await session.finish_close()
        finally:
            self._live.pop(session_id, None)
            await self.registry.remove(session_id)
            self.signal_change()
        return True

    async def reap(self) -> int:
        """Expire sessions idle for longer than the TTL; returns how many were expired.

        A session with an open stream or a request in flight is in use, not idle: its activity
        time is refreshed instead.
        """
        now = self.clock()
        expired = 0
        for session_id in await self.registry.idle_since(now - self.idle_ttl_s):
            session = self._live.get(session_id)
            if session is None:
                await self.registry.remove(session_id)
                continue
            if session.busy or session.has_open_stream:
                await self.registry.touch(session_id, now)
                continue
            if await self.close(session_id, f"idle for more than {self.idle_ttl_s:g} s", SessionEvent.EXPIRE):
                expired += 1
        return expired

    def any_busy(self) -> bool:
        """Whether any session has a request in flight."""
        return any(session.busy for session in self._live.values())

    async def release_all(self, reason: str) -> None:
        """Hand every session over to the rest of the cluster (drain in cluster mode): end its streams and local
        work and forget it here, but keep its registry record, so the next request on another instance takes it
        over (2025 sessions from their ``initialize`` parameters, DataPulse API sessions with their journal). A
        2024-11-05 session cannot be resumed anywhere; its record is removed."""
        self.accepting = False
        for session_id, session in list(self._live.items()):
            if await self._let_go(session_id, session, "handed over", reason) and session.kind is SessionKind.SSE:
                await self.registry.remove(session_id)

    async def relinquish(self, session_id: str, reason: str) -> bool:
        """Let this process's copy of a session go because another instance owns it now (it took the session over
        while this instance was cut off from the cluster store): end its streams and local work and forget it
        here, leaving the registry record, which is the new owner's. False if the session was not held here.

        Clients reconnect (their streams end with a ``retry:`` hint) and reach the new owner."""
        session = self._live.get(session_id)
        if session is None:
            return False
        return await self._let_go(session_id, session, "let go", reason)

    async def _let_go(self, session_id: str, session: LiveSession, verb: str, reason: str) -> bool:
        if not session.begin_close(SessionEvent.CLOSE):
            return False
        session.moving = True
        log.info("session %s (%s) %s: %s", session_id[:16], session.kind.value, verb, reason)
        try:
            session.end_streams(reason)
            await session.finish_close()
        finally:
            self._live.pop(session_id, None)
            self.registry.forget(session_id)
            self.signal_change()
        return True

    async def close_all(self, reason: str) -> None:
        """Close every session (shutdown)."""
        self.accepting = False
        for session_id in list(self._live):
            await self.close(session_id, reason)

    def stream_opened(self, kind: SessionKind) -> None:
        """Count an SSE stream of ``kind`` as open (reported by ``/health``)."""
        self._streams[kind] += 1
        self.signal_change()

    def stream_closed(self, kind: SessionKind) -> None:
        """Count an SSE stream of ``kind`` as closed."""
        self._streams[kind] -= 1
        self.signal_change()

    def stream_counts(self) -> Mapping[SessionKind, int]:
        """Open SSE streams per transport."""
        return {kind: self._streams.get(kind, 0) for kind in SessionKind}

    def live_sessions(self) -> list[LiveSession]:
        """A snapshot of this process's open sessions."""
        return list(self._live.values())
