"""`BurstLimiter`: first come, first served, and a slot is never held for good."""

from __future__ import annotations

import anyio
import pytest

from datapulse.cluster.admission import BurstLimiter, Slot

pytestmark = pytest.mark.anyio

WAIT_S = 5.0


async def test_waiters_are_admitted_in_arrival_order_as_slots_are_released() -> None:
    limiter = BurstLimiter(limit=2, hold_max_s=60)
    first, second = await limiter.admit(), await limiter.admit()
    assert limiter.available == 0
    order: list[int] = []
    slots: dict[int, Slot] = {}
    queued = [anyio.Event() for _ in range(3)]

    async def wait(n: int) -> None:
        queued[n].set()
        slots[n] = await limiter.admit()
        order.append(n)

    with anyio.fail_after(WAIT_S):
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(wait, n)
                await queued[n].wait()
            await anyio.wait_all_tasks_blocked()
            assert order == []
            first.release()
            second.release()
            await anyio.wait_all_tasks_blocked()
            assert order == [0, 1]
            slots[0].release()
    assert order == [0, 1, 2]
    for slot in slots.values():
        slot.release()
    assert limiter.available == 2


async def test_releasing_a_slot_twice_frees_it_once() -> None:
    limiter = BurstLimiter(limit=1, hold_max_s=60)
    slot = await limiter.admit()
    slot.release()
    slot.release()
    assert slot.released
    assert limiter.available == 1


async def test_a_slot_held_past_hold_max_returns_by_itself() -> None:
    limiter = BurstLimiter(limit=1, hold_max_s=0.01)
    held = await limiter.admit()
    with anyio.fail_after(WAIT_S):
        second = await limiter.admit()  # admitted once the first slot times out
    assert held.released
    second.release()


async def test_a_waiter_cancelled_before_admission_takes_no_slot() -> None:
    limiter = BurstLimiter(limit=1, hold_max_s=60)
    slot = await limiter.admit()
    with anyio.move_on_after(0):
        await limiter.admit()
    slot.release()
    assert limiter.available == 1


@pytest.mark.parametrize(("limit", "hold_max_s"), [(0, 1.0), (-1, 1.0), (1, 0.0), (1, -0.5)])
def test_a_limit_below_one_or_a_hold_max_not_positive_is_refused(limit: int, hold_max_s: float) -> None:
    with pytest.raises(ValueError, match=r"must be (at least 1|positive)"):
        BurstLimiter(limit=limit, hold_max_s=hold_max_s)
