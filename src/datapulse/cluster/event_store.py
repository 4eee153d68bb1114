"""`RedisEventStore`: the SDK's ``EventStore`` (resumable 2025 Streamable HTTP) for one session, on Redis.

DataPulse's own ``/mcp`` transport journals its sessions' events through `RedisEventJournal`; this
class offers the same storage behind the SDK's abstract ``mcp.server.streamable_http.EventStore`` for
code that serves sessions with the SDK's ``StreamableHTTPServerTransport``. The SDK's stream ids are
session-local (``"1"``, ``"_GET_stream"``), so bind one store per session (SDK-SEAMS.md §3).

Event ids are ``<Redis entry id>~<session epoch>``: the epoch is a random value shared by every
instance through Redis, so an id cannot be guessed, and an id from another session (another epoch)
replays nothing. One Redis stream per session, trimmed to about ``max_events`` entries and expiring
``ttl_s`` after its last write; priming events (``message=None``) get an id but are never replayed.
"""

from __future__ import annotations

import secrets
from typing import Any

import redis.asyncio as aioredis
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp_types import JSONRPCMessage, jsonrpc_message_adapter

from datapulse.cluster.store import Keys, store_errors

EPOCH_SEPARATOR = "~"


class RedisEventStore(EventStore):
    """The SDK ``EventStore`` for session ``session_id``.

    Args:
        redis: the cluster's client.
        keys: key naming (the events live under the session's hash tag).
        session_id: the session whose events this store holds.
        max_events: approximate bound on stored events.
        ttl_s: the store expires this long after its last write.

    Raises (from every method):
        StoreUnavailable: Redis did not answer (HTTP 503 when raised inside a request).
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, session_id: str, *, max_events: int, ttl_s: float) -> None:
        self._redis = redis
        self._stream = f"{keys.events(session_id)}:sdk"
        self._epoch_key = f"{keys.events(session_id)}:epoch"
        self._max_events = max_events
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._epoch: str | None = None

    async def _session_epoch(self) -> str:
        if self._epoch is None:
            with store_errors("reading a session's event-id epoch"):
                candidate = secrets.token_urlsafe(9)
                existing = await self._redis.set(self._epoch_key, candidate, nx=True, get=True, px=self._ttl_ms)
            self._epoch = existing.decode() if isinstance(existing, bytes) else candidate
        return self._epoch

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        """Append ``message`` (None: a priming event) to ``stream_id``; returns its event id."""
        epoch = await self._session_epoch()
        body = b"" if message is None else jsonrpc_message_adapter.dump_json(message, by_alias=True, exclude_none=True)
        with store_errors("storing an event for replay"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self._stream, {"k": stream_id, "m": body}, maxlen=self._max_events, approximate=True)
                pipe.pexpire(self._stream, self._ttl_ms)
                pipe.pexpire(self._epoch_key, self._ttl_ms)
                entry, _, _ = await pipe.execute()
        return f"{_text(entry)}{EPOCH_SEPARATOR}{epoch}"

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        """Send every message of ``last_event_id``'s stream stored after it, in order; returns that
        stream's id, or None if the id is unknown, malformed, trimmed away or from another session."""
        entry, sep, epoch = last_event_id.rpartition(EPOCH_SEPARATOR)
        if not sep or not entry or epoch != await self._session_epoch():
            return None
        with store_errors("replaying stored events"):
            try:
                anchor: list[Any] = await self._redis.xrange(self._stream, min=entry, max=entry) or []
            except aioredis.ResponseError:
                return None  # not a stream entry id
            if not anchor:
                return None
            stream_id = _text(anchor[0][1][b"k"])
            later: list[Any] = await self._redis.xrange(self._stream, min=f"({entry}") or []
        for entry_id, fields in later:
            if _text(fields[b"k"]) != stream_id or not fields[b"m"]:
                continue
            message = jsonrpc_message_adapter.validate_json(fields[b"m"])
            await send_callback(EventMessage(message, f"{_text(entry_id)}{EPOCH_SEPARATOR}{epoch}"))
        return stream_id


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
