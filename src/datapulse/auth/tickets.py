"""Single-use stream tickets: how a browser opens ``GET /events`` or ``GET /sse`` without a token in the URL.

``EventSource`` cannot send an ``Authorization`` header, and long-lived tokens never go in query strings
(they end up in proxy and server logs). An authenticated ``POST /tickets`` returns a random ticket
(256 bits) valid for ``stream_ticket_ttl_s`` (default 60 s); the browser passes it once as
``?ticket=...`` on a stream GET, which then runs as the principal that asked for it. A ticket is
redeemed at most once (memory: popped; Redis: ``GETDEL``) and only its SHA-256 is stored.

Dashboard tickets are the other kind: what the dashboard's sign-in exchanges a token for. ``dpt_`` then 256
random bits, presented as ``Authorization: Bearer dpt_...`` (never in a URL) until they expire
(``dashboard_ticket_ttl_s``) or are revoked (sign-out). They are kept apart from stream tickets: neither kind
is accepted where the other is.
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
DASHBOARD_TICKET_PREFIX = "dpt_"
"""How a dashboard ticket starts (so a bearer value is recognised as one without asking the verifiers)."""


def is_dashboard_ticket(bearer: str) -> bool:
    """Whether a bearer value is a dashboard ticket (by its prefix)."""
    return bearer.startswith(DASHBOARD_TICKET_PREFIX)


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

    async def issue_dashboard(self, principal: Principal, ttl_s: float) -> str:
        """A new dashboard ticket (``dpt_...``) for ``principal``, valid for ``ttl_s`` seconds, reusable.

        Raises:
            StoreUnavailable: Redis did not answer (cluster mode, 503).
        """
        ...

    async def check_dashboard(self, ticket: str) -> Principal | None:
        """The principal of dashboard ticket ``ticket`` if it is known, unexpired and not revoked (not consumed).

        Raises:
            StoreUnavailable: Redis did not answer (cluster mode, 503).
        """
        ...

    async def revoke_dashboard(self, ticket: str) -> None:
        """Forget dashboard ticket ``ticket`` (sign-out); unknown tickets are ignored.

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
        self._dashboard: dict[str, tuple[Principal, float]] = {}

    def _store(self, table: dict[str, tuple[Principal, float]], principal: Principal, ttl_s: float, ticket: str) -> str:
        now = self._clock()
        if len(table) >= self._max:
            live = {k: v for k, v in table.items() if v[1] > now}
            table.clear()
            table.update(live)
        table[_digest(ticket)] = (principal, now + ttl_s)
        return ticket

    async def issue(self, principal: Principal) -> str:
        return self._store(self._tickets, principal, self.ttl_s, secrets.token_urlsafe(TICKET_BYTES))

    async def issue_dashboard(self, principal: Principal, ttl_s: float) -> str:
        ticket = DASHBOARD_TICKET_PREFIX + secrets.token_urlsafe(TICKET_BYTES)
        return self._store(self._dashboard, principal, ttl_s, ticket)

    async def check_dashboard(self, ticket: str) -> Principal | None:
        entry = self._dashboard.get(_digest(ticket))
        if entry is None or entry[1] <= self._clock():
            return None
        return entry[0]

    async def revoke_dashboard(self, ticket: str) -> None:
        self._dashboard.pop(_digest(ticket), None)

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

    def _dashboard_key(self, ticket: str) -> str:
        return f"{self._prefix}:dashboard-ticket:{_digest(ticket)}"

    async def issue_dashboard(self, principal: Principal, ttl_s: float) -> str:
        ticket = DASHBOARD_TICKET_PREFIX + secrets.token_urlsafe(TICKET_BYTES)
        with store_errors("issuing a dashboard ticket"):
            await self._redis.set(self._dashboard_key(ticket), _encode(principal), px=int(ttl_s * 1000))
        return ticket

    async def check_dashboard(self, ticket: str) -> Principal | None:
        with store_errors("checking a dashboard ticket"):
            data = await self._redis.get(self._dashboard_key(ticket))
        return None if data is None else _decode(data)

    async def revoke_dashboard(self, ticket: str) -> None:
        with store_errors("revoking a dashboard ticket"):
            await self._redis.delete(self._dashboard_key(ticket))
