"""Rate limits per principal and per (principal, tool), and a cap on concurrent streams per principal.

Limits are written in the notation of the ``limits`` library (``60/minute``, ``10/second;1000/hour``,
``10 per second, 100 per minute``) and enforced with its moving-window strategy, which counts the
hits of the last window length exactly (a fixed window would let a client spend twice its budget
across a window boundary). The cost is one stored timestamp per allowed hit, at most ``amount``
per key, so keep per-key amounts in the thousands, not millions.

Storage is in process memory (one instance: `datapulse.ratelimit_store.WindowStorage`, O(1) per hit) or
Redis (shared by every instance of a cluster). The Redis keys live under ``<prefix>:rl:`` (default prefix
``dp``); the principal is hashed (sha256, 32 hex digits), never named::

    dp:rl:LIMITER/p/<digest>/<amount>/<multiples>/<granularity>          list  a principal's requests
    dp:rl:LIMITER/t/<digest>/<tool>/<amount>/<multiples>/<granularity>   list  a principal's calls of a tool

Each list holds the timestamps of the hits still inside the window (trimmed to ``amount``) and
expires one window length after the last hit. ``<tool>`` is the tool name when it matches
``[A-Za-z0-9_.-]{1,64}``, else ``h-`` and its digest.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import limits
import limits.strategies
import redis.asyncio as aioredis
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from datapulse.cluster.store import store_errors
from datapulse.errors import RateLimited
from datapulse.ratelimit_store import WindowStorage

__all__ = ["RateLimiter", "StreamSlots", "parse_limit", "parse_tool_limits"]

STREAM_CAP_SETTING = "DATAPULSE_MAX_STREAMS_PER_PRINCIPAL"
STREAM_RETRY_AFTER_S = 1

_SAFE_TOOL = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def parse_limit(spec: str) -> tuple[limits.RateLimitItem, ...]:
    """Parse one or more rate limits in ``limits`` notation; all of them apply together.

    Args:
        spec: e.g. ``60/minute``, ``10/second;1000/hour``, ``10 per second, 100 per minute``
            (limits separated by ``;``, ``,`` or ``|``; ``N/M unit`` for an M-unit window).
            A blank spec means no limit.

    Returns:
        The limits in the order written; ``()`` for a blank spec.

    Raises:
        ValueError: the spec is not ``limits`` notation or allows 0 hits; the message quotes it.
    """
    if not spec.strip():
        return ()
    try:
        items = tuple(limits.parse_many(spec))
    except ValueError as exc:
        raise ValueError(
            f"invalid rate limit {spec!r}: expected limits notation such as '60/minute', "
            "'10/second;1000/hour' or '10 per second, 100 per minute'"
        ) from exc
    for item in items:
        if item.amount < 1:
            raise ValueError(f"invalid rate limit {spec!r}: {item} allows no request at all; use at least 1")
    return items


def parse_tool_limits(spec: str) -> tuple[tuple[str, tuple[limits.RateLimitItem, ...]], ...]:
    """Parse per-tool limits: ``glob=limits`` entries separated by ``,``.

    Within an entry, a tool's several limits are separated by ``;`` (or ``|``), never by ``,``, so
    ``search=10/minute,fetch_*=5/minute;100/hour`` is two entries. Globs use `fnmatch.fnmatchcase`
    (``*``, ``?``, ``[...]``, case-sensitive); the first glob matching a tool name wins.

    Args:
        spec: the entries; blank means no per-tool limits.

    Returns:
        ``(glob, limits)`` pairs in the order written.

    Raises:
        ValueError: an entry without ``=``, with an empty glob, a repeated glob, or a bad limit;
            the message quotes the entry.
    """
    entries: list[tuple[str, tuple[limits.RateLimitItem, ...]]] = []
    if not spec.strip():
        return ()
    for raw in spec.split(","):
        entry = raw.strip()
        glob, equals, limit_spec = entry.partition("=")
        glob = glob.strip()
        if not equals:
            raise ValueError(
                f"invalid tool limit entry {entry!r} in {spec!r}: expected 'glob=limits'; separate entries "
                "with ',' and one tool's limits with ';' (e.g. 'search=10/minute,fetch_*=5/minute;100/hour')"
            )
        if not glob:
            raise ValueError(f"invalid tool limit entry {entry!r} in {spec!r}: the tool glob is empty")
        if any(glob == seen for seen, _ in entries):
            raise ValueError(f"invalid tool limit entry {entry!r} in {spec!r}: glob {glob!r} is listed twice")
        try:
            items = parse_limit(limit_spec)
        except ValueError as exc:
            raise ValueError(f"invalid tool limit entry {entry!r} in {spec!r}: {exc}") from exc
        if not items:
            raise ValueError(f"invalid tool limit entry {entry!r} in {spec!r}: no limit after '='")
        entries.append((glob, items))
    return tuple(entries)


@functools.lru_cache(maxsize=4096)
def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _tool_key(tool: str) -> str:
    return tool if _SAFE_TOOL.fullmatch(tool) else f"h-{_digest(tool)}"


_CACHE_MAX = 10_000
"""Entries kept in the limiter's lookup caches (tool → limits, limit and caller → storage key) before they are
emptied and refilled."""


class RateLimiter:
    """Per-principal limit on every JSON-RPC request, plus per-(principal, tool) limits on tools/call.

    Each listed limit applies on its own (``10/second;1000/hour`` refuses a hit over either). A
    tool's limits come from the first ``per_tool`` glob matching its name, else ``default_tool``;
    a tool matching neither is not limited per tool. Each matching tool has its own budget: with
    ``fetch_*=5/minute``, ``fetch_a`` and ``fetch_b`` may each be called 5 times a minute.

    With several limits, the ones checked before a refusing one have already counted the hit
    (as in every ``limits``-based limiter); the order written is the order checked.

    Args:
        per_principal: limits on a principal's JSON-RPC requests (`hit_request`).
        per_tool: ``(glob, limits)`` pairs, as from `parse_tool_limits`.
        default_tool: limits for tools matching no glob.
        redis: the cluster's client (`datapulse.cluster.store.connect`); None keeps counts in this
            process. The limiter shares the client's connection pool, so its timeouts, retry policy
            and credentials, and with a Sentinel URL its master discovery (counts follow a failover to
            the promoted replica); the caller keeps owning and closing the client.
        key_prefix: the cluster key prefix; keys go under ``<key_prefix>:rl:``.
    """

    def __init__(
        self,
        *,
        per_principal: Sequence[limits.RateLimitItem],
        per_tool: Sequence[tuple[str, Sequence[limits.RateLimitItem]]],
        default_tool: Sequence[limits.RateLimitItem] = (),
        redis: aioredis.Redis | None = None,
        key_prefix: str = "dp",
    ) -> None:
        self._per_principal = tuple(per_principal)
        self._per_tool = tuple((glob, tuple(items)) for glob, items in per_tool if items)
        self._default_tool = tuple(default_tool)
        self._tool_limits: dict[str, tuple[limits.RateLimitItem, ...]] = {}
        self._keys: dict[tuple[int, tuple[str, ...]], tuple[str, int, int]] = {}
        self._local: limits.strategies.MovingWindowRateLimiter | None = None
        self._shared: MovingWindowRateLimiter | None = None
        self._memory: WindowStorage | None = None
        if redis is None:
            # In one process, a synchronous store with no await and no thread (`WindowStorage`: limits' own
            # MemoryStorage copies a key's whole list per hit and restarts a timer thread every 10 ms; its
            # asyncio store schedules an expiry task per hit that hops to a worker thread for every key).
            self._memory = WindowStorage()
            self._local = limits.strategies.MovingWindowRateLimiter(self._memory)
        else:
            # limits builds its own redis.asyncio.Redis; handing it our pool shares connections and
            # their settings (socket timeouts, retry, auth; behind Sentinel, the pool that asks the sentinels
            # for the master, so no separate async+redis+sentinel:// storage). The pool stays ours to close.
            options: dict[str, Any] = {"connection_pool": redis.connection_pool}
            storage = RedisStorage("async+redis://", implementation="redispy", key_prefix=f"{key_prefix}:rl", **options)
            self._shared = MovingWindowRateLimiter(storage)

    @property
    def enabled(self) -> bool:
        """True when any limit is configured (otherwise both hits return at once)."""
        return bool(self._per_principal or self._per_tool or self._default_tool)

    def tool_limits(self, tool: str) -> tuple[limits.RateLimitItem, ...]:
        """The limits that apply to ``tool``: the first matching glob's, else ``default_tool``."""
        known = self._tool_limits.get(tool)
        if known is not None:
            return known
        found = next((items for glob, items in self._per_tool if fnmatch.fnmatchcase(tool, glob)), self._default_tool)
        if len(self._tool_limits) >= _CACHE_MAX:
            self._tool_limits.clear()
        self._tool_limits[tool] = found
        return found

    async def hit_request(self, principal: str) -> None:
        """Count one JSON-RPC request by ``principal`` against the per-principal limits.

        Raises:
            RateLimited: a limit is exhausted; ``retry_after_s`` is when its oldest hit leaves the window.
            StoreUnavailable: Redis did not answer within the client's timeouts.
        """
        if self._per_principal:
            await self._hit(self._per_principal, ("p", _digest(principal)), principal)

    async def hit_tool(self, principal: str, tool: str) -> None:
        """Count one ``tools/call`` of ``tool`` by ``principal`` against that tool's limits.

        Args:
            principal: the caller.
            tool: a registered tool name (each limited tool gets its own key, so pass only known names).

        Raises:
            RateLimited: a limit is exhausted (the message names the tool and the principal).
            StoreUnavailable: Redis did not answer within the client's timeouts.
        """
        items = self.tool_limits(tool)
        if items:
            identifiers = ("t", _digest(principal), _tool_key(tool))
            await self._hit(items, identifiers, principal, tool)

    async def _hit(
        self,
        items: Sequence[limits.RateLimitItem],
        identifiers: tuple[str, ...],
        principal: str,
        tool: str | None = None,
    ) -> None:
        memory = self._memory
        if memory is not None:
            for item in items:
                # what MovingWindowRateLimiter.hit does, with the key, amount and window read once per (limit,
                # identifiers), and the storage's own hit (`WindowStorage.acquire`, not wrapped by limits)
                entry = self._keys.get((id(item), identifiers))
                if entry is None:
                    if len(self._keys) >= _CACHE_MAX:
                        self._keys.clear()
                    entry = self._keys[(id(item), identifiers)] = (
                        item.key_for(*identifiers),
                        item.amount,
                        item.get_expiry(),
                    )
                if not memory.acquire(*entry):
                    assert self._local is not None
                    self._refuse(item, self._local.get_window_stats(item, *identifiers).reset_time, principal, tool)
            return
        assert self._shared is not None
        with store_errors("checking a rate limit"):
            for item in items:
                if await self._shared.hit(item, *identifiers):
                    continue
                reset_time = (await self._shared.get_window_stats(item, *identifiers)).reset_time
                self._refuse(item, reset_time, principal, tool)

    @staticmethod
    def _refuse(item: limits.RateLimitItem, reset_time: float, principal: str, tool: str | None) -> None:
        who = f"principal {principal!r}" if tool is None else f"tool {tool!r} and principal {principal!r}"
        window_s = item.get_expiry()
        retry_after_s = min(window_s, max(1, math.ceil(reset_time - time.time())))
        raise RateLimited(f"Too Many Requests: {item} for {who}; retry in {retry_after_s} s", retry_after_s)

    async def aclose(self) -> None:
        """Forget the in-memory counts; a Redis store leaves the caller's client open."""
        if self._memory is not None:
            self._memory.reset()


