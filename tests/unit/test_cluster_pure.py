"""Pure functions of cluster mode: tunnel frames, which session a request names, Redis key layout."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.types import Scope

from datapulse.cluster import frames
from datapulse.cluster.routing import session_id_of
from datapulse.cluster.store import Keys

SCOPE: Scope = {
    "type": "http",
    "method": "POST",
    "path": "/messages",
    "root_path": "/api",
    "query_string": b"session_id=abc&x=%C3%A9",
    "headers": [(b"content-type", b"application/json"), (b"x-caf\xc3\xa9", b"\xe9t\xe9")],
    "client": ("10.0.0.7", 51234),
    "scheme": "https",
}


def test_a_request_survives_the_trip_through_a_frame() -> None:
    header = frames.request_header("n1.7", "n1", SCOPE)
    decoded, body = frames.decode(frames.encode(header, b'{"jsonrpc":"2.0"}\n\x00binary'))
    assert body == b'{"jsonrpc":"2.0"}\n\x00binary'
    rebuilt = frames.request_scope(decoded)
    for key in ("method", "path", "root_path", "query_string", "headers", "client", "scheme"):
        assert rebuilt[key] == SCOPE[key], key
    assert rebuilt["type"] == "http"


def test_a_response_start_survives_the_trip_through_the_first_frame() -> None:
    start = {"type": "http.response.start", "status": 202, "headers": [(b"content-type", b"text/plain")]}
    header, body = frames.decode(frames.encode(frames.response_header("n1.7", False, start), b"Accepted"))
    assert (header["more"], body) == (False, b"Accepted")
    assert frames.response_start(header) == start
    later, _ = frames.decode(frames.encode(frames.response_header("n1.7", True, None)))
    assert "st" not in later


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"no newline", id="no-header-line"),
        pytest.param(b"not json\n", id="header-not-json"),
        pytest.param(b"[1]\n", id="header-not-object"),
        pytest.param(b'{"t":"req"}\n', id="no-id"),
        pytest.param(b'{"t":"other","id":"x"}\n', id="unknown-type"),
        pytest.param(b'{"t":"req","id":7}\n', id="id-not-string"),
    ],
)
def test_malformed_frames_are_refused(data: bytes) -> None:
    with pytest.raises(frames.FrameError):
        frames.decode(data)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param({"t": "req", "id": "x"}, id="no-method-or-path"),
        pytest.param({"t": "req", "id": "x", "m": "GET", "p": "/", "h": [["a"]]}, id="header-pair-too-short"),
        pytest.param({"t": "req", "id": "x", "m": "GET", "p": "/", "h": [], "c": ["h", "port"]}, id="bad-port"),
    ],
)
def test_malformed_request_frames_are_refused(header: dict[str, Any]) -> None:
    with pytest.raises(frames.FrameError):
        frames.request_scope(header)


def test_a_first_response_frame_without_a_status_is_refused() -> None:
    with pytest.raises(frames.FrameError):
        frames.response_start({"t": "res", "id": "x", "more": False})


def scope(path: str, headers: dict[str, str] | None = None, query: str = "") -> Scope:
    return {
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
        "query_string": query.encode(),
    }


@pytest.mark.parametrize(
    ("path", "request_scope", "expected"),
    [
        ("/mcp", scope("/mcp", {"mcp-session-id": "s1"}), "s1"),
        ("/mcp", scope("/mcp", {"mcp-session-id": "s1", "mcp-protocol-version": "2025-06-18"}), "s1"),
        ("/mcp", scope("/mcp", {"mcp-session-id": "s1", "mcp-protocol-version": "2026-07-28"}), None),
        ("/mcp", scope("/mcp", {"mcp-session-id": "s1", "mcp-protocol-version": "1999-01-01"}), None),
        ("/mcp", scope("/mcp"), None),
        ("/mcp/", scope("/mcp/", {"mcp-session-id": "s2"}), "s2"),
        ("/messages", scope("/messages", query="session_id=s3"), "s3"),
        ("/messages/", scope("/messages/", query="session_id=s3"), "s3"),
        ("/events", scope("/events", query="session_id=s4"), "s4"),
        ("/message", scope("/message", query="session_id=s5"), "s5"),
        ("/message", scope("/message"), None),
        ("/sse", scope("/sse", query="session_id=s6"), None),
        ("/health", scope("/health", {"mcp-session-id": "s7"}), None),
    ],
)
def test_the_session_a_request_names(path: str, request_scope: Scope, expected: str | None) -> None:
    assert session_id_of(path, request_scope) == expected


def test_a_sessions_keys_share_one_redis_cluster_hash_tag() -> None:
    keys = Keys("dp")
    assert keys.session("abc") == "dp:{s:abc}:session"
    assert keys.events("abc") == "dp:{s:abc}:events"
    principal_key = keys.principal_sessions("alice@example.com")
    assert principal_key.startswith("dp:{p:")
    assert "alice" not in principal_key, "principal names do not appear in key names"
    assert keys.node_alive("n1") == "dp:{n:n1}:alive"
