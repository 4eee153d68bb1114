"""Holding an SSE response open: keepalive comments, disconnect detection, and a clean end.

The task that owns a long-lived stream parks on ASGI ``receive()`` — which returns
``http.disconnect`` when the client goes — with a timeout that doubles as the keepalive timer, so
an idle stream costs one parked task and no other timers, queues or tasks. Writers elsewhere use
the stream's `SseConnection`; the server ends a stream by cancelling the owner's scope
(`SseConnection.abort`), after which the owner sends the ``retry:`` hint and ends the response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import anyio
from starlette.types import Receive, Send

from datapulse.errors import StreamClosed
from datapulse.sessions.streams import SseConnection
from datapulse.transports._http import SSE_HEADERS, Header
from datapulse.transports._sse_codec import PING_FRAME, encode_retry

FINAL_WRITE_TIMEOUT_S = 1.0


async def start_sse(send: Send, extra_headers: Iterable[Header] = ()) -> None:
    """Send the ``200 text/event-stream`` response head (no-cache, ``X-Accel-Buffering: no``)."""
    await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *extra_headers]})


async def hold_open(
    receive: Receive,
    connection: SseConnection,
    cancel: anyio.CancelScope,
    keepalive_s: float,
    *,
    on_tick: Callable[[], Awaitable[None]] | None = None,
) -> str:
    """Keep a stream open until the client disconnects or the server ends it.

    Sends a ``: ping`` comment after every ``keepalive_s`` without client traffic (skipped while
    another frame is being written — that frame is traffic enough), after awaiting ``on_tick`` (an event
    stream retries delivering what waits for the cluster store: `EventStream.flush_pending`).

    Returns:
        Why the stream ended, for the log.
    """
    with cancel:
        try:
            while True:
                with anyio.move_on_after(keepalive_s):
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        connection.mark_closed()
                        return "client disconnected"
                    continue
                if on_tick is not None:
                    await on_tick()
                if connection.offer():
                    await connection.write(PING_FRAME)
        except StreamClosed:
            pass
    return connection.close_reason or "server ended the stream"


async def end_sse(send: Send, *, retry_ms: int | None) -> None:
    """Finish an SSE response, first telling the client when to reconnect if ``retry_ms`` is given.

    Bounded and shielded: a client that stopped reading cannot hold up the caller.
    """
    with anyio.move_on_after(FINAL_WRITE_TIMEOUT_S, shield=True):
        body = encode_retry(retry_ms) if retry_ms is not None else b""
        await send({"type": "http.response.body", "body": body, "more_body": False})
