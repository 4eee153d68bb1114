"""An in-process ``limits`` storage for the moving-window strategy: O(1) per hit, no thread.

``limits.storage.MemoryStorage`` keeps a key's hits newest first and inserts each new one at the front of a
Python list (a copy of the whole list, up to ``amount`` entries, per hit), and trims expired hits on a
``threading.Timer`` that it starts again 10 ms after each one fired, so a busy server starts about 100 threads
a second and hands the GIL to each. `WindowStorage` keeps each key's hits oldest first in a ``deque``: a hit
drops the expired ones from the left and appends on the right, and idle keys are swept on the event loop's
thread while hits come in (at most once per `SWEEP_EVERY_S`). It is a ``limits`` storage backend
(``limits.storage.Storage`` + ``MovingWindowSupport``, scheme ``datapulse-memory://``), so the strategy stays
``limits.strategies.MovingWindowRateLimiter``'s: a hit is allowed when fewer than ``amount`` hits lie inside
the last window length, exactly as with ``MemoryStorage``.

Single-threaded: use it from one thread (the event loop's), as `datapulse.ratelimit.RateLimiter` does.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from limits.storage import MovingWindowSupport, Storage

__all__ = ["SWEEP_EVERY_S", "WindowStorage"]

SWEEP_EVERY_S = 10.0
"""How often, at most, keys whose hits have all left their window are forgotten (seconds)."""


class _Window:
    """One key's hits inside its window, oldest first (timestamps, seconds since the epoch)."""

    __slots__ = ("expiry_s", "hits")

    def __init__(self, expiry_s: float) -> None:
        self.expiry_s = expiry_s
        self.hits: deque[float] = deque()


class WindowStorage(Storage, MovingWindowSupport):
    """Moving-window hits per key, in this process; counters for the other strategies.

    Args:
        uri: ignored (``datapulse-memory://``), for ``limits.storage.storage_from_string``.
        clock: seconds since the epoch (default ``time.time``, as ``limits`` uses); tests pass their own.
    """

    STORAGE_SCHEME = ["datapulse-memory"]

    def __init__(self, uri: str | None = None, *, clock: Callable[[], float] = time.time, **options: str) -> None:
        super().__init__(uri, wrap_exceptions=False)
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._counters: dict[str, tuple[int, float]] = {}  # key -> (count, expires at)
        self._swept_at = clock()

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        """What ``limits`` wraps in ``StorageError`` when asked to (nothing here raises in normal use)."""
        return ValueError

    # --- moving window ---------------------------------------------------------------------------------------
    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Record ``amount`` hits on ``key`` now if fewer than ``limit - amount + 1`` hits lie inside the last
        ``expiry`` seconds; return whether they were recorded (`acquire`, as ``limits`` calls it: through its
        exception-wrapping layer)."""
        return self.acquire(key, limit, expiry, amount)

    def acquire(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """`acquire_entry` without ``limits``' exception-wrapping layer around it (a Python frame and a ``try``
        per hit; this storage raises nothing to wrap): what `datapulse.ratelimit.RateLimiter` calls."""
        if amount > limit:
            return False
        now = self._clock()
        if now - self._swept_at >= SWEEP_EVERY_S:
            self._sweep(now)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(expiry)
        hits = window.hits
        cutoff = now - expiry
        while hits and hits[0] < cutoff:
            hits.popleft()
        if len(hits) + amount > limit:
            return False
        if amount == 1:
            hits.append(now)
        else:
            hits.extend([now] * amount)
        return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """(the oldest hit inside the window, or now if none; the number of hits inside it), as ``limits``
        defines it for ``MovingWindowRateLimiter.get_window_stats``."""
        now = self._clock()
        window = self._windows.get(key)
        if window is None:
            return now, 0
        hits = window.hits
        cutoff = now - expiry
        while hits and hits[0] < cutoff:
            hits.popleft()
        if not hits:
            return now, 0
        return hits[0], len(hits)

    def _sweep(self, now: float) -> None:
        """Forget the keys whose every hit has left its window, and expired counters."""
        self._swept_at = now
        idle = [
            key for key, window in self._windows.items() if not window.hits or window.hits[-1] < now - window.expiry_s
        ]
        for key in idle:
            del self._windows[key]
        for key in [key for key, (_, expires_at) in self._counters.items() if expires_at <= now]:
            del self._counters[key]

    # --- counters (fixed window; the Storage interface) ------------------------------------------------------
    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add ``amount`` to ``key``'s counter, started (at 0) with a window of ``expiry`` seconds if it has none or
        its window ended; return the new count."""
        now = self._clock()
        count, expires_at = self._counters.get(key, (0, 0.0))
        if expires_at <= now:
            count, expires_at = 0, now + expiry
        count += amount
        self._counters[key] = (count, expires_at)
        return count

    def get(self, key: str) -> int:
        """``key``'s count in its current window (0 when it has none)."""
        count, expires_at = self._counters.get(key, (0, 0.0))
        return count if expires_at > self._clock() else 0

    def get_expiry(self, key: str) -> float:
        """When ``key``'s counter window ends (seconds since the epoch; now when it has none)."""
        _, expires_at = self._counters.get(key, (0, 0.0))
        return expires_at if expires_at > self._clock() else self._clock()

    def check(self) -> bool:
        """Always healthy: the storage is this process's memory."""
        return True

    def reset(self) -> int | None:
        """Forget every key; return how many windows and counters were dropped."""
        forgotten = len(self._windows) + len(self._counters)
        self._windows.clear()
        self._counters.clear()
        return forgotten

    def clear(self, key: str) -> None:
        """Forget ``key``'s hits and counter."""
        self._windows.pop(key, None)
        self._counters.pop(key, None)
