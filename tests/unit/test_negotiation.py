"""Accept, Content-Type, era routing, ids and method aliases: pure functions, tested with tables."""

from __future__ import annotations

import pytest

from datapulse.errors import MethodNotFound
from datapulse.transports._negotiation import (
    accepts,
    classify_era,
    is_json_content_type,
    is_valid_datapulse_session_id,
    is_valid_session_id,
    parse_last_event_id,
    resolve_method,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, (True, True)),
        ("", (True, True)),
        ("application/json, text/event-stream", (True, True)),
        ("application/json", (True, False)),
        ("text/event-stream", (False, True)),
        ("*/*", (True, True)),
        ("application/*;q=0.9, text/*", (True, True)),
        ("APPLICATION/JSON; charset=utf-8", (True, False)),
        ("text/html", (False, False)),
        ("application/json;q=0, text/event-stream", (False, True)),
        ("application/xml, text/plain", (False, False)),
    ],
)
def test_accepts_reads_media_ranges_and_wildcards(header: str | None, expected: tuple[bool, bool]) -> None:
    assert accepts(header) == expected


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        ("application/vnd.api+json", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("", False),
        (None, False),
    ],
)
def test_json_content_type_detection(content_type: str | None, expected: bool) -> None:
    assert is_json_content_type(content_type) is expected


@pytest.mark.parametrize(
    ("header", "era"),
    [
        (None, "legacy"),
        ("2024-11-05", "legacy"),
        ("2025-03-26", "legacy"),
        ("2025-06-18", "legacy"),
        ("2025-11-25", "legacy"),
        ("2026-07-28", "modern"),
        ("2099-01-01", "unsupported"),
        ("banana", "unsupported"),
        ("", "unsupported"),
    ],
)
def test_protocol_version_header_picks_the_era(header: str | None, era: str) -> None:
    assert classify_era(header) == era


@pytest.mark.parametrize(
    ("value", "valid"),
    [("abc", True), ("A" * 128, True), ("A" * 129, False), ("", False), ("has space", False), ("tab\t", False)],
)
def test_session_id_shape(value: str, valid: bool) -> None:
    assert is_valid_session_id(value) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [("abc123", True), ("a.b_c~d-e", True), ("a/b", False), ("a%20b", False), ("x" * 129, False), ("", False)],
)
def test_datapulse_session_id_shape(value: str, valid: bool) -> None:
    assert is_valid_datapulse_session_id(value) is valid


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("e.1", ("e", 1)),
        ("r12.345", ("r12", 345)),
        ("g.0", ("g", 0)),
        (None, None),
        ("", None),
        ("e", None),
        ("e.", None),
        (".5", None),
        ("e.x", None),
        ("e.-1", None),
    ],
)
def test_last_event_id_parsing(value: str | None, parsed: tuple[str, int] | None) -> None:
    assert parse_last_event_id(value) == parsed


def test_seed_aliases_resolve_only_where_allowed() -> None:
    assert resolve_method("listTools", allow_aliases=True) == "tools/list"
    assert resolve_method("callTool", allow_aliases=True) == "tools/call"
    assert resolve_method("tools/list", allow_aliases=False) == "tools/list"
    assert resolve_method("custom/thing", allow_aliases=False) == "custom/thing"
    with pytest.raises(MethodNotFound, match="'tools/call'") as caught:
        resolve_method("callTool", allow_aliases=False)
    assert caught.value.jsonrpc_code == -32601
