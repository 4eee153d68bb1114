"""SSE framing: encoding tables, and a decoder that handles any chunking."""

from __future__ import annotations

import pytest

from datapulse.transports._sse_codec import (
    SseDecoder,
    SseEvent,
    encode_comment,
    encode_data_event,
    encode_data_frame,
    encode_event,
    encode_message_event,
    encode_retry,
)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": "x"}, b"data: x\n\n"),
        ({"data": "x", "event": "endpoint"}, b"event: endpoint\ndata: x\n\n"),
        ({"data": "a\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\r\nb\rc"}, b"data: a\ndata: b\ndata: c\n\n"),
        ({"data": "", "event_id": "g.1", "retry_ms": 3000}, b"id: g.1\nretry: 3000\ndata: \n\n"),
        ({"data": "{}", "event": "message", "event_id": "r1.2"}, b"id: r1.2\nevent: message\ndata: {}\n\n"),
    ],
)
def test_encode_event_writes_fields_in_order_and_splits_lines(kwargs: dict[str, object], expected: bytes) -> None:
    assert encode_event(**kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_encode_event_refuses_line_breaks_in_id_and_event(bad: str) -> None:
    with pytest.raises(ValueError, match="must not contain"):
        encode_event("x", event_id=bad)
    with pytest.raises(ValueError, match="must not contain"):
        encode_event("x", event=bad)


def test_fast_path_encoders_match_the_general_encoder() -> None:
    assert encode_message_event('{"a":1}') == encode_event('{"a":1}', event="message")
    assert encode_message_event('{"a":1}', event_id="g.3") == encode_event('{"a":1}', event="message", event_id="g.3")
    assert encode_data_event('{"a":1}', event_id="e.1") == encode_event('{"a":1}', event_id="e.1")
    assert encode_data_frame('{"a":"é"}'.encode(), "e.2") == encode_event('{"a":"é"}', event_id="e.2")
    assert encode_comment() == b": ping\n\n"
    assert encode_retry(1500) == b"retry: 1500\n\n"


STREAM = (
    b": ping\n\n"
    b"event: endpoint\ndata: /messages?session_id=abc\n\n"
    b'id: e.1\r\ndata: {"type":"list_tools"}\r\n\r\n'
    b"id: e.2\rdata: line1\rdata: line2\r\r"
    b"retry: 3000\n\n"
    b"id: g.9\ndata: \n\n"
)
EXPECTED = [
    SseEvent(data="/messages?session_id=abc", event="endpoint"),
    SseEvent(data='{"type":"list_tools"}', event_id="e.1"),
    SseEvent(data="line1\nline2", event_id="e.2"),
    SseEvent(data="", retry_ms=3000),
    SseEvent(data="", event_id="g.9"),
]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, len(STREAM)])
def test_decoder_yields_the_same_events_for_any_chunking(chunk_size: int) -> None:
    decoder = SseDecoder()
    events: list[SseEvent] = []
    for start in range(0, len(STREAM), chunk_size):
        events.extend(decoder.feed(STREAM[start : start + chunk_size]))
    assert events == EXPECTED
    assert decoder.comments == ["ping"]
    assert decoder.last_event_id == "g.9"


def test_decoder_round_trips_encoded_events() -> None:
    frames = [
        encode_event("multi\nline", event="message", event_id="r1.1"),
        encode_message_event('{"jsonrpc":"2.0"}', event_id="r1.2"),
    ]
    events = SseDecoder().feed(b"".join(frames))
    assert [(e.data, e.event, e.event_id) for e in events] == [
        ("multi\nline", "message", "r1.1"),
        ('{"jsonrpc":"2.0"}', "message", "r1.2"),
    ]
