"""Requests of one session start their handlers in the order they were accepted, and their results leave the
session's stream in the order the handlers finished.

On the streams that carry the results of many requests (the DataPulse API's ``/events``, 2024-11-05
``/sse``) a request is acknowledged (202) before it is handled, and in cluster mode the acknowledgement of a
forwarded request can reach the client, and its next request be accepted, before the first one's handler has
even begun. A result is written after its handler returns and after the layers around it (audit, metrics,
tracing, the SDK's serialisation) have run, and those may wait. So two requests sent one after another could
overtake each other twice. Two `TicketOrder`s per session prevent it:

* at acceptance (before the 202) a request takes a *start* ticket; `OrderingMiddleware`, last on the SDK's
  middleware chain (nearest the handler), lets the handler begin only after every earlier accepted request's
  handler began (or that request ended);
* when the handler returns, the middleware takes a *finish* ticket, and `deliver_in_order` writes the result
  only after the results of every earlier finish ticket.

A slow tool holds nobody up: later requests wait only for it to begin, and it takes its finish ticket only
when it finishes. A request that never reaches the handler (refused, malformed) releases its start ticket
when it ends and takes no finish ticket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

T = TypeVar("T")


class TicketOrder:
    """Tickets 0, 1, 2, ... in the order they were taken; `wait_turn` lets ticket ``n`` through once every
    ticket below ``n`` was released (its holder went through, or ended without going through)."""

    __slots__ = ("_issued", "_next", "_released", "_waiters")

    def __init__(self) -> None:
        self._issued = 0
        self._next = 0  # the lowest ticket not yet released
        self._released: set[int] = set()
        self._waiters: dict[int, asyncio.Event] = {}

    def take(self) -> int:
        """The next ticket (0, 1, 2, ...)."""
        ticket = self._issued
        self._issued += 1
        return ticket

    async def wait_turn(self, ticket: int) -> None:
        """Return once every ticket below ``ticket`` was released."""
        if ticket > self._next:
            waiter = self._waiters.setdefault(ticket, asyncio.Event())
            await waiter.wait()

    def release(self, ticket: int) -> None:
        """Mark ``ticket`` done (idempotent) and let the next waiting ticket through."""
        if ticket < self._next:
            return
        self._released.add(ticket)
        while self._next in self._released:
            self._released.discard(self._next)
            self._next += 1
            waiter = self._waiters.pop(self._next, None)
            if waiter is not None:
                waiter.set()

    @property
    def pending(self) -> int:
        """Tickets taken and not yet released."""
        return self._issued - self._next - len(self._released)


class SessionOrder:
    """A session's two orders: handlers begin in acceptance order, results leave in finishing order."""

    __slots__ = ("finish", "start")

    def __init__(self) -> None:
        self.start = TicketOrder()
        self.finish = TicketOrder()

    @property
    def idle(self) -> bool:
        """No ticket of either order is outstanding: a fresh `SessionOrder` would order what comes next alike."""
        return self.start.pending == 0 and self.finish.pending == 0


class Accepted:
    """One accepted request's place in its session's `SessionOrder` (take it before acknowledging the request)."""

    __slots__ = ("finish_ticket", "on_idle", "order", "start_ticket")

    def __init__(self, order: SessionOrder, on_idle: Callable[[SessionOrder], None] | None = None) -> None:
        self.order = order
        self.on_idle = on_idle
        """Called with the order when this request ends and leaves it idle (the session may drop it)."""
        self.start_ticket: int | None = order.start.take()
        self.finish_ticket: int | None = None

    async def begin(self) -> None:
        """Wait until every earlier accepted request's handler began, then count this one as begun."""
        if self.start_ticket is not None:
            try:
                await self.order.start.wait_turn(self.start_ticket)
            finally:
                self.release_start()

    def release_start(self) -> None:
        """Count this request as begun (or ended before its handler): the next accepted one may begin."""
        if self.start_ticket is not None:
            self.order.start.release(self.start_ticket)
            self.start_ticket = None

    def finished(self) -> None:
        if self.finish_ticket is None:
            self.finish_ticket = self.order.finish.take()

    def end(self) -> None:
        """Release whatever this request still holds (idempotent)."""
        self.release_start()
        if self.finish_ticket is not None:
            self.order.finish.release(self.finish_ticket)
            self.finish_ticket = None
        if self.on_idle is not None and self.order.idle:
            self.on_idle(self.order)
            self.on_idle = None


_CURRENT: ContextVar[Accepted | None] = ContextVar("datapulse_accepted_request", default=None)


async def deliver_in_order(
    accepted: Accepted, produce: Callable[[], Awaitable[T]], deliver: Callable[[T], Awaitable[None]]
) -> None:
    """Run ``produce`` (the request's handling, through `OrderingMiddleware`), then ``deliver`` its value once
    the results of every request whose handler finished earlier were delivered. Every ticket is released
    whatever happens (an exception or a cancellation included), so nobody waits for it forever."""
    token = _CURRENT.set(accepted)
    try:
        try:
            value = await produce()
        finally:
            _CURRENT.reset(token)
            accepted.release_start()  # refused before the handler: let the next one begin
        if accepted.finish_ticket is not None:
            await accepted.order.finish.wait_turn(accepted.finish_ticket)
        await deliver(value)
    finally:
        accepted.end()


class OrderingMiddleware:
    """An SDK ``ServerMiddleware`` for the end of the chain (nearest the handler): the handler begins in its
    session's acceptance order, and takes its finish ticket when it returns or raises (only for requests
    handled through `deliver_in_order`; others pass straight through)."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        return await in_turn(partial(call_next, ctx))


def in_turn(handler: Callable[[], Awaitable[T]]) -> Awaitable[T]:
    """Run ``handler()`` in its session's acceptance order and take its finish ticket when it returns or raises
    (`OrderingMiddleware`'s work; also called by `datapulse.fastpath`, which runs no SDK middleware chain).
    Outside `deliver_in_order` it is just ``handler()``: its awaitable is returned as it is, with no coroutine of
    this function's own around it (stateless requests, the most frequent, pass through here)."""
    accepted = _CURRENT.get()
    if accepted is None:
        return handler()
    return _in_turn(accepted, handler)


async def _in_turn(accepted: Accepted, handler: Callable[[], Awaitable[T]]) -> T:
    await accepted.begin()
    try:
        return await handler()
    finally:
        accepted.finished()
