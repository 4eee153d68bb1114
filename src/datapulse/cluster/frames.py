"""The wire form of tunnel messages between instances (pure functions).

A frame is one Redis pub/sub message: a compact JSON header, a newline, then the raw body bytes
(request body or one response chunk, possibly empty). Header ``t`` is the frame type:

* ``req``    receiver → owner: one HTTP request (``id`` tunnel id, ``r`` reply node, ``m`` method,
  ``p`` path, ``rp`` root path, ``q`` query string, ``h`` headers, ``c`` client address, ``s`` scheme).
* ``res``    owner → receiver: one response body chunk (``more``: more chunks follow); the first
  also carries the status ``st`` and headers ``h``.
* ``cancel`` either way: the other side is gone; stop serving or relaying tunnel ``id``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.types import Scope

FRAME_TYPES = frozenset({"req", "res", "cancel"})


class FrameError(ValueError):
    """A pub/sub message that is not a well-formed tunnel frame."""


def encode(header: dict[str, Any], body: bytes = b"") -> bytes:
    """One frame from ``header`` (JSON-serialisable, ``t`` and ``id`` required) and ``body``."""
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + body


def decode(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Split a frame into header and body.

    Raises:
        FrameError: no newline, a header that is not a JSON object, or an unknown ``t``/missing ``id``.
    """
    head, sep, body = data.partition(b"\n")
    if not sep:
        raise FrameError("frame has no header line")
    try:
        header = json.loads(head)
    except ValueError as exc:
        raise FrameError("frame header is not JSON") from exc
    if not isinstance(header, dict) or header.get("t") not in FRAME_TYPES or not isinstance(header.get("id"), str):
        raise FrameError("frame header lacks a known type or an id")
    return header, body


def request_header(tunnel_id: str, reply_node: str, scope: Scope) -> dict[str, Any]:
    """The ``req`` header describing the HTTP request ``scope`` (its body travels as the frame body)."""
    client = scope.get("client")
    return {
        "t": "req",
        "id": tunnel_id,
        "r": reply_node,
        "m": scope["method"],
        "p": scope["path"],
        "rp": scope.get("root_path", ""),
        "q": scope.get("query_string", b"").decode("latin-1"),
        "h": [[key.decode("latin-1"), value.decode("latin-1")] for key, value in scope["headers"]],
        "c": [client[0], client[1]] if client else None,
        "s": scope.get("scheme", "http"),
    }


def request_scope(header: dict[str, Any]) -> Scope:
    """Rebuild an ASGI HTTP scope from a ``req`` header.

    Raises:
        FrameError: a field is missing or ill-typed.
    """
    try:
        path: str = header["p"]
        client = header.get("c")
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": str(header["m"]),
            "scheme": str(header.get("s", "http")),
            "path": path,
            "raw_path": path.encode(),
            "root_path": str(header.get("rp", "")),
            "query_string": str(header.get("q", "")).encode("latin-1"),
            "headers": [(str(k).encode("latin-1"), str(v).encode("latin-1")) for k, v in header["h"]],
            "client": (str(client[0]), int(client[1])) if client else None,
            "server": None,
            "state": {},
        }
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise FrameError(f"malformed request frame: {exc}") from exc


def response_header(tunnel_id: str, more: bool, start: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``res`` header for one body chunk; ``start`` is the ASGI ``http.response.start`` message
    for the first chunk (None after)."""
    header: dict[str, Any] = {"t": "res", "id": tunnel_id, "more": more}
    if start is not None:
        header["st"] = start["status"]
        header["h"] = [[key.decode("latin-1"), value.decode("latin-1")] for key, value in start.get("headers", [])]
    return header


def response_start(header: dict[str, Any]) -> dict[str, Any]:
    """The ASGI ``http.response.start`` message carried by the first ``res`` header.

    Raises:
        FrameError: the header has no status.
    """
    status = header.get("st")
    if not isinstance(status, int):
        raise FrameError("first response frame carries no status")
    headers = [(str(k).encode("latin-1"), str(v).encode("latin-1")) for k, v in header.get("h", [])]
    return {"type": "http.response.start", "status": status, "headers": headers}
