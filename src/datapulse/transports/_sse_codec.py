"""Server-Sent Events framing (WHATWG HTML §9.2 "Server-sent events"), as pure functions.

Encoding produces one complete event per call so a single ASGI ``send`` never splits a frame.
Decoding is incremental (feed bytes, get events) and is used by tests and by nothing on the
server's hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PING_FRAME = b": ping\n\n"


def encode_event(
    data: str, *, event: str | None = None, event_id: str | None = None, retry_ms: int | None = None
) -> bytes:
    """Encode one SSE event.

    Args:
        data: the event payload; each line becomes its own ``data:`` field (CR, LF and CRLF all split).
        event: the ``event:`` type, or None for the default ``message`` type.
        event_id: the ``id:`` field (must not contain CR, LF or NUL), or None.
        retry_ms: the ``retry:`` reconnection delay in milliseconds, or None.

    Returns:
        The UTF-8 bytes of the event, ending with the blank line that dispatches it.

    Raises:
        ValueError: ``event`` or ``event_id`` contains a line break or NUL.
    """
    parts: list[str] = []
    if event_id is not None:
        _check_field("id", event_id)
        parts.append(f"id: {event_id}\n")
    if event is not None:
        _check_field("event", event)
        parts.append(f"event: {event}\n")
    if retry_ms is not None:
        parts.append(f"retry: {int(retry_ms)}\n")
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    parts.extend(f"data: {line}\n" for line in lines)
    parts.append("\n")
    return "".join(parts).encode()


def encode_message_event(json_text: str, *, event_id: str | None = None) -> bytes:
    """Encode a compact (single-line) JSON text as an ``event: message`` frame; the hot-path twin of `encode_event`."""
    if event_id is None:
        return f"event: message\ndata: {json_text}\n\n".encode()
    return f"id: {event_id}\nevent: message\ndata: {json_text}\n\n".encode()


def encode_data_event(json_text: str, *, event_id: str) -> bytes:
    """Encode a compact JSON text as a default-type event with an id (the DataPulse API's frame shape)."""
    return f"id: {event_id}\ndata: {json_text}\n\n".encode()


def encode_data_frame(json_bytes: bytes, event_id: str) -> bytes:
    """`encode_data_event` for compact JSON already encoded as UTF-8 (one join, no decode and re-encode)."""
    return b"".join((b"id: ", event_id.encode(), b"\ndata: ", json_bytes, b"\n\n"))


def encode_comment(text: str = "ping") -> bytes:
    """Encode an SSE comment line (ignored by clients; used as keepalive)."""
    _check_field("comment", text)
    return f": {text}\n\n".encode()


def encode_retry(retry_ms: int) -> bytes:
    """Encode a bare ``retry:`` field telling the client how long to wait before reconnecting."""
    return f"retry: {int(retry_ms)}\n\n".encode()


def _check_field(name: str, value: str) -> None:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"SSE {name} field must not contain CR, LF or NUL")


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched SSE event (``event`` is "message" when the stream named none)."""

    data: str
    event: str = "message"
    event_id: str | None = None
    retry_ms: int | None = None


@dataclass
class SseDecoder:
    """Incremental SSE parser following the WHATWG event-stream interpretation rules.

    Feed it byte chunks of any size (even one byte at a time); it returns the events completed so far.
    Comments are counted in `comments` (keepalive checks) but not returned as events. An event with an
    ``id:`` and an empty ``data:`` (a resumption priming event) is returned with ``data == ""``.
    """

    comments: list[str] = field(default_factory=list)
    last_event_id: str | None = None
    _buffer: bytes = b""
    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _id: str | None = None
    _retry: int | None = None
    _saw_field: bool = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Consume ``chunk`` and return every event it completes, in order."""
        self._buffer += chunk
        events: list[SseEvent] = []
        while True:
            cut = _next_line_break(self._buffer)
            if cut is None:
                return events
            start, end = cut
            line = self._buffer[:start].decode()
            self._buffer = self._buffer[end:]
            event = self._line(line)
            if event is not None:
                events.append(event)

    def _line(self, line: str) -> SseEvent | None:
        if line == "":
            if not self._saw_field:
                return None
            event = SseEvent(
                data="\n".join(self._data), event=self._event or "message", event_id=self._id, retry_ms=self._retry
            )
            self._data, self._event, self._retry, self._saw_field = [], "", None, False
            self._id = None
            return event
        if line.startswith(":"):
            self.comments.append(line[1:].strip())
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        self._saw_field = True
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
            self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None


def _next_line_break(buffer: bytes) -> tuple[int, int] | None:
    for index, byte in enumerate(buffer):
        if byte == 0x0A:
            return index, index + 1
        if byte == 0x0D:
            if index + 1 == len(buffer):
                return None  # a CR at the end may be the first half of CRLF
            return (index, index + 2) if buffer[index + 1] == 0x0A else (index, index + 1)
    return None
