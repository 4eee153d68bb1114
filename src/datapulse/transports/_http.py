"""Small ASGI helpers shared by the transports: headers, bodies, JSON and error responses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from datapulse.errors import DataPulseError, PayloadTooLarge, UnsupportedMediaType
from datapulse.transports._jsonrpc import RequestId, dumps, error_json
from datapulse.transports._negotiation import is_json_content_type

Header = tuple[bytes, bytes]

SSE_HEADERS: tuple[Header, ...] = (
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
)
JSON_HEADERS: tuple[Header, ...] = ((b"content-type", b"application/json"),)


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lowercase bytes), decoded as latin-1, or None."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def header_items(scope: Scope) -> list[tuple[str, str]]:
    """All headers as ``(lowercase name, value)`` pairs, duplicates kept."""
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]


def query_param(scope: Scope, name: str) -> str | None:
    """The first value of query parameter ``name``, URL-decoded, or None: what ``urllib.parse.parse_qsl(query,
    keep_blank_values=True)`` gives (``&``-separated, ``+`` as space, percent-decoded as UTF-8). A query with
    neither ``%`` nor ``+`` (a session id, a ticket) needs no decoding and is split directly."""
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return None
    query = raw.decode("latin-1")
    if "%" in query or "+" in query:
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key == name:
                return value
        return None
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == name and pair:  # parse_qsl skips empty pairs
            return value
    return None


def require_json_content_type(scope: Scope) -> None:
    """Raise `UnsupportedMediaType` (415) unless the request's Content-Type is JSON."""
    content_type = header(scope, b"content-type")
    if not is_json_content_type(content_type):
        got = content_type or "none"
        raise UnsupportedMediaType(f"Unsupported Media Type: Content-Type must be application/json (got {got})")


async def read_body(scope: Scope, receive: Receive, max_body_bytes: int) -> bytes:
    """Read the whole request body, refusing more than ``max_body_bytes``.

    Raises:
        PayloadTooLarge: the declared Content-Length or the streamed total exceeds the limit (HTTP 413).
    """
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise PayloadTooLarge(f"Payload Too Large: the body is {declared} bytes; the limit is {max_body_bytes}")
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        if chunk:
            total += len(chunk)
            if total > max_body_bytes:
                raise PayloadTooLarge(f"Payload Too Large: the body exceeds the limit of {max_body_bytes} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_bytes(
    send: Send, status: int, body: bytes, headers: Iterable[Header] = JSON_HEADERS, extra: Iterable[Header] = ()
) -> None:
    """Send a complete, non-streaming response."""
    all_headers = [*headers, *extra, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, payload: Any, extra: Iterable[Header] = ()) -> None:
    """Send ``payload`` as a JSON response with ``status``."""
    await send_bytes(send, status, dumps(payload).encode(), JSON_HEADERS, extra)


async def send_error(send: Send, error: DataPulseError, request_id: RequestId | None = None) -> None:
    """Send a `DataPulseError` as its HTTP status with a JSON-RPC error body (``id`` null unless known)."""
    body = error_json(request_id, error.jsonrpc_code, error.message, error.data).encode()
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
    await send_bytes(send, error.http_status, body, JSON_HEADERS, extra)


async def send_empty(send: Send, status: int, extra: Iterable[Header] = ()) -> None:
    """Send a response with no body (202 Accepted, 204, ...)."""
    await send({"type": "http.response.start", "status": status, "headers": [*extra, (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
