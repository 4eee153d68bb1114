"""`datapulse.sessions.ordering`: handlers of one session begin in acceptance order, results leave in the order
their handlers finished, a slow tool holds nobody up, and a request that fails or is refused does not block
the ones after it."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from datapulse.sessions.ordering import Accepted, OrderingMiddleware, SessionOrder, TicketOrder, deliver_in_order

pytestmark = pytest.mark.anyio
MIDDLEWARE = OrderingMiddleware()


async def through_handler(handler: Any) -> Any:
    """What the SDK does with a request: the middleware chain (ours last), then the handler."""

    async def call_next(_ctx: Any) -> Any:
        return await handler()

    return await MIDDLEWARE(None, call_next)  # type: ignore[arg-type]


async def test_results_leave_in_the_order_the_handlers_finished_even_when_the_way_out_is_slower_for_the_first() -> None:
    order = SessionOrder()
    delivered: list[str] = []
    first_out = anyio.Event()

    async def handle(name: str, after_handler: anyio.Event | None) -> str:
        result = await through_handler(lambda: _value(name))
        if after_handler is not None:
            await after_handler.wait()  # e.g. an audit write after the tool returned
        return str(result)

    async def deliver(name: str) -> None:
        delivered.append(name)

    first, second = Accepted(order), Accepted(order)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(deliver_in_order, first, lambda: handle("first", first_out), deliver)
            await anyio.wait_all_tasks_blocked()
            tasks.start_soon(deliver_in_order, second, lambda: handle("second", None), deliver)
            await anyio.wait_all_tasks_blocked()
            assert delivered == []  # "second" waits for "first", whose handler finished before its own
            first_out.set()
    assert delivered == ["first", "second"]


async def test_a_handler_begins_only_after_every_earlier_accepted_one_began() -> None:
    order = SessionOrder()
    began: list[str] = []
    first_may_begin = anyio.Event()

    async def deliver(_: str) -> None:
        pass

    async def first() -> str:
        await first_may_begin.wait()  # still on its way to the handler (e.g. its 202 is being relayed)
        return str(await through_handler(lambda: _record(began, "first")))

    async def second() -> str:
        return str(await through_handler(lambda: _record(began, "second")))

    accepted_first, accepted_second = Accepted(order), Accepted(order)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(deliver_in_order, accepted_first, first, deliver)
            tasks.start_soon(deliver_in_order, accepted_second, second, deliver)
            await anyio.wait_all_tasks_blocked()
            assert began == []
            first_may_begin.set()
    assert began == ["first", "second"]


async def test_a_slow_tool_holds_nobody_up() -> None:
    order = SessionOrder()
    delivered: list[str] = []
    slow_done = anyio.Event()

    async def slow_tool() -> str:
        await slow_done.wait()
        return "slow"

    async def deliver(name: str) -> None:
        delivered.append(name)

    slow, fast = Accepted(order), Accepted(order)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(deliver_in_order, slow, lambda: through_handler(slow_tool), deliver)
            await anyio.wait_all_tasks_blocked()
            await deliver_in_order(fast, lambda: through_handler(lambda: _value("fast")), deliver)
            assert delivered == ["fast"]
            slow_done.set()
    assert delivered == ["fast", "slow"]


@pytest.mark.parametrize("failure", [RuntimeError("on the way out"), asyncio.CancelledError()])
async def test_a_request_that_fails_or_is_refused_does_not_block_later_ones(failure: BaseException) -> None:
    order = SessionOrder()
    delivered: list[str] = []

    async def deliver(name: str) -> None:
        delivered.append(name)

    async def fails_after_handler() -> str:
        await through_handler(lambda: _value("x"))
        raise failure

    async def refused_before_handler() -> str:
        raise failure

    for produce in (fails_after_handler, refused_before_handler):
        with pytest.raises(type(failure)):
            await deliver_in_order(Accepted(order), produce, deliver)
    with anyio.fail_after(5):
        await deliver_in_order(Accepted(order), lambda: through_handler(lambda: _value("works")), deliver)
    assert delivered == ["works"]


async def test_a_request_acknowledged_but_never_handled_releases_its_place() -> None:
    order = SessionOrder()
    Accepted(order).end()  # the 202 could not be sent
    with anyio.fail_after(5):
        await deliver_in_order(Accepted(order), lambda: through_handler(lambda: _value("next")), _ignore)


@pytest.mark.parametrize(
    ("releases", "next_free"),
    [([0], 1), ([1], 0), ([1, 0], 2), ([2, 0, 1], 3), ([0, 0], 1)],
    ids=["in order", "out of order waits", "gap filled", "any order", "idempotent"],
)
def test_release_advances_over_every_contiguous_released_ticket(releases: list[int], next_free: int) -> None:
    order = TicketOrder()
    for _ in range(3):
        order.take()
    for ticket in releases:
        order.release(ticket)
    assert order.pending == 3 - next_free - len({t for t in releases if t >= next_free})


async def _value(name: str) -> str:
    return name


async def _record(log: list[str], name: str) -> str:
    log.append(name)
    return name


async def _ignore(_: str) -> None:
    pass


async def test_an_order_is_reported_idle_only_when_no_request_holds_a_ticket_of_it() -> None:
    order = SessionOrder()
    dropped: list[SessionOrder] = []
    first, second = Accepted(order, dropped.append), Accepted(order, dropped.append)
    await deliver_in_order(first, lambda: through_handler(lambda: _value("a")), _ignore)
    assert dropped == []  # the second still holds its start ticket
    await deliver_in_order(second, lambda: through_handler(lambda: _value("b")), _ignore)
    assert dropped == [order]
    assert order.idle
