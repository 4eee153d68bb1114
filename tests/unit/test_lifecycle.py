"""The session lifecycle transition table."""

from __future__ import annotations

import itertools

import pytest

from datapulse.errors import IllegalTransition
from datapulse.sessions.lifecycle import TRANSITIONS, SessionEvent, SessionState, is_open, transition

S, E = SessionState, SessionEvent


@pytest.mark.parametrize(
    ("state", "event", "after"),
    [
        (S.NEW, E.ACTIVATE, S.ACTIVE),
        (S.ACTIVE, E.ACTIVATE, S.ACTIVE),
        (S.NEW, E.CLOSE, S.CLOSING),
        (S.ACTIVE, E.CLOSE, S.CLOSING),
        (S.ACTIVE, E.EXPIRE, S.EXPIRED),
        (S.NEW, E.EXPIRE, S.EXPIRED),
        (S.CLOSING, E.FINISH, S.CLOSED),
        (S.EXPIRED, E.FINISH, S.CLOSED),
    ],
)
def test_allowed_transitions(state: SessionState, event: SessionEvent, after: SessionState) -> None:
    assert transition(state, event) is after


ILLEGAL = [pair for pair in itertools.product(SessionState, SessionEvent) if pair not in TRANSITIONS]


@pytest.mark.parametrize(("state", "event"), ILLEGAL)
def test_every_other_transition_is_refused_by_name(state: SessionState, event: SessionEvent) -> None:
    with pytest.raises(IllegalTransition, match=f"cannot {event.value} while {state.value}"):
        transition(state, event)


def test_only_new_and_active_sessions_are_open() -> None:
    assert [s for s in SessionState if is_open(s)] == [S.NEW, S.ACTIVE]
