"""Single-use stream tickets: how a browser opens ``GET /events`` or ``GET /sse`` without a token in the URL.

``EventSource`` cannot send an ``Authorization`` header, and long-lived tokens never go in query strings
(they end up in proxy and server logs). An authenticated ``POST /tickets`` returns a random ticket
(256 bits) valid for ``stream_ticket_ttl_s`` (default 60 s); the browser passes it once as
``?ticket=...`` on a stream GET, which then runs as the principal that asked for it. A ticket is
redeemed at most once (memory: popped; Redis: ``GETDEL``) and only its SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis

from datapulse.auth.principal import Principal
from datapulse.cluster.store import store_errors

TICKET_BYTES = 32
TICKET_PATHS = frozenset({"/events", "/sse"})
"""Stream endpoints that accept ``?ticket=`` (GET only)."""


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def _encode(principal: Principal) -> bytes:
    return json.dumps(
        {"n": principal.name, "s": sorted(principal.scopes), "i": principal.issuer, "u": principal.unrestricted}
    ).encode()


def _decode(data: bytes | str) -> Principal:
    raw = json.loads(data)
    return Principal(str(raw["n"]), frozenset(raw["s"]), issuer=raw["i"], unrestricted=bool(raw["u"]))


class TicketStore(Protocol):
    """Where tickets live until redeemed or expired."""

    async def issue(self, principal: Principal) -> str:
        """A new ticket for ``principal``, valid for the store's TTL.

        Raises:
            StoreUnavailable: Redis did not answer (cluster mode, 503).
        """
        ...

    async def redeem(self, ticket: str) -> Principal | None:
        """The principal of ``ticket`` if it is known and unexpired; it can never be redeemed again.

        Raises:
            StoreUnavailable: Redis did not answer (cluster mode, 503).
        """
        ...


class MemoryTicketStore:
    """Tickets of one process. Args: ``ttl_s`` lifetime in seconds; ``clock`` monotonic seconds."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic, max_tickets: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._max = max_tickets
        self._tickets: dict[str, tuple[Principal, float]] = {}

    async def issue(self, principal: Principal) -> str:
        now = self._clock()
        if len(self._tickets) >= self._max:
            self._tickets = {k: v for k, v in self._tickets.items() if v[1] > now}
        ticket = secrets.token_urlsafe(TICKET_BYTES)
        self._tickets[_digest(ticket)] = (principal, now + self.ttl_s)
        return ticket

    async def redeem(self, ticket: str) -> Principal | None:
        entry = self._tickets.pop(_digest(ticket), None)
        if entry is None or entry[1] <= self._clock():
            return None
        return entry[0]


class RedisTicketStore:
    """Tickets shared by the cluster (a ticket issued on one instance opens a stream on any).

    Keys: ``<prefix>:ticket:<sha256>`` with a TTL of ``ttl_s``.
    """

    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_s: float) -> None:
        self._redis = redis
        self._prefix = prefix
        self.ttl_s = ttl_s

    async def issue(self, principal: Principal) -> str:
        ticket = secrets.token_urlsafe(TICKET_BYTES)
        with store_errors("issuing a stream ticket"):
            await self._redis.set(
                f"{self._prefix}:ticket:{_digest(ticket)}", _encode(principal), px=int(self.ttl_s * 1000)
            )
        return ticket

    async def redeem(self, ticket: str) -> Principal | None:
        with store_errors("redeeming a stream ticket"):
            data = await self._redis.getdel(f"{self._prefix}:ticket:{_digest(ticket)}")
        return None if data is None else _decode(data)
