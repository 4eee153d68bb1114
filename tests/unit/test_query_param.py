"""`query_param` reads a query parameter exactly as ``urllib.parse.parse_qsl(..., keep_blank_values=True)`` does."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datapulse.transports._http import query_param


def scope_with(query: bytes) -> dict[str, object]:
    return {"type": "http", "query_string": query}


def reference(query: bytes, name: str) -> str | None:
    return next(
        (value for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True) if key == name), None
    )


@pytest.mark.parametrize(
    ("query", "name", "expected"),
    [
        (b"", "session_id", None),
        (b"session_id=abc-123", "session_id", "abc-123"),
        (b"other=1&session_id=abc&session_id=second", "session_id", "abc"),
        (b"session_id", "session_id", ""),
        (b"session_id=", "session_id", ""),
        (b"&&session_id=x&", "session_id", "x"),
        (b"session_id=a=b", "session_id", "a=b"),
        (b"session_id=a%2Fb", "session_id", "a/b"),
        (b"session_id=a+b", "session_id", "a b"),
        (b"session%5Fid=x", "session_id", "x"),
        (b"ticket=t1", "session_id", None),
    ],
)
def test_a_query_parameter_is_found_and_decoded_as_parse_qsl_does(
    query: bytes, name: str, expected: str | None
) -> None:
    assert query_param(scope_with(query), name) == expected
    assert reference(query, name) == expected


@given(
    query=st.lists(
        st.tuples(st.sampled_from(["session_id", "ticket", "x", "", "session_id="]), st.text("ab%2F+=&é", max_size=6)),
        max_size=5,
    ).map(lambda pairs: "&".join(f"{key}={value}" if value else key for key, value in pairs).encode("utf-8")),
    name=st.sampled_from(["session_id", "ticket", "x"]),
)
def test_any_query_gives_what_parse_qsl_gives(query: bytes, name: str) -> None:
    assert query_param(scope_with(query), name) == reference(query, name)
