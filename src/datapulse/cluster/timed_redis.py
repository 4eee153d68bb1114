"""A redis-py asyncio client that reports how long each command and each pipeline took.

`TimedRedis` is ``redis.asyncio.Redis`` with its public ``execute_command`` timed, and ``pipeline()``
returning `TimedPipeline`, a ``redis.asyncio.client.Pipeline`` whose ``execute`` is timed as the command
``pipeline``. Each duration, in seconds (``time.perf_counter``), goes to ``observer(command, seconds)``, where
``command`` is the command's name in lower case (``"set"``, ``"evalsha"``, ``"pipeline"``); failed commands
are observed too (a timeout shows as its full wait). With no observer nothing is measured. Pub/sub reads
are not commands and are not observed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from datapulse.cluster.redis_api import execute_command

__all__ = ["CommandObserver", "TimedPipeline", "TimedRedis"]

CommandObserver = Callable[[str, float], None]
"""Receives (command name in lower case, duration in seconds) once per command or pipeline."""


def _command_name(args: tuple[Any, ...]) -> str:
    if not args:
        return "other"
    name = args[0]
    if isinstance(name, bytes):
        name = name.decode("latin-1")
    return str(name).split(" ", 1)[0].lower()


class TimedPipeline(Pipeline):
    """A pipeline whose ``execute`` (one round trip for every queued command) is observed as ``pipeline``."""

    observer: CommandObserver | None = None

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        observer = self.observer
        if observer is None:
            return await super().execute(raise_on_error)
        started = time.perf_counter()
        try:
            return await super().execute(raise_on_error)
        finally:
            observer("pipeline", time.perf_counter() - started)


class TimedRedis(aioredis.Redis):
    """``redis.asyncio.Redis`` reporting each command's duration to `observer` (set it after construction,
    for example on the client `TimedRedis.from_url` returns)."""

    observer: CommandObserver | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        observer = self.observer
        if observer is None:
            return await execute_command(self, *args, **options)
        started = time.perf_counter()
        try:
            return await execute_command(self, *args, **options)
        finally:
            observer(_command_name(args), time.perf_counter() - started)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> TimedPipeline:
        pipe = TimedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.observer = self.observer
        return pipe
