"""The history checker itself, on hand-made histories: it passes a good one and catches each kind of violation
(a checker that cannot fail proves nothing)."""

from __future__ import annotations

import pytest

from tests.history.checker import Fault, Record, check

T = {"a": "api", "b": "api"}


def expect(t: float, item: str, order: int, client: str = "a") -> Record:
    return Record(t, client, "expect", item, order)


def result(
    t: float, item: str, order: int, seq: int | None, *, client: str = "a", conn: int = 1, tag: str = "a"
) -> Record:
    return Record(t, client, "result", item, order, conn, seq, tag)


GOOD = [
    expect(0.1, "r1", 1),
    expect(0.2, "r2", 1 + 1),
    result(0.3, "r1", 1, 1),
    result(0.4, "r2", 2, 2),
    expect(0.5, "r3", 3),
    result(0.9, "r3", 3, 3, conn=2),  # after a reconnect
]


def test_a_history_where_everything_arrives_once_in_order_is_valid() -> None:
    report = check(GOOD, [], T)
    assert report.valid
    assert (report.expected, report.delivered) == (3, 3)


@pytest.mark.parametrize(
    ("records", "violation", "count"),
    [
        (GOOD[:-1], "lost", 1),
        ([*GOOD, result(1.0, "r3", 3, 3, conn=2)], "duplicated", 1),
        ([GOOD[0], GOOD[1], result(0.3, "r2", 2, 2, conn=2), result(0.4, "r1", 1, 1)], "reordered", 1),
        (
            [expect(0.1, "r1", 1), result(0.2, "r1", 1, 5), expect(0.3, "r2", 2), result(0.4, "r2", 2, 4)],
            "reordered",
            1,
        ),
        ([expect(0.1, "r1", 1), result(0.2, "r1", 1, 1, tag="b")], "leaked", 1),
    ],
    ids=["lost", "duplicated", "out of request order", "event ids going back", "another client's result"],
)
def test_the_checker_catches_each_violation(records: list[Record], violation: str, count: int) -> None:
    report = check(records, [], T)
    assert not report.valid
    assert report.total(violation) == count


def test_results_of_tools_that_finished_out_of_request_order_may_arrive_in_finishing_order() -> None:
    slow_first = [
        expect(0.1, "r1", 1),
        expect(0.2, "r2", 2),
        Record(0.3, "a", "result", "r2", 2, 1, 1, "a", finished_ns=100),
        Record(0.4, "a", "result", "r1", 1, 1, 2, "a", finished_ns=200),  # r1's tool returned after r2's
    ]
    assert check(slow_first, [], T).valid
    overtaken = [*slow_first[:2], slow_first[2], Record(0.4, "a", "result", "r1", 1, 1, 2, "a", finished_ns=50)]
    assert check(overtaken, [], T).total("reordered") == 1


def test_a_result_lost_with_a_killed_instance_right_after_its_request_was_accepted_is_counted_apart() -> None:
    records = [expect(10.0, "r1", 1), expect(10.52, "r2", 2), expect(20.0, "r3", 3)]
    report = check(records, [Fault("kill -9", 10.5, 12.0, kills_in_flight=True)], T)
    assert report.total("lost_in_crash") == 2  # r1: accepted 0.5 s before the kill; r2: its 202 was in transit
    assert report.total("lost") == 1  # r3: accepted long after it


def test_what_an_ended_session_owed_is_lost_with_the_session_and_duplicates_still_count_across_sessions() -> None:
    records = [
        expect(0.1, "r1", 1),
        Record(0.2, "a", "session", detail="stream ended"),
        expect(0.3, "r2", 2),
        result(0.4, "r2", 2, None),
    ]
    report = check(records, [], T)
    assert report.total("lost_with_session") == 1
    assert report.valid


def test_a_result_lost_in_a_crash_stays_lost_in_the_crash_when_its_session_ends_later() -> None:
    records = [expect(10.0, "r1", 1), Record(30.0, "a", "session", detail="404: session not found")]
    report = check(records, [Fault("kill -9", 10.5, 12.0, kills_in_flight=True)], T)
    assert report.total("lost_in_crash") == 1
    assert report.total("lost_with_session") == 0


def test_an_indeterminate_request_may_arrive_or_not_but_not_twice() -> None:
    records = [Record(0.1, "a", "indeterminate", "r1", 1), expect(0.2, "r2", 2), result(0.3, "r2", 2, 1)]
    assert check(records, [], T).valid
    twice = [*records, result(0.4, "r1x", 3, 2), result(0.5, "r1x", 3, 3)]
    assert check(twice, [], T).total("duplicated") == 1


def test_recovery_is_the_time_until_the_last_held_up_client_is_served_again() -> None:
    records = [
        result(1.0, "r1", 1, 1),
        result(4.9, "r2", 2, 2),
        result(6.0, "r3", 3, 3),  # a: 1.1 s without a result, from just before the fault
        result(4.95, "s1", 1, 1, client="b", tag="b"),
        result(7.5, "s2", 2, 2, client="b", tag="b"),  # b: held up until 7.5
    ]
    fault = Fault("redis paused", 5.0, 5.5)
    report = check(records, [fault], T)
    assert report.recovery_s[0][1] == pytest.approx(2.5)
    assert "| redis paused | 5.0 | 0.5 | 2.50 |" in report.table()
    assert check(records[:4], [fault], T).recovery_s[0][1] is None  # b never served again
    unaffected = [result(4.0 + i * 0.1, f"r{i}", i, i) for i in range(1, 30)]
    assert check(unaffected, [fault], T).recovery_s[0][1] == 0.0
