"""Session event journals on Redis Streams: the durable copy of a session's SSE events.

The owning instance appends every event of a session's resumable streams (Streamable HTTP request
and standalone streams, the DataPulse API's event stream) before writing it to the client, so any
event a client has seen is in Redis. When the owner dies, the instance that takes the session over
reads the journal back and serves ``Last-Event-ID`` replay from it. One Redis stream per session,
trimmed to about ``max_events`` entries and expiring ``ttl_s`` after its last write.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from datapulse.cluster.store import store_errors


class RedisEventJournal:
    """The event journal of one session (satisfies `datapulse.sessions.streams.EventJournal`).

    Args:
        redis: the cluster's client.
        key: the session's stream key (``Keys.events``).
        max_events: approximate bound on stored events (``XADD MAXLEN ~``).
        ttl_s: the journal expires this long after its last append.
    """

    __slots__ = ("_key", "_max_events", "_redis", "_ttl_ms")

    def __init__(self, redis: aioredis.Redis, key: str, *, max_events: int, ttl_s: float) -> None:
        self._redis = redis
        self._key = key
        self._max_events = max_events
        self._ttl_ms = max(1, int(ttl_s * 1000))

    async def append(self, stream_key: str, seq: int, frame: bytes) -> None:
        """Store frame ``seq`` of stream ``stream_key``.

        Raises:
            StoreUnavailable: Redis did not answer (503).
        """
        with store_errors("storing an event for replay"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self._key, {"k": stream_key, "s": seq, "f": frame}, maxlen=self._max_events, approximate=True)
                pipe.pexpire(self._key, self._ttl_ms)
                await pipe.execute()

    async def read_all(self) -> list[tuple[str, int, bytes]]:
        """Every stored ``(stream key, seq, frame)``, oldest first.

        Raises:
            StoreUnavailable: Redis did not answer (503).
        """
        with store_errors("reading a session's stored events"):
            entries: list[tuple[Any, dict[bytes, bytes]]] = await self._redis.xrange(self._key) or []  # type: ignore[assignment]
        events: list[tuple[str, int, bytes]] = []
        for _entry_id, fields in entries:
            try:
                events.append((fields[b"k"].decode(), int(fields[b"s"]), fields[b"f"]))
            except (KeyError, ValueError):
                continue
        return events
