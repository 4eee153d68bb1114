"""The session registry: which sessions exist, whose they are, and how many — for every transport.

`SessionRegistry` is the seam the scale-out work puts on Redis; `MemorySessionRegistry` is the
single-process backend. The registry holds records only (facts that can be shared); the live
objects of a session (its SDK connection, its open streams) stay with the process that owns it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from datapulse.errors import TooManySessions, Unavailable


class SessionKind(StrEnum):
    """The transport a session belongs to."""

    STREAMABLE_HTTP = "streamable_http"
    """2025-03-26 … 2025-11-25 Streamable HTTP (``Mcp-Session-Id`` on ``/mcp``)."""
    SSE = "sse"
    """2024-11-05 HTTP+SSE (``GET /sse`` + ``POST /messages``)."""
    DATAPULSE_API = "datapulse_api"
    """The DataPulse API (``GET /events`` + ``POST /message``)."""


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """The shareable facts about one session.

    Attributes:
        session_id: the id the client presents (``Mcp-Session-Id`` or ``session_id``).
        kind: which transport opened it.
        principal: the authenticated principal that opened it; only it may use the session.
        created_at: opening time, in the registry clock's seconds.
        owner: the node id of the instance holding the session's live state ("" in single-process mode).
        epoch: a random per-session prefix of the session's SSE stream keys (so event ids are unguessable).
        protocol_version: the negotiated protocol version, once known (Streamable HTTP sessions).
        initialize_params: the client's ``initialize`` params as JSON text, once initialized (failover
            rebuilds the session from them without a new handshake).
    """

    session_id: str
    kind: SessionKind
    principal: str
    created_at: float
    owner: str = ""
    epoch: str = ""
    protocol_version: str | None = None
    initialize_params: str | None = None


class SessionRegistry(Protocol):
    """Storage of session records with caps and idle tracking (all times in seconds, registry clock)."""

    async def add(self, record: SessionRecord, *, max_total: int, max_per_principal: int) -> None:
        """Register a new session.

        Raises:
            Unavailable: ``max_total`` sessions already open (HTTP 503).
            TooManySessions: the principal already has ``max_per_principal`` sessions (HTTP 429).
            ValueError: the session id is already registered.
        """
        ...

    async def get(self, session_id: str) -> SessionRecord | None:
        """The record for ``session_id``, or None."""
        ...

    async def touch(self, session_id: str, now: float) -> None:
        """Record activity on ``session_id`` at ``now`` (no-op for unknown ids)."""
        ...

    def last_seen(self, session_id: str) -> float | None:
        """When a session held by this process last had a request (registry clock seconds, as recorded by `touch`,
        which may skip writes closer together than its own interval), or None if this process does not hold it."""
        ...

    async def remove(self, session_id: str) -> SessionRecord | None:
        """Forget ``session_id``; returns its record, or None if it was unknown."""
        ...

    def forget(self, session_id: str) -> None:
        """Stop counting ``session_id`` as held by this process, leaving its record (the session was handed over
        to, or taken over by, another instance)."""
        ...

    async def annotate(self, session_id: str, *, protocol_version: str, initialize_params: str) -> None:
        """Store the handshake's outcome on ``session_id`` (no-op for unknown ids)."""
        ...

    async def claim(self, session_id: str, *, from_owner: str, to_owner: str, now: float) -> SessionRecord | None:
        """Move ``session_id`` to ``to_owner`` if ``from_owner`` still owns it (compare-and-set: of two
        instances claiming a dead owner's session, exactly one wins).

        Returns:
            The updated record, or None if the session is unknown or owned by someone else now.
        """
        ...

    async def idle_since(self, cutoff: float) -> list[str]:
        """Ids of sessions whose last activity is before ``cutoff``."""
        ...

    async def counts(self) -> Mapping[SessionKind, int]:
        """Open sessions per kind."""
        ...


class MemorySessionRegistry:
    """In-process `SessionRegistry` (the default without Redis)."""

    def __init__(self) -> None:
        self._records: dict[str, SessionRecord] = {}
        self._last_seen: dict[str, float] = {}
        self._per_principal: Counter[str] = Counter()
        self._per_kind: Counter[SessionKind] = Counter()

    async def add(self, record: SessionRecord, *, max_total: int, max_per_principal: int) -> None:
        if record.session_id in self._records:
            raise ValueError(f"session {record.session_id!r} already exists")
        if len(self._records) >= max_total:
            raise Unavailable(
                f"Service Unavailable: the server holds its maximum of {max_total} sessions; retry later",
                headers={"Retry-After": "5"},
            )
        if self._per_principal[record.principal] >= max_per_principal:
            raise TooManySessions(
                f"Too Many Sessions: principal already holds {max_per_principal} sessions; close some (DELETE) first",
                headers={"Retry-After": "5"},
            )
        self._records[record.session_id] = record
        self._last_seen[record.session_id] = record.created_at
        self._per_principal[record.principal] += 1
        self._per_kind[record.kind] += 1

    async def get(self, session_id: str) -> SessionRecord | None:
        return self._records.get(session_id)

    async def touch(self, session_id: str, now: float) -> None:
        if session_id in self._last_seen:
            self._last_seen[session_id] = now

    def last_seen(self, session_id: str) -> float | None:
        return self._last_seen.get(session_id)

    async def remove(self, session_id: str) -> SessionRecord | None:
        record = self._records.pop(session_id, None)
        if record is None:
            return None
        del self._last_seen[session_id]
        self._per_principal[record.principal] -= 1
        if self._per_principal[record.principal] <= 0:
            del self._per_principal[record.principal]
        self._per_kind[record.kind] -= 1
        return record

    def forget(self, session_id: str) -> None:
        """Nothing to do: a single process never hands a session over."""

    async def annotate(self, session_id: str, *, protocol_version: str, initialize_params: str) -> None:
        record = self._records.get(session_id)
        if record is not None:
            self._records[session_id] = replace(
                record, protocol_version=protocol_version, initialize_params=initialize_params
            )

    async def claim(self, session_id: str, *, from_owner: str, to_owner: str, now: float) -> SessionRecord | None:
        record = self._records.get(session_id)
        if record is None or record.owner != from_owner:
            return None
        record = self._records[session_id] = replace(record, owner=to_owner)
        self._last_seen[session_id] = now
        return record

    async def idle_since(self, cutoff: float) -> list[str]:
        return [sid for sid, seen in self._last_seen.items() if seen < cutoff]

    async def counts(self) -> Mapping[SessionKind, int]:
        return {kind: self._per_kind.get(kind, 0) for kind in SessionKind}
