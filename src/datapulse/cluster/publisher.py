"""Coalescing PUBLISH: every frame this instance publishes goes out in pipelines, not one round trip each.

A lone ``PUBLISH`` through redis-py costs about 90 µs of CPU (pool checkout, a socket write, a wake-up
for the reply); sixteen in one pipeline cost about 20 µs each (measured on the benchmark machine). Under
load the tunnels publish many small frames at once, so one writer task drains everything queued since
its last round trip into a single non-transactional pipeline. Order is kept: frames are written in
the order `Publisher.publish` was called, which keeps a relayed stream's chunks in sequence.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import anyio
import redis.asyncio as aioredis

log = logging.getLogger("datapulse.cluster.publisher")

MAX_BATCH = 256
"""Frames per pipeline at most (bounds one round trip's size and the latency of the last frame in it)."""


@dataclass(slots=True)
class _Pending:
    channel: str
    data: bytes
    done: anyio.Event = field(default_factory=anyio.Event)
    listeners: int = 0
    error: BaseException | None = None


class Publisher:
    """Publishes frames to Redis channels, batching the ones queued while a round trip is under way.

    Args:
        redis: the cluster's client.
        max_batch: frames per pipeline at most.

    `run` must be running for batching; without it (before start-up, after shutdown) `publish` sends
    its frame on its own.
    """

    def __init__(self, redis: aioredis.Redis, *, max_batch: int = MAX_BATCH) -> None:
        self._redis = redis
        self._max_batch = max_batch
        self._queue: deque[_Pending] = deque()
        self._wake = anyio.Event()
        self._running = False
        self.round_trips = 0
        """Round trips to Redis made by `run` so far (one per pipeline or lone frame)."""

    async def publish(self, channel: str, data: bytes) -> int:
        """Publish ``data`` on ``channel``.

        Returns:
            The number of subscribers that received it (0: nobody listens on ``channel``).

        Raises:
            redis.exceptions.RedisError, OSError, TimeoutError: Redis did not take the frame (callers
                wrap this in `datapulse.cluster.store.store_errors`).
        """
        if not self._running:
            return int(await self._redis.publish(channel, data))
        item = _Pending(channel, data)
        self._queue.append(item)
        self._wake.set()
        await item.done.wait()
        if item.error is not None:
            raise item.error
        return item.listeners

    async def run(self) -> None:
        """Write queued frames until cancelled; frames still queued then are sent one by one by their callers."""
        self._running = True
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                while self._queue:
                    await self._flush()
        finally:
            self._running = False
            self._fail_queued()

    async def _flush(self) -> None:
        batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
        self.round_trips += 1
        try:
            if len(batch) == 1:
                results: list[object] = [await self._redis.publish(batch[0].channel, batch[0].data)]
            else:
                pipe = self._redis.pipeline(transaction=False)
                for item in batch:
                    pipe.publish(item.channel, item.data)
                results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            for item in batch:
                item.error = exc if isinstance(exc, Exception) else ConnectionError("publisher stopped")
                item.done.set()
            if not isinstance(exc, Exception):
                raise
            return
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                item.error = result
            else:
                item.listeners = int(result)  # type: ignore[call-overload]
            item.done.set()

    def _fail_queued(self) -> None:
        while self._queue:
            item = self._queue.popleft()
            item.error = ConnectionError("the cluster publisher stopped before this frame was sent")
            item.done.set()
