"""JSON-RPC envelope parsing: each malformed shape gets the right error code."""

from __future__ import annotations

from typing import Any

import pytest

from datapulse.errors import InvalidRequest, ParseError
from datapulse.transports._jsonrpc import Notification, Request, Response, classify, error_json, loads


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"\xff\xfe", b'{"a":}'])
def test_unparseable_bodies_are_parse_errors(body: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        loads(body)
    assert caught.value.jsonrpc_code == -32700
    assert caught.value.http_status == 400


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ([], "batches"),
        ([{"jsonrpc": "2.0", "id": 1, "method": "ping"}], "batches"),
        ("text", "object"),
        (42, "object"),
        ({"id": 1, "method": "ping"}, '"jsonrpc"'),
        ({"jsonrpc": "1.0", "id": 1, "method": "ping"}, '"jsonrpc"'),
        ({"jsonrpc": "2.0", "id": 1, "method": 5}, '"method"'),
        ({"jsonrpc": "2.0", "id": 1, "method": ""}, '"method"'),
        ({"jsonrpc": "2.0", "id": 1, "method": "x", "params": [1]}, '"params"'),
        ({"jsonrpc": "2.0", "id": True, "method": "x"}, '"id"'),
        ({"jsonrpc": "2.0", "id": 1.5, "method": "x"}, '"id"'),
        ({"jsonrpc": "2.0", "id": None, "method": "x"}, '"id"'),
        ({"jsonrpc": "2.0", "id": 1}, '"method"'),
        ({"jsonrpc": "2.0", "id": 1, "result": 5}, '"result"'),
        ({"jsonrpc": "2.0", "id": 1, "error": "bad"}, '"error"'),
    ],
)
def test_invalid_envelopes_are_invalid_requests_naming_the_problem(obj: Any, fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment) as caught:
        classify(obj)
    assert caught.value.jsonrpc_code == -32600


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, Request(1, "tools/list", None)),
        ({"jsonrpc": "2.0", "id": "a", "method": "x", "params": {"k": 1}}, Request("a", "x", {"k": 1})),
        ({"jsonrpc": "2.0", "method": "notifications/initialized"}, Notification("notifications/initialized", None)),
        ({"jsonrpc": "2.0", "id": "dp-1", "result": {}}, Response("dp-1", {}, None)),
        (
            {"jsonrpc": "2.0", "id": 3, "error": {"code": 1, "message": "m"}},
            Response(3, None, {"code": 1, "message": "m"}),
        ),
    ],
)
def test_valid_messages_are_classified(obj: Any, expected: object) -> None:
    assert classify(obj) == expected


def test_error_json_keeps_a_null_id() -> None:
    assert loads(error_json(None, -32600, "bad").encode()) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": "bad"},
    }