class StreamSlots:
    """Caps concurrent long-lived streams per principal in this process (SSE GET streams etc.).

    Args:
        max_per_principal: the cap (``DATAPULSE_MAX_STREAMS_PER_PRINCIPAL``); None for no cap.

    Raises:
        ValueError: a cap below 1.
    """

    def __init__(self, max_per_principal: int | None) -> None:
        if max_per_principal is not None and max_per_principal < 1:
            raise ValueError(f"{STREAM_CAP_SETTING} must be at least 1 (or unset), not {max_per_principal}")
        self._max = max_per_principal
        self._open: dict[str, int] = {}

    def acquire(self, principal: str) -> Callable[[], None]:
        """Take a slot for one stream of ``principal``.

        Returns:
            The release: call it when the stream ends; calls after the first do nothing.

        Raises:
            RateLimited: ``principal`` already has ``max_per_principal`` streams open (``Retry-After: 1``).
        """
        count = self._open.get(principal, 0)
        if self._max is not None and count >= self._max:
            raise RateLimited(
                f"Too Many Requests: principal {principal!r} already has {count} open streams, the cap "
                f"({STREAM_CAP_SETTING}={self._max}); close one first",
                STREAM_RETRY_AFTER_S,
            )
        self._open[principal] = count + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self._open.get(principal, 0) - 1
            if left > 0:
                self._open[principal] = left
            else:
                self._open.pop(principal, None)

        return release

    def count(self, principal: str) -> int:
        """How many streams ``principal`` has open."""
        return self._open.get(principal, 0)
