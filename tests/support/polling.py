"""Waiting for the state of other processes (Redis, DataPulse instances): nothing to await there, so it is polled,
always under a bound."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

POLL_INTERVAL_S = 0.05
DEFAULT_TIMEOUT_S = 20.0


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Return once ``check()`` holds, asking every `POLL_INTERVAL_S`.

    Raises:
        TimeoutError: it did not hold within ``timeout_s``.
    """
    with anyio.fail_after(timeout_s):
        while True:
            if await check():
                return
            await anyio.sleep(POLL_INTERVAL_S)
