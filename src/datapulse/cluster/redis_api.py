"""The one place where redis-py's type annotations meet ours.

redis-py annotates its asyncio API a little more with each release (8.2.0 annotated ``PubSub.aclose``), so a
``# type: ignore`` at a call site becomes an *unused* ignore, and ``mypy --strict`` fails, on the day a new
release is installed. Every call whose annotation is missing or too loose goes through a function here
instead, typed by a ``cast`` that holds whether or not redis-py annotates it; the next upstream change is then
one line in this module. Callers get precise types and no ignores.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

__all__ = ["close_pubsub", "execute_command", "xrange_entries"]

StreamEntry = tuple[bytes, dict[bytes, bytes]]
"""One Redis stream entry as redis-py returns it without ``decode_responses``: (entry id, field -> value)."""

_close_pubsub = cast(Callable[[PubSub], Awaitable[None]], PubSub.aclose)
_execute_command = cast(Callable[..., Awaitable[Any]], aioredis.Redis.execute_command)


async def close_pubsub(pubsub: PubSub) -> None:
    """Unsubscribe ``pubsub`` from everything and give its connection back (``PubSub.aclose``)."""
    await _close_pubsub(pubsub)


async def execute_command(client: aioredis.Redis, *args: Any, **options: Any) -> Any:
    """``redis.asyncio.Redis.execute_command`` on ``client`` (the base implementation, for subclasses that
    wrap it): the command's reply, as redis-py parses it. Raises what redis-py raises (``RedisError``,
    ``ConnectionError``, ``TimeoutError``)."""
    return await _execute_command(client, *args, **options)


async def xrange_entries(client: aioredis.Redis, key: str) -> list[StreamEntry]:
    """Every entry of the Redis stream ``key``, oldest first (``XRANGE key - +``); ``[]`` when it does not
    exist. Raises what redis-py raises."""
    entries = cast(list[StreamEntry] | None, await client.xrange(key))
    return entries or []
