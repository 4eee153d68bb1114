"""Pure parsing and negotiation helpers for the HTTP transports (no I/O; tested with tables)."""

from __future__ import annotations

import functools
import re
from typing import Literal

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from datapulse.errors import MethodNotFound

Era = Literal["modern", "legacy", "unsupported"]

#: Seed tutorials' method names, accepted on /message and /messages only (seeds 001/002).
METHOD_ALIASES: dict[str, str] = {"listTools": "tools/list", "callTool": "tools/call"}

_SESSION_ID = re.compile(r"[\x21-\x7e]{1,128}")
_DATAPULSE_SESSION_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")


_MEMO_SIZE = 256
"""Header values whose parse a pure helper below remembers (clients send the same few on every request)."""


@functools.lru_cache(maxsize=_MEMO_SIZE)
def accepts(accept_header: str | None) -> tuple[bool, bool]:
    """Which of JSON and SSE an ``Accept`` header admits (RFC 9110 §12.5.1, wildcards honoured); the answers for
    the last `_MEMO_SIZE` distinct values are remembered.

    Args:
        accept_header: the raw header value, or None when absent.

    Returns:
        ``(json_ok, sse_ok)``. A missing header admits both (RFC 9110: absent Accept means any).
        A media range with ``q=0`` is treated as refused.
    """
    if accept_header is None or not accept_header.strip():
        return True, True
    json_ok = sse_ok = False
    for item in accept_header.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        media = media.lower()
        if any(p.replace(" ", "").lower() in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params):
            continue
        if media in ("*/*", "application/*", "application/json"):
            json_ok = True
        if media in ("*/*", "text/*", "text/event-stream"):
            sse_ok = True
    return json_ok, sse_ok


@functools.lru_cache(maxsize=_MEMO_SIZE)
def is_json_content_type(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` names JSON (``application/json`` or ``application/*+json``, any params); the
    answers for the last `_MEMO_SIZE` distinct values are remembered."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def classify_era(protocol_version_header: str | None) -> Era:
    """Which MCP era serves a ``/mcp`` request, from its ``MCP-Protocol-Version`` header.

    Spec 2026-07-28 basic/transports/streamable-http "Protocol Version Header": a modern version
    routes to the stateless path; a handshake version (2024-11-05 … 2025-11-25) or no header at all
    routes to the session path (a missing header MAY be treated as 2025-03-26); anything else is
    an unsupported version, answered 400 with the supported list.
    """
    if protocol_version_header is None:
        return "legacy"
    if protocol_version_header in MODERN_PROTOCOL_VERSIONS:
        return "modern"
    if protocol_version_header in HANDSHAKE_PROTOCOL_VERSIONS:
        return "legacy"
    return "unsupported"


def is_valid_session_id(value: str) -> bool:
    """Whether an ``Mcp-Session-Id`` / ``session_id`` is well formed: 1-128 visible ASCII characters
    (spec 2025-11-25 basic/transports "Session Management": 0x21-0x7E)."""
    return _SESSION_ID.fullmatch(value) is not None


def is_valid_datapulse_session_id(value: str) -> bool:
    """Whether a client-chosen DataPulse API ``session_id`` is 1-128 URL-safe characters ``[A-Za-z0-9._~-]``."""
    return _DATAPULSE_SESSION_ID.fullmatch(value) is not None


def resolve_method(method: str, *, allow_aliases: bool) -> str:
    """Map a JSON-RPC method name to the one the SDK serves.

    Args:
        method: the ``method`` member of an inbound JSON-RPC request.
        allow_aliases: True on the seed-compatible endpoints (``/message``, ``/messages``), where
            ``listTools``/``callTool`` mean ``tools/list``/``tools/call``.

    Returns:
        The standard method name.

    Raises:
        MethodNotFound: an alias used where aliases are not accepted; the message names the standard method.
    """
    standard = METHOD_ALIASES.get(method)
    if standard is None:
        return method
    if allow_aliases:
        return standard
    raise MethodNotFound(f"Method not found: {method!r}; the MCP method is {standard!r}", data=method)


def parse_last_event_id(value: str | None) -> tuple[str, int] | None:
    """Split a DataPulse event id ``"<stream>.<seq>"`` into its stream key and sequence number.

    Returns None for a missing or malformed id (the caller then treats the request as a fresh connect).
    """
    if not value:
        return None
    stream, sep, seq = value.rpartition(".")
    if not sep or not stream or not seq.isdigit() or len(value) > 200:
        return None
    return stream, int(seq)
