"""The cluster's Redis: one client per process, key naming, and the mapping of Redis faults to a 503.

Key layout (every key starts with ``settings.redis_key_prefix``, default ``dp``). Keys that belong to
one session share the hash tag ``{s:<session id>}``, so in Redis Cluster a session's keys live in
one slot and the Lua compare-and-set scripts touch a single slot::

    dp:{s:<sid>}:session       hash   the SessionRecord (owner, kind, principal, handshake, epoch); idle TTL
    dp:{s:<sid>}:events        stream the session's SSE events for Last-Event-ID replay; bounded, TTL
    dp:{p:<digest>}:sessions   zset   a principal's sessions by last activity (per-principal cap)
    dp:{n:<node>}:sessions     zset   a node's sessions by last activity (per-instance cap, idle reaping)
    dp:{n:<node>}:alive        string the node's heartbeat; expires after node_heartbeat_ttl_s
    dp:ch:node:<node>          channel requests tunnelled to the node, and replies to its tunnels
    dp:ch:bus                  channel subscription events (list changes, resource updates)
    dp:ticket:<sha256>         string  a stream ticket's principal until redeemed (GETDEL); TTL stream_ticket_ttl_s
    dp:rl:LIMITER/p/<digest>/… list    a principal's moving rate-limit window (`datapulse.ratelimit`); expires
    dp:rl:LIMITER/t/<digest>/… list    a principal's per-tool window; principal as sha256 hex[:32]
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from datapulse.cluster.redis_url import SentinelUrl, is_sentinel_url, parse_sentinel_url
from datapulse.cluster.timed_redis import TimedRedis
from datapulse.errors import Unavailable

STORE_RETRY_AFTER_S = 2
MAX_CONNECTIONS = 512
"""Connections one process may open to Redis (``?max_connections=`` in a plain URL overrides it). Beyond it a
command waits for a free connection (plain URLs), up to the command timeout."""


class StoreUnavailable(Unavailable):
    """Redis did not answer (down, unreachable, or slower than ``redis_timeout_s``): HTTP 503."""


@contextmanager
def store_errors(what: str) -> Iterator[None]:
    """Translate any Redis fault inside the block into `StoreUnavailable` naming ``what`` failed.

    Raises:
        StoreUnavailable: for `redis.exceptions.RedisError`, `OSError` and `TimeoutError`.
    """
    try:
        yield
    except (RedisError, OSError, TimeoutError) as exc:
        raise StoreUnavailable(
            f"Service Unavailable: the cluster store (Redis) did not answer while {what} "
            f"({type(exc).__name__}); retry shortly",
            headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
        ) from exc


def connect(url: str, timeout_s: float) -> TimedRedis:
    """A Redis client for ``url``: ``redis://``, ``rediss://`` or ``unix://`` (password in the URL), or a Sentinel
    URL ``redis+sentinel://[[user]:password@]host[:port],host[:port]/service_name[/db]`` (``rediss+sentinel://``
    for TLS; syntax in `datapulse.cluster.redis_url`).

    Every command is bounded by ``timeout_s`` (connect and read); a connection found dead (for example after a
    Redis restart) is retried once on a fresh connection, so the first request after Redis comes back succeeds.
    With Sentinel the client always talks to the current master: each new connection asks the sentinels for
    the master's address (each sentinel bounded by ``timeout_s``, tried in turn), so after a failover the retry,
    and every later connection, reach the promoted replica. The client owns its sentinel connections and closes
    them in ``aclose``. Set the client's ``observer`` to time each command (`TimedRedis`).

    Raises:
        ValueError: a malformed Sentinel URL (`parse_sentinel_url`); plain URLs are parsed by redis-py, which
            raises ``ValueError`` too.
    """
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 1),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "health_check_interval": 30,
        "decode_responses": False,
    }
    if is_sentinel_url(url):
        return _connect_sentinel(parse_sentinel_url(url), timeout_s, dict(options, max_connections=MAX_CONNECTIONS))
    # A blocking pool: a command that finds every connection busy waits (up to timeout_s) for one to be released
    # instead of failing at once with MaxConnectionsError, which under load turned into 503s above 100 concurrent
    # requests per process (redis-py's default pool holds 100 and raises). ?max_connections= in the URL wins.
    pool = BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=timeout_s, **options)
    client = TimedRedis.from_pool(pool)
    assert isinstance(client, TimedRedis)  # from_pool builds an instance of the class it is called on
    return client


class _OwnSentinelPool(SentinelConnectionPool):
    """A master pool that also closes the `Sentinel` (its connections to the sentinels) when it is closed."""

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


def _connect_sentinel(target: SentinelUrl, timeout_s: float, options: dict[str, Any]) -> TimedRedis:
    sentinel_options: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if target.sentinel_username is not None:
        sentinel_options["username"] = target.sentinel_username
    if target.sentinel_password is not None:
        sentinel_options["password"] = target.sentinel_password
    if target.ssl:
        sentinel_options["ssl"] = True
    master_options = dict(options, db=target.db, ssl=target.ssl)
    if target.username is not None:
        master_options["username"] = target.username
    if target.password is not None:
        master_options["password"] = target.password
    # No retry on the sentinel clients: master discovery already moves on to the next sentinel.
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options)
    client = sentinel.master_for(
        target.service_name, redis_class=TimedRedis, connection_pool_class=_OwnSentinelPool, **master_options
    )
    assert isinstance(client, TimedRedis)  # master_for builds an instance of redis_class
    return client


class Keys:
    """Names of the cluster's Redis keys and channels (see the module docstring for the layout)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def session(self, session_id: str) -> str:
        """The hash holding ``session_id``'s `SessionRecord` (expires after the idle TTL)."""
        return f"{self.prefix}:{{s:{session_id}}}:session"

    def events(self, session_id: str) -> str:
        """The Redis stream journaling ``session_id``'s SSE events."""
        return f"{self.prefix}:{{s:{session_id}}}:events"

    def principal_sessions(self, principal: str) -> str:
        """The sorted set of a principal's sessions by last activity (the principal is hashed, not named)."""
        digest = hashlib.sha256(principal.encode()).hexdigest()[:32]
        return f"{self.prefix}:{{p:{digest}}}:sessions"

    def node_sessions(self, node_id: str) -> str:
        """The sorted set of an instance's sessions by last activity."""
        return f"{self.prefix}:{{n:{node_id}}}:sessions"

    def node_alive(self, node_id: str) -> str:
        """An instance's heartbeat key (expires after ``node_heartbeat_ttl_s``)."""
        return f"{self.prefix}:{{n:{node_id}}}:alive"

    def node_channel(self, node_id: str) -> str:
        """The pub/sub channel of requests tunnelled to an instance and replies to its tunnels."""
        return f"{self.prefix}:ch:node:{node_id}"

    @property
    def bus_channel(self) -> str:
        """The pub/sub channel of change events (`RedisSubscriptionBus`)."""
        return f"{self.prefix}:ch:bus"
