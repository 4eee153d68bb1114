"""A lean HTTP/1.1 client for the load generator: one asyncio `Protocol` per TCP connection, parsed with httptools.

Why not httpx: at 10k+ calls/s a general-purpose client costs more CPU than the server route it measures. This
client does only what the bench needs: sequential keep-alive request/response exchanges on one connection, and
long-lived ``text/event-stream`` responses decoded into events as bytes arrive. Completion times are taken in
the parser callback (``time.perf_counter()``), before the waiting task is scheduled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httptools

EventHandler = Callable[[bytes, bytes, float], None]
"""Called with ``(event type, data, arrival time)`` for each SSE event that carries data."""


class Response:
    """One complete HTTP response."""

    __slots__ = ("body", "done_at", "headers", "status")

    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes, done_at: float) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.done_at = done_at

    @property
    def content_type(self) -> bytes:
        return self.headers.get(b"content-type", b"")


class SseDecoder:
    """Incremental ``text/event-stream`` decoder (LF or CRLF line ends); events without data are skipped."""

    __slots__ = ("_buf", "comments", "on_event")

    def __init__(self, on_event: EventHandler) -> None:
        self._buf = b""
        self.on_event = on_event
        self.comments = 0

    def feed(self, chunk: bytes) -> None:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        now = time.perf_counter()
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                break
            block, buf = buf[:end], buf[end + 2 :]
            event = b"message"
            data: list[bytes] = []
            for line in block.split(b"\n"):
                if not line:
                    continue
                if line[:1] == b":":
                    self.comments += 1
                    continue
                name, _, value = line.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
                if name == b"data":
                    data.append(value)
                elif name == b"event":
                    event = value
            if data and any(data):
                self.on_event(event, b"\n".join(data), now)
        self._buf = buf


def parse_sse_body(body: bytes) -> list[tuple[bytes, bytes]]:
    """All ``(event, data)`` pairs of a complete SSE body."""
    events: list[tuple[bytes, bytes]] = []
    SseDecoder(lambda event, data, _t: events.append((event, data))).feed(body + b"\n\n")
    return events


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: `request` for exchanges, `open_stream` for an SSE response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._head_waiter: asyncio.Future[tuple[int, dict[bytes, bytes]]] | None = None
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._decoder: SseDecoder | None = None
        self._pending_head: asyncio.Future[tuple[int, dict[bytes, bytes]]] | None = None
        self.closed = False
        self.close_reason: str | None = None
        self.stream_ended = False

    # --- asyncio.Protocol -------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"bad HTTP response: {exc}")
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(f"connection lost: {exc}" if exc else "connection closed by the server")

    def _fail(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        error = ConnectionError(reason)
        for waiter in (self._waiter, self._head_waiter, self._pending_head):
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
        self._waiter = self._head_waiter = self._pending_head = None

    # --- httptools callbacks ----------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = {}
        self._body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        waiter = self._head_waiter
        if waiter is not None:
            self._head_waiter = None
            status = self._parser.get_status_code()
            if status == 200 and self._headers.get(b"content-type", b"").startswith(b"text/event-stream"):
                self._waiter = None
                if not waiter.done():
                    waiter.set_result((status, self._headers))
            else:
                self._decoder = None  # not a stream: deliver it as a plain response to the same caller
                self._waiter = None
                self._pending_head = waiter

    def on_body(self, body: bytes) -> None:
        if self._decoder is not None:
            self._decoder.feed(body)
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        done_at = time.perf_counter()
        if self._decoder is not None:
            self.stream_ended = True
            self._decoder = None
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        response = Response(self._parser.get_status_code(), self._headers, body, done_at)
        pending_head = self._pending_head
        if pending_head is not None:
            self._pending_head = None
            if not pending_head.done():
                pending_head.set_exception(StreamRefused(response))
            return
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    # --- API --------------------------------------------------------------------------------------------------
    def request(self, data: bytes) -> asyncio.Future[Response]:
        """Send one complete request (head and body bytes); the future resolves with its response."""
        if self.closed or self.transport is None:
            raise ConnectionError(self.close_reason or "connection closed")
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self.transport.write(data)
        return waiter

    async def open_stream(self, data: bytes, on_event: EventHandler) -> dict[bytes, bytes]:
        """Send a GET whose response is ``text/event-stream``; events go to ``on_event`` as they arrive.

        Raises:
            StreamRefused: the server answered with anything but ``200 text/event-stream``.
        """
        if self.closed or self.transport is None:
            raise ConnectionError(self.close_reason or "connection closed")
        waiter: asyncio.Future[tuple[int, dict[bytes, bytes]]] = asyncio.get_running_loop().create_future()
        self._head_waiter = waiter
        self._decoder = SseDecoder(on_event)
        self.transport.write(data)
        _status, headers = await waiter
        return headers

    @property
    def decoder(self) -> SseDecoder | None:
        return self._decoder

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


class StreamRefused(Exception):
    """A GET expected to open an SSE stream got another response."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"HTTP {response.status}: {response.body[:200]!r}")
        self.response = response


async def connect(host: str, port: int) -> HttpConnection:
    """Open one TCP connection (TCP_NODELAY is the asyncio/uvloop default)."""
    _transport, protocol = await asyncio.get_running_loop().create_connection(HttpConnection, host, port)
    return protocol


def post_prefix(target: str, host: str, headers: list[tuple[str, str]]) -> bytes:
    """The head of a POST up to ``Content-Length: `` (append the length, ``\\r\\n\\r\\n`` and the body)."""
    lines = [f"POST {target} HTTP/1.1", f"Host: {host}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")


def with_body(prefix: bytes, body: bytes) -> bytes:
    """A complete POST from `post_prefix` and its body."""
    return b"%s%d\r\n\r\n%s" % (prefix, len(body), body)


def build_request(method: str, target: str, host: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """The bytes of one HTTP/1.1 request (Content-Length added when there is a body or the method is POST)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
