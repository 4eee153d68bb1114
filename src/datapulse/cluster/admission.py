"""Admitting requests tunnelled from other instances: a few at a time, in arrival order.

Why: a forwarded call crosses two event loops (the receiving instance's and the owner's). When the
owner starts every tunnelled request the moment its frame arrives, a burst of requests advances
through its loop in lockstep and the replies leave in one clump; the receiving instance then works
while the owner idles, and the other way round. Measured with bench/cluster.py's load on the 2-CPU
benchmark machine, 32 concurrent clients: both loops at 50-70 % CPU and forwarded throughput stuck
near 1,600 calls/s whatever else was made cheaper. Letting at most eight tunnelled requests run until
their first response frame is handed to Redis makes requests finish one after another; replies
stream out while later requests are served and both loops stay busy: 2,000-3,400 calls/s in the same
runs (limits of 2, 3, 4, 6, 8 and 16 were tried; 8 was best, the spread is the machine's noise).

A slot covers only that first burst. It is released when the request's first response frame has
been published, when the request ends, or after ``hold_max_s`` at the latest, so a slow tool call
or a long-lived stream never holds the door shut for the others.
"""

from __future__ import annotations

import asyncio

import anyio

DEFAULT_LIMIT = 8
"""Tunnelled requests in their first burst at once."""

DEFAULT_HOLD_MAX_S = 0.02
"""A slot returns to the pool after this long even if its request has not answered yet."""


class Slot:
    """One admitted request's place; `release` is idempotent and also runs by itself after ``hold_max_s``."""

    __slots__ = ("_handle", "_released", "_semaphore")

    def __init__(self, semaphore: anyio.Semaphore, hold_max_s: float) -> None:
        self._semaphore = semaphore
        self._released = False
        self._handle = asyncio.get_running_loop().call_later(hold_max_s, self.release)

    @property
    def released(self) -> bool:
        """Whether the slot went back to the pool."""
        return self._released

    def release(self) -> None:
        """Give the slot back (once; later calls do nothing)."""
        if self._released:
            return
        self._released = True
        self._handle.cancel()
        self._semaphore.release()


class BurstLimiter:
    """At most ``limit`` admitted requests hold a slot at once; waiters are admitted first come, first served.

    Args:
        limit: slots (≥ 1).
        hold_max_s: seconds after which a slot is given back whatever its request is doing (> 0).

    Raises:
        ValueError: ``limit`` < 1 or ``hold_max_s`` ≤ 0.
    """

    def __init__(self, limit: int = DEFAULT_LIMIT, hold_max_s: float = DEFAULT_HOLD_MAX_S) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if hold_max_s <= 0:
            raise ValueError(f"hold_max_s must be positive, got {hold_max_s}")
        self._semaphore = anyio.Semaphore(limit, fast_acquire=True)
        self._hold_max_s = hold_max_s

    @property
    def available(self) -> int:
        """Free slots now."""
        return self._semaphore.value

    async def admit(self) -> Slot:
        """Wait for a free slot (in arrival order) and take it; cancellation while waiting takes nothing."""
        await self._semaphore.acquire()
        return Slot(self._semaphore, self._hold_max_s)
