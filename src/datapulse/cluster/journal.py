"""Session event journals on Redis Streams: the durable copy of a session's SSE events.

The owning instance appends every event of a session's resumable streams (Streamable HTTP request
and standalone streams, the DataPulse API's event stream) before writing it to the client, so any
event a client has seen is in Redis. When the owner dies, the instance that takes the session over
reads the journal back and serves ``Last-Event-ID`` replay from it. One Redis stream per session,
trimmed to about ``max_events`` entries and expiring ``ttl_s`` after its last write.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from datapulse.cluster.redis_api import xrange_entries
from datapulse.cluster.store import store_errors
from datapulse.sessions.streams import JournalEntry


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

    async def append(self, stream_key: str, events: Sequence[tuple[int, bytes]], delivered_seq: int) -> None:
        """Store ``events`` (``(seq, frame)``, ascending) of stream ``stream_key`` in one round trip; every entry
        also records ``delivered_seq``, the stream's delivered watermark when it was stored.

        Raises:
            StoreUnavailable: Redis did not answer (503).
        """
        with store_errors("storing events for replay"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for seq, frame in events:
                    fields: dict[FieldT, EncodableT] = {"k": stream_key, "s": seq, "f": frame, "d": delivered_seq}
                    pipe.xadd(self._key, fields, maxlen=self._max_events, approximate=True)
                pipe.pexpire(self._key, self._ttl_ms)
                await pipe.execute()

    async def read_all(self) -> list[JournalEntry]:
        """Every stored entry, oldest first (entries this version cannot read are skipped).

        Raises:
            StoreUnavailable: Redis did not answer (503).
        """
        with store_errors("reading a session's stored events"):
            entries = await xrange_entries(self._redis, self._key)
        events: list[JournalEntry] = []
        for _entry_id, fields in entries:
            try:
                events.append(
                    JournalEntry(fields[b"k"].decode(), int(fields[b"s"]), fields[b"f"], int(fields.get(b"d", 0)))
                )
            except (KeyError, ValueError):
                continue
        return events
