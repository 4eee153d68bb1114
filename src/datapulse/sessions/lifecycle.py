"""Session lifecycle as a transition table.

::

    NEW ──activate──▶ ACTIVE ──close──▶ CLOSING ──finish──▶ CLOSED
     │                  │                  ▲
     ├──close───────────┼──────────────────┘
     └──expire──▶ EXPIRED ◀──expire──┘        EXPIRED ──finish──▶ CLOSED

A session is NEW until its first message is handled or its first stream attaches, ACTIVE while in
use, CLOSING while its streams and in-flight requests are being ended (DELETE, disconnect of a
2024-11-05 stream, shutdown), EXPIRED when idle past the TTL, and CLOSED when gone.
"""

from __future__ import annotations

from enum import StrEnum

from datapulse.errors import IllegalTransition


class SessionState(StrEnum):
    NEW = "new"
    ACTIVE = "active"
    CLOSING = "closing"
    EXPIRED = "expired"
    CLOSED = "closed"


class SessionEvent(StrEnum):
    ACTIVATE = "activate"
    CLOSE = "close"
    EXPIRE = "expire"
    FINISH = "finish"


TRANSITIONS: dict[tuple[SessionState, SessionEvent], SessionState] = {
    (SessionState.NEW, SessionEvent.ACTIVATE): SessionState.ACTIVE,
    (SessionState.ACTIVE, SessionEvent.ACTIVATE): SessionState.ACTIVE,
    (SessionState.NEW, SessionEvent.CLOSE): SessionState.CLOSING,
    (SessionState.ACTIVE, SessionEvent.CLOSE): SessionState.CLOSING,
    (SessionState.NEW, SessionEvent.EXPIRE): SessionState.EXPIRED,
    (SessionState.ACTIVE, SessionEvent.EXPIRE): SessionState.EXPIRED,
    (SessionState.CLOSING, SessionEvent.FINISH): SessionState.CLOSED,
    (SessionState.EXPIRED, SessionEvent.FINISH): SessionState.CLOSED,
}


def transition(state: SessionState, event: SessionEvent) -> SessionState:
    """The state after ``event`` happens in ``state``.

    Raises:
        IllegalTransition: the table has no such transition (for example, activating a CLOSED session).
    """
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"session cannot {event.value} while {state.value}") from None


def is_open(state: SessionState) -> bool:
    """Whether a session in ``state`` accepts new messages."""
    return state in (SessionState.NEW, SessionState.ACTIVE)
