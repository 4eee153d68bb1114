"""`RedisSessionRegistry`: the `SessionRegistry` shared by every instance of a cluster.

Each session is one Redis hash (owner node, kind, principal, epoch, handshake) that expires after
the idle TTL unless touched; creation and ownership changes are single-key Lua compare-and-sets,
so two instances never both create or both claim a session. Caps use sorted sets scored by last
activity: per instance (``max_sessions`` is a per-process cap) and per principal across the
cluster. Entries of sessions that died with their node age out of both sets after the idle TTL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis

from datapulse.cluster.store import Keys, store_errors
from datapulse.errors import TooManySessions, Unavailable
from datapulse.sessions.registry import SessionKind, SessionRecord

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

_CLAIM = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

_ANNOTATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'protocol_version', ARGV[1], 'initialize_params', ARGV[2])
return 1
"""

TOUCH_INTERVAL_FRACTION = 20
"""Activity is written to Redis at most once per ``idle_ttl_s / 20`` (capped at 5 s) per session."""


class RedisSessionRegistry:
    """`SessionRegistry` on Redis for the instance ``node_id`` (times are wall-clock seconds).

    Args:
        redis: the cluster's client (`datapulse.cluster.store.connect`).
        keys: key naming for the cluster's prefix.
        node_id: this instance; `idle_since` and `counts` report this instance's sessions.
        idle_ttl_s: the session idle TTL; also the Redis expiry of session records.

    Every method raises `StoreUnavailable` (503) when Redis does not answer.
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, node_id: str, idle_ttl_s: float) -> None:
        self._redis = redis
        self._keys = keys
        self.node_id = node_id
        self._ttl_ms = max(1, int(idle_ttl_s * 1000))
        self._idle_ttl_s = idle_ttl_s
        self._touch_every_s = min(idle_ttl_s / TOUCH_INTERVAL_FRACTION, 5.0)
        self._mine: dict[str, tuple[str, SessionKind, float]] = {}  # sid → (principal, kind, last written touch)
        self._create = redis.register_script(_CREATE)
        self._claim = redis.register_script(_CLAIM)
        self._annotate = redis.register_script(_ANNOTATE)

    async def add(self, record: SessionRecord, *, max_total: int, max_per_principal: int) -> None:
        keys = self._keys
        node_set = keys.node_sessions(self.node_id)
        principal_set = keys.principal_sessions(record.principal)
        stale = f"({record.created_at - self._idle_ttl_s}"
        with store_errors("opening a session"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(node_set, "-inf", stale)
                pipe.zcard(node_set)
                pipe.zremrangebyscore(principal_set, "-inf", stale)
                pipe.zcard(principal_set)
                _, on_node, _, of_principal = await pipe.execute()
            if on_node >= max_total:
                raise Unavailable(
                    f"Service Unavailable: this instance holds its maximum of {max_total} sessions; retry later",
                    headers={"Retry-After": "5"},
                )
            if of_principal >= max_per_principal:
                raise TooManySessions(
                    f"Too Many Sessions: principal already holds {max_per_principal} sessions; "
                    "close some (DELETE) first",
                    headers={"Retry-After": "5"},
                )
            created = await self._create(keys=[keys.session(record.session_id)], args=[self._ttl_ms, *_fields(record)])
            if not created:
                raise ValueError(f"session {record.session_id!r} already exists")
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(node_set, {record.session_id: record.created_at})
                pipe.zadd(principal_set, {record.session_id: record.created_at})
                await pipe.execute()
        self._mine[record.session_id] = (record.principal, record.kind, record.created_at)

    async def reinstate(self, record: SessionRecord, now: float) -> bool:
        """Write ``record`` back after Redis lost it (restart without persistence); False if it exists.

        Raises:
            StoreUnavailable: Redis did not answer (503).
        """
        keys = self._keys
        with store_errors("re-registering a session"):
            created = await self._create(keys=[keys.session(record.session_id)], args=[self._ttl_ms, *_fields(record)])
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(keys.node_sessions(self.node_id), {record.session_id: now})
                pipe.zadd(keys.principal_sessions(record.principal), {record.session_id: now})
                await pipe.execute()
        self._mine[record.session_id] = (record.principal, record.kind, now)
        return bool(created)

    async def get(self, session_id: str) -> SessionRecord | None:
        with store_errors("looking up a session"):
            raw = await self._redis.hgetall(self._keys.session(session_id))
        return _record(session_id, raw) if raw else None

    async def touch(self, session_id: str, now: float) -> None:
        mine = self._mine.get(session_id)
        if mine is None or now - mine[2] < self._touch_every_s:
            return
        principal, kind, _ = mine
        self._mine[session_id] = (principal, kind, now)
        keys = self._keys
        with store_errors("recording session activity"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.pexpire(keys.session(session_id), self._ttl_ms)
                pipe.zadd(keys.node_sessions(self.node_id), {session_id: now}, xx=True)
                pipe.zadd(keys.principal_sessions(principal), {session_id: now}, xx=True)
                await pipe.execute()

    def last_seen(self, session_id: str) -> float | None:
        mine = self._mine.get(session_id)
        return None if mine is None else mine[2]

    async def remove(self, session_id: str) -> SessionRecord | None:
        self._mine.pop(session_id, None)
        keys = self._keys
        record = await self.get(session_id)
        if record is None:
            with store_errors("closing a session"):
                await self._redis.zrem(keys.node_sessions(self.node_id), session_id)
            return None
        with store_errors("closing a session"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(keys.session(session_id), keys.events(session_id))
                pipe.zrem(keys.principal_sessions(record.principal), session_id)
                pipe.zrem(keys.node_sessions(record.owner or self.node_id), session_id)
                if record.owner and record.owner != self.node_id:
                    pipe.zrem(keys.node_sessions(self.node_id), session_id)
                await pipe.execute()
        return record

    def forget(self, session_id: str) -> None:
        self._mine.pop(session_id, None)

    async def annotate(self, session_id: str, *, protocol_version: str, initialize_params: str) -> None:
        with store_errors("recording a session's handshake"):
            await self._annotate(keys=[self._keys.session(session_id)], args=[protocol_version, initialize_params])

    async def claim(self, session_id: str, *, from_owner: str, to_owner: str, now: float) -> SessionRecord | None:
        keys = self._keys
        with store_errors("taking over a session"):
            moved = await self._claim(keys=[keys.session(session_id)], args=[from_owner, to_owner, self._ttl_ms])
            if not moved:
                return None
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zrem(keys.node_sessions(from_owner), session_id)
                pipe.zadd(keys.node_sessions(to_owner), {session_id: now})
                await pipe.execute()
        record = await self.get(session_id)
        if record is not None and to_owner == self.node_id:
            self._mine[session_id] = (record.principal, record.kind, now)
        return record

    async def idle_since(self, cutoff: float) -> list[str]:
        with store_errors("listing idle sessions"):
            ids = await self._redis.zrangebyscore(self._keys.node_sessions(self.node_id), "-inf", f"({cutoff}")
        return [item.decode() if isinstance(item, bytes) else str(item) for item in ids]

    async def counts(self) -> Mapping[SessionKind, int]:
        per_kind = Counter(kind for _, kind, _ in self._mine.values())
        return {kind: per_kind.get(kind, 0) for kind in SessionKind}


def _fields(record: SessionRecord) -> list[str]:
    fields = [
        "kind",
        record.kind.value,
        "principal",
        record.principal,
        "created_at",
        repr(record.created_at),
        "owner",
        record.owner,
        "epoch",
        record.epoch,
    ]
    if record.protocol_version is not None:
        fields += ["protocol_version", record.protocol_version]
    if record.initialize_params is not None:
        fields += ["initialize_params", record.initialize_params]
    return fields


def _record(session_id: str, raw: Mapping[Any, Any]) -> SessionRecord:
    text = {key.decode(): value.decode() for key, value in raw.items()}
    return SessionRecord(
        session_id=session_id,
        kind=SessionKind(text["kind"]),
        principal=text["principal"],
        created_at=float(text["created_at"]),
        owner=text.get("owner", ""),
        epoch=text.get("epoch", ""),
        protocol_version=text.get("protocol_version"),
        initialize_params=text.get("initialize_params"),
    )
