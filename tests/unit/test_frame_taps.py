"""Frame taps: what a session pays when nobody watches, what each watcher is offered, and how frames are
classified and timed."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from datapulse.dashboard.tap import PENDING_MAX_REQUESTS, Direction, Frame, FrameTaps, Watcher, classify

pytestmark = pytest.mark.anyio


class Clock:
    """A settable clock (Unix seconds)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def request(request_id: int | str, method: str = "tools/call") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {}}


def result(request_id: int | str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": {}}


async def received(watcher: Watcher, n: int) -> list[Frame]:
    with anyio.fail_after(5):
        return [await watcher.receive() for _ in range(n)]


@pytest.mark.parametrize(
    ("direction", "message", "expected"),
    [
        ("in", request(1), ("request", "tools/call", 1)),
        ("out", request("dp-1", "sampling/createMessage"), ("request", "sampling/createMessage", "dp-1")),
        (
            "in",
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            ("notification", "notifications/initialized", None),
        ),
        (
            "out",
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
            ("notification", "notifications/progress", None),
        ),
        ("out", result(7), ("response", None, 7)),
        ("out", {"jsonrpc": "2.0", "id": "x", "error": {"code": -32601, "message": "?"}}, ("error", None, "x")),
        ("in", {"jsonrpc": "2.0", "id": "dp-1", "result": {"role": "assistant"}}, ("response", None, "dp-1")),
        ("out", {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "?"}}, ("error", None, None)),
        ("in", {"jsonrpc": "2.0", "id": True, "method": "ping"}, ("request", "ping", None)),
        ("in", {"type": "call_tool", "request_id": "r1", "data": {"name": "add"}}, ("request", "call_tool", "r1")),
        ("in", {"type": "list_tools", "request_id": 3, "data": {}}, ("request", "list_tools", 3)),
        ("out", {"type": "tool_result", "request_id": "r1", "data": {"result": 3}}, ("response", None, "r1")),
        ("out", {"type": "list_tools", "request_id": 3, "data": {"tools": []}}, ("response", None, 3)),
        ("out", {"type": "error", "request_id": "r1", "error": "tool failed"}, ("error", None, "r1")),
        ("out", [1, 2], ("notification", None, None)),
        ("in", {"what": "ever"}, ("notification", None, None)),
    ],
)
def test_messages_are_classified_as_json_rpc_or_datapulse_api_frames(
    direction: Direction, message: Any, expected: tuple[str, str | None, str | int | None]
) -> None:
    assert classify(direction, message) == expected


async def test_nobody_watching_costs_a_membership_test_and_record_is_a_no_op() -> None:
    taps = FrameTaps()
    assert taps.watching("s1") is False
    taps.record("s1", "in", b"not even json")  # never decoded: nobody watches
    assert taps.watched_sessions() == 0


async def test_a_watched_message_becomes_one_frame_of_the_documented_shape() -> None:
    clock = Clock(1000.0)
    taps = FrameTaps(clock)
    async with taps.watch("s1", 10) as watcher:
        assert taps.watching("s1")
        taps.record("s1", "in", json.dumps(request(1)).encode())
        (frame,) = await received(watcher, 1)
    assert frame == {
        "t": 1000.0,
        "dir": "in",
        "kind": "request",
        "method": "tools/call",
        "id": 1,
        "message": request(1),
        "elapsed_ms": None,
    }


async def test_elapsed_ms_is_the_time_since_the_request_with_the_same_id_in_either_direction() -> None:
    clock = Clock(1000.0)
    taps = FrameTaps(clock)
    async with taps.watch("s1", 10) as watcher:
        taps.record("s1", "in", request(1))
        clock.now = 1000.25
        taps.record("s1", "out", request("dp-1", "sampling/createMessage"))
        clock.now = 1000.5
        taps.record("s1", "in", result("dp-1"))  # the client's answer to our request
        clock.now = 1001.0
        taps.record("s1", "out", json.dumps(result(1)))
        taps.record("s1", "out", result(2))  # no request 2 was seen
        frames = await received(watcher, 5)
    assert [frame["elapsed_ms"] for frame in frames] == [None, None, 250.0, 1000.0, None]


async def test_a_datapulse_api_result_is_timed_against_its_inbound_message() -> None:
    clock = Clock(50.0)
    taps = FrameTaps(clock)
    async with taps.watch("api", 10) as watcher:
        taps.record("api", "in", {"type": "call_tool", "request_id": "r1", "data": {"name": "add"}})
        clock.now = 50.002
        taps.record("api", "out", {"type": "tool_result", "request_id": "r1", "data": {"result": 3}})
        inbound, outbound = await received(watcher, 2)
    assert (inbound["kind"], inbound["method"], inbound["id"]) == ("request", "call_tool", "r1")
    assert (outbound["kind"], outbound["id"], outbound["elapsed_ms"]) == ("response", "r1", 2.0)
    assert outbound["message"] == {"type": "tool_result", "request_id": "r1", "data": {"result": 3}}


