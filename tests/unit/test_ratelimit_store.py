"""`WindowStorage`, the in-process moving-window store: against a model of the moving window (hypothesis
stateful, with a clock the test moves), against ``limits``' own ``MemoryStorage``, and through the
``limits`` strategy the rate limiter uses.

The model keeps every hit ever allowed per key; a hit of ``amount`` is allowed when the hits at or after
``now - expiry`` number at most ``limit - amount``, as ``limits`` defines the moving window.
"""

from __future__ import annotations

import threading

import limits
import limits.storage
import limits.strategies
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from datapulse.ratelimit_store import SWEEP_EVERY_S, WindowStorage

# each key has one (limit, expiry), as limits' keys do: the key names the amount and the window
KEYS = {"a": (3, 1), "b": (1, 2), "c": (5, 60)}
SWEEPER = "sweeper"  # a key of the invariant's own, whose hit runs a due sweep


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class MovingWindowMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.storage = WindowStorage(clock=self.clock)
        self.model: dict[str, list[float]] = {key: [] for key in KEYS}

    def _inside(self, key: str) -> list[float]:
        _, expiry = KEYS[key]
        return [hit for hit in self.model[key] if hit >= self.clock.now - expiry]

    @rule(step_s=st.sampled_from([0.0, 0.001, 0.25, 0.5, 1.0, 1.5, 2.0, 30.0, SWEEP_EVERY_S, 61.0]))
    def time_passes(self, step_s: float) -> None:
        self.clock.now += step_s

    @rule(key=st.sampled_from(sorted(KEYS)), amount=st.integers(min_value=1, max_value=6))
    def hit(self, key: str, amount: int) -> None:
        limit, expiry = KEYS[key]
        expected = amount <= limit and len(self._inside(key)) + amount <= limit
        assert self.storage.acquire_entry(key, limit, expiry, amount) is expected
        if expected:
            self.model[key].extend([self.clock.now] * amount)

    @rule(key=st.sampled_from(sorted(KEYS)))
    def window(self, key: str) -> None:
        limit, expiry = KEYS[key]
        inside = self._inside(key)
        start, count = self.storage.get_moving_window(key, limit, expiry)
        assert count == len(inside)
        assert start == (min(inside) if inside else self.clock.now)

    @invariant()
    def idle_keys_are_forgotten_after_a_sweep(self) -> None:
        windows = self.storage._windows  # white box: the memory bound is the point of the sweep
        for key in windows:
            assert key == SWEEPER or self.model[key], f"{key} was never hit but is kept"
        if self.clock.now - self.storage._swept_at < SWEEP_EVERY_S:
            return
        # the next hit sweeps: every key whose hits all left the window is then dropped
        self.storage.acquire_entry(SWEEPER, 10**9, 1)
        for key in KEYS:
            if not self._inside(key):
                assert key not in windows


TestMovingWindowMachine = MovingWindowMachine.TestCase
TestMovingWindowMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_it_allows_and_refuses_the_same_hits_as_the_limits_memory_storage() -> None:
    ours = WindowStorage()
    theirs = limits.storage.MemoryStorage()
    try:
        pattern = [(key, amount) for key in ("x", "y") for amount in (1, 2, 1, 3, 1, 1, 2, 5, 1)]
        for key, amount in pattern:
            assert ours.acquire_entry(key, 6, 60, amount) is theirs.acquire_entry(key, 6, 60, amount)
            assert ours.get_moving_window(key, 6, 60)[1] == theirs.get_moving_window(key, 6, 60)[1]
    finally:
        theirs.timer.cancel()


def test_the_limits_moving_window_strategy_runs_on_it_without_starting_a_thread() -> None:
    threads_before = threading.active_count()
    limiter = limits.strategies.MovingWindowRateLimiter(WindowStorage())
    item = limits.parse("2/minute")
    assert [limiter.hit(item, "alice") for _ in range(3)] == [True, True, False]
    assert limiter.hit(item, "bob")
    stats = limiter.get_window_stats(item, "alice")
    assert stats.remaining == 0
    assert threading.active_count() == threads_before


def test_counters_for_the_fixed_window_strategy_expire_with_their_window() -> None:
    clock = Clock()
    storage = WindowStorage(clock=clock)
    limiter = limits.strategies.FixedWindowRateLimiter(storage)
    item = limits.parse("2/second")
    assert [limiter.hit(item, "k") for _ in range(3)] == [True, True, False]
    clock.now += 1.0
    assert limiter.hit(item, "k")
    assert storage.reset() == 1
    assert storage.get("anything") == 0
