"""Reading SSE responses in tests: an async reader over an httpx2 streaming response."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2

from datapulse.transports._sse_codec import SseDecoder, SseEvent

EVENT_TIMEOUT_S = 10.0


class SseReader:
    """Pulls events from one open SSE response; every wait is bounded."""

    def __init__(self, response: httpx2.Response) -> None:
        self.response = response
        self.decoder = SseDecoder()
        self._chunks = response.aiter_raw()
        self._ready: deque[SseEvent] = deque()
        self.ended = False

    async def next_event(self, timeout_s: float = EVENT_TIMEOUT_S) -> SseEvent:
        """The next dispatched event (comments are collected in ``decoder.comments``).

        Raises:
            EOFError: the stream ended first.
            TimeoutError: nothing arrived in time.
        """
        with anyio.fail_after(timeout_s):
            while not self._ready:
                await self._pull()
            return self._ready.popleft()

    async def next_comment(self, timeout_s: float = EVENT_TIMEOUT_S) -> str:
        """Wait for the next SSE comment line (a keepalive) and return its text."""
        seen = len(self.decoder.comments)
        with anyio.fail_after(timeout_s):
            while len(self.decoder.comments) <= seen:
                await self._pull()
        return self.decoder.comments[seen]

    async def read_to_end(self, timeout_s: float = EVENT_TIMEOUT_S) -> list[SseEvent]:
        """Every remaining event until the server ends the stream."""
        events: list[SseEvent] = []
        with anyio.fail_after(timeout_s):
            while True:
                while self._ready:
                    events.append(self._ready.popleft())
                if self.ended:
                    return events
                try:
                    await self._pull()
                except EOFError:
                    events.extend(self._ready)
                    return events

    async def _pull(self) -> None:
        if self.ended:
            raise EOFError("the SSE stream ended")
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self.ended = True
            if not self._ready:
                raise EOFError("the SSE stream ended") from None
            return
        self._ready.extend(self.decoder.feed(chunk))


@asynccontextmanager
async def open_sse(client: httpx2.AsyncClient, method: str, url: str, **kwargs: Any) -> AsyncIterator[SseReader]:
    """Send a request whose response is expected to be an SSE stream; the caller checks the status."""
    headers = {"Accept": "text/event-stream", **kwargs.pop("headers", {})}
    async with client.stream(method, url, headers=headers, **kwargs) as response:
        yield SseReader(response)


async def watch_frames(watch: SseReader, n: int) -> list[dict[str, Any]]:
    """The next ``n`` frame events' data of a dashboard watch stream (any other event fails the test)."""
    seen: list[dict[str, Any]] = []
    while len(seen) < n:
        event = await watch.next_event()
        assert event.event == "frame", event
        seen.append(json.loads(event.data))
    return seen