async def test_the_pending_request_map_is_bounded() -> None:
    clock = Clock(0.0)
    taps = FrameTaps(clock)
    async with taps.watch("s1", PENDING_MAX_REQUESTS + 10) as watcher:
        for n in range(PENDING_MAX_REQUESTS + 1):
            taps.record("s1", "in", request(n))
        taps.record("s1", "out", result(0))  # forgotten: the oldest
        taps.record("s1", "out", result(PENDING_MAX_REQUESTS))
        frames = await received(watcher, PENDING_MAX_REQUESTS + 3)
    assert [frame["elapsed_ms"] for frame in frames[-2:]] == [None, 0.0]


async def test_a_full_queue_drops_frames_and_counts_them_where_the_gap_is() -> None:
    taps = FrameTaps()
    async with taps.watch("s1", 2) as watcher:
        for n in range(5):
            taps.record("s1", "in", request(n))
        assert watcher.dropped == 3
        first, second = await received(watcher, 2)
        assert watcher.dropped_news() is None, "frames 0 and 1 came before the gap"
        taps.record("s1", "in", request(5))
        (after_gap,) = await received(watcher, 1)
        assert watcher.dropped_news() == 3
        assert watcher.dropped_news() is None, "reported once"
    assert [first["id"], second["id"], after_gap["id"]] == [0, 1, 5]


async def test_drops_with_no_frame_after_them_are_reported_at_the_end() -> None:
    taps = FrameTaps()
    async with taps.watch("s1", 1) as watcher:
        taps.record("s1", "in", request(1))
        taps.record("s1", "in", request(2))
        watcher.end()
        frames = [frame async for frame in watcher]
        assert [frame["id"] for frame in frames] == [1]
        assert watcher.dropped_news() is None
        assert watcher.dropped_news(final=True) == 1


async def test_two_watchers_of_one_session_both_get_every_frame_and_drop_independently() -> None:
    taps = FrameTaps()
    async with taps.watch("s1", 10) as roomy, taps.watch("s1", 1) as tight:
        taps.record("s1", "in", request(1))
        taps.record("s1", "out", result(1))
        assert [frame["id"] for frame in await received(roomy, 2)] == [1, 1]
        assert [frame["kind"] for frame in await received(tight, 1)] == ["request"]
        assert (roomy.dropped, tight.dropped) == (0, 1)


async def test_frames_of_other_sessions_are_not_shown() -> None:
    taps = FrameTaps()
    async with taps.watch("mine", 10) as watcher:
        taps.record("theirs", "in", request(1))
        taps.record("mine", "in", request(2))
        (frame,) = await received(watcher, 1)
    assert frame["id"] == 2


async def test_leaving_removes_the_watcher_and_the_last_one_removes_the_session() -> None:
    taps = FrameTaps()
    async with taps.watch("s1", 10):
        async with taps.watch("s1", 10):
            assert taps.watching("s1")
            assert len(taps.watchers("s1")) == 2
        assert taps.watching("s1"), "one watcher is left"
    assert not taps.watching("s1")
    assert taps.watched_sessions() == 0
    assert taps.watchers("s1") == ()


async def test_leaving_on_an_error_still_removes_the_watcher() -> None:
    taps = FrameTaps()
    with pytest.raises(RuntimeError):
        async with taps.watch("s1", 10):
            raise RuntimeError("boom")
    assert not taps.watching("s1")


async def test_record_never_raises_into_the_session_on_a_bad_message() -> None:
    taps = FrameTaps()
    async with taps.watch("s1", 10) as watcher:
        taps.record("s1", "in", b"{not json")
        taps.record("s1", "in", request(1))
        (frame,) = await received(watcher, 1)
    assert frame["id"] == 1


async def test_an_ended_watcher_yields_what_was_queued_then_stops_taking_frames() -> None:
    taps = FrameTaps()
    async with taps.watch("s1", 10) as watcher:
        taps.record("s1", "in", request(1))
        watcher.end()
        taps.record("s1", "in", request(2))
        with anyio.fail_after(5):
            assert [frame["id"] async for frame in watcher] == [1]
        assert watcher.dropped == 0


def test_a_watcher_needs_room_for_one_frame() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FrameTaps().watch("s1", 0)
