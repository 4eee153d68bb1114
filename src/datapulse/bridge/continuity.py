"""Cluster mode: a 2025 Streamable HTTP upstream session outlives the instance that opened it.

When a client session's owner dies, another instance takes the client session over (`datapulse.cluster`). Without
more, its bridge would open a new upstream session, and the upstream would lose whatever state it kept for the old
one. So the instance that opens an upstream session for a client session records it in Redis (`UpstreamSession`:
the upstream's ``Mcp-Session-Id`` and its ``initialize`` answer, next to the client session's own record, for
`RECORD_TTL_S`),
and an instance that later needs a connection for that client session continues the recorded upstream session: it
adopts the recorded answer instead of sending ``initialize`` again and sends the upstream's session id on every
request (spec 2025-11-25 basic/transports "Session Management").

Only Streamable HTTP sessions continue: a 2024-11-05 SSE session lives in its GET stream and ends with it, a
2026-07-28 upstream has no sessions, and a stdio child ends with its process. An upstream that has forgotten the
session answers 404; the record is then dropped and the next request opens a new upstream session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

from mcp import types
from pydantic import ValidationError

__all__ = ["UpstreamSession", "UpstreamSessions"]

log = logging.getLogger("datapulse.bridge.continuity")

RECORD_TTL_S: Final = 24 * 3600
"""A recorded upstream session expires this long after it was recorded, unless its client session ends first."""


@dataclass(frozen=True)
class UpstreamSession:
    """An upstream Streamable HTTP session another instance can continue.

    Attributes:
        session_id: the upstream's ``Mcp-Session-Id``.
        result: its ``initialize`` answer.
    """

    session_id: str
    result: types.InitializeResult

    def to_json(self) -> str:
        return types.InitializeResult.model_validate(self.result).model_dump_json(by_alias=True, exclude_none=True)

    @classmethod
    def parse(cls, session_id: str, text: str | bytes) -> UpstreamSession:
        """Raises ``ValidationError`` when ``text`` is not an ``initialize`` answer."""
        return cls(session_id, types.InitializeResult.model_validate_json(text))


class UpstreamSessions:
    """The recorded upstream sessions of one bridged server, in the cluster's Redis.

    Args:
        redis: the cluster's client (``redis.asyncio``).
        key_prefix: the server's Redis key prefix (``Settings.redis_key_prefix`` of its app).
        server: the bridged server's name.

    Redis errors are logged and treated as "nothing recorded": continuing an upstream session is an optimisation
    over opening a new one, never a reason to fail a request.
    """

    def __init__(self, redis: Any, key_prefix: str, server: str) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._server = server

    def _key(self, client_session_id: str) -> str:
        # The client session's hash tag: on Redis Cluster the record sits in its session's slot.
        return f"{self._prefix}:{{s:{client_session_id}}}:upstream:{self._server}"

    async def load(self, client_session_id: str) -> UpstreamSession | None:
        try:
            fields = await self._redis.hgetall(self._key(client_session_id))
        except Exception as exc:
            self._failed("read", client_session_id, exc)
            return None
        if not fields:
            return None
        values = {_text(key): value for key, value in fields.items()}
        try:
            return UpstreamSession.parse(_text(values["session_id"]), values["result"])
        except (KeyError, ValidationError):
            log.warning("%s: dropped an unreadable upstream session record of %s", self._server, client_session_id[:16])
            await self.drop(client_session_id)
            return None

    async def save(self, client_session_id: str, upstream: UpstreamSession) -> None:
        key = self._key(client_session_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"session_id": upstream.session_id, "result": upstream.to_json()})
                pipe.expire(key, RECORD_TTL_S)
                await pipe.execute()
        except Exception as exc:
            self._failed("record", client_session_id, exc)

    async def drop(self, client_session_id: str) -> None:
        try:
            await self._redis.delete(self._key(client_session_id))
        except Exception as exc:
            self._failed("drop", client_session_id, exc)

    def _failed(self, what: str, client_session_id: str, exc: Exception) -> None:
        log.warning("%s: could not %s the upstream session of %s: %s", self._server, what, client_session_id[:16], exc)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
