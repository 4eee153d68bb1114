"""Session event journals on Redis Streams: the durable copy of a session's SSE events.

The owning instance appends every event of a session's resumable streams (Streamable HTTP request
and standalone streams, the DataPulse API's event stream) before writing it to the client, so any
event a client has seen is in Redis. When the owner dies, the instance that takes the session over
reads the journal back and serves ``Last-Event-ID`` replay from it. One Redis stream per session,
trimmed to about ``max_events`` entries and expiring ``ttl_s`` after its last write.

Appends are fenced: one Lua script checks that the session's record still names this instance as its owner
before it adds anything. An instance cut off from Redis long enough for its heartbeat to lapse may find, when
Redis answers again, that another instance took its sessions over; its appends are then refused
(`SessionMoved`), so two instances never write one session's history and no event id is given out twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from redis.typing import EncodableT

from datapulse.cluster.redis_api import xrange_entries
from datapulse.cluster.store import store_errors
from datapulse.errors import SessionMoved
from datapulse.sessions.streams import JournalEntry

_APPEND = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return owner end
for i = 6, #ARGV, 2 do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'k', ARGV[4], 's', ARGV[i], 'f', ARGV[i + 1], 'd', ARGV[5])
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""


class RedisEventJournal:
    """The event journal of one session (satisfies `datapulse.sessions.streams.EventJournal`).

    Args:
        redis: the cluster's client.
        key: the session's stream key (``Keys.events``).
        session_key: the session's record (``Keys.session``; same hash slot as ``key``).
        node_id: this instance: appends succeed only while the record names it as the owner (or is gone, after a
            Redis restart without persistence, until the owner writes it again).
        max_events: approximate bound on stored events (``XADD MAXLEN ~``).
        ttl_s: the journal expires this long after its last append.
        on_moved: called (before `SessionMoved` is raised) when an append finds another owner.
    """

    __slots__ = ("_append", "_key", "_max_events", "_node_id", "_on_moved", "_redis", "_session_key", "_ttl_ms")

    def __init__(
        self,
        redis: aioredis.Redis,
        key: str,
        *,
        session_key: str,
        node_id: str,
        max_events: int,
        ttl_s: float,
        on_moved: Callable[[str], None] | None = None,
    ) -> None:
        self._redis = redis
        self._key = key
        self._session_key = session_key
        self._node_id = node_id
        self._max_events = max_events
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._on_moved = on_moved
        self._append = redis.register_script(_APPEND)

    async def append(self, stream_key: str, events: Sequence[tuple[int, bytes]], delivered_seq: int) -> None:
        """Store ``events`` (``(seq, frame)``, ascending) of stream ``stream_key`` in one round trip (one script,
        so all or none); every entry also records ``delivered_seq``, the stream's delivered watermark when it was
        stored.

        Raises:
            SessionMoved: the session's record names another owner; nothing was stored (503).
            StoreUnavailable: Redis did not answer (503).
        """
        args: list[EncodableT] = [self._node_id, self._max_events, self._ttl_ms, stream_key, delivered_seq]
        for seq, frame in events:
            args += [seq, frame]
        with store_errors("storing events for replay"):
            stored = await self._append(keys=[self._session_key, self._key], args=args)
        if stored != 1:
            owner = stored.decode() if isinstance(stored, bytes) else str(stored)
            if self._on_moved is not None:
                self._on_moved(owner)
            raise SessionMoved()

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
