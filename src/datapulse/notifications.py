"""Change notifications for every era and every instance.

The SDK publishes list changes and resource updates (``ctx.notify_tools_changed()`` and friends) to
the server's `SubscriptionBus`, which only 2026-07-28 ``subscriptions/listen`` streams hear, in one
process. DataPulse adds two things (SEP-2575; SDK docs/handlers/subscriptions.md "Scaling past one
process" and docs/run/legacy-clients.md):

* in cluster mode, a `RedisSubscriptionBus` in front of the server's bus, so an event published on
  any instance reaches listen streams on every instance;
* a fan-out to this instance's handshake-era sessions (2024-11-05 … 2025-11-25, Streamable HTTP
  and HTTP+SSE): list changes as ``notifications/{tools,prompts,resources}/list_changed`` to every
  session, ``notifications/resources/updated`` to the sessions that sent ``resources/subscribe``
  for that URI. ``resources/subscribe``/``unsubscribe`` are answered here when the server has no
  handler of its own.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio.abc
from mcp.server.subscriptions import ServerEvent
from mcp.shared.subscriptions import ResourceUpdated, event_to_notification
from mcp_types import EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from datapulse import _sdk
from datapulse.sessions.live import CURRENT_SESSION, LiveSession
from datapulse.sessions.registry import SessionKind

log = logging.getLogger("datapulse.notifications")

FANOUT_KINDS = frozenset({SessionKind.STREAMABLE_HTTP, SessionKind.SSE})


class LegacyFanout:
    """A bus listener that forwards events to this instance's handshake-era sessions.

    Args:
        sessions: returns a snapshot of this instance's live sessions.
        tasks: where the (async) deliveries run; listeners themselves must be synchronous.
    """

    def __init__(self, sessions: Any, tasks: anyio.abc.TaskGroup) -> None:
        self._sessions = sessions
        self._tasks = tasks

    def __call__(self, event: ServerEvent) -> None:
        notification = event_to_notification(event, {}).model_dump(by_alias=True, exclude_none=True, mode="json")
        method: str = notification["method"]
        params: dict[str, Any] | None = notification.get("params")
        if params is not None:
            params.pop("_meta", None)
            params = params or None
        for session in self._sessions():
            if session.kind not in FANOUT_KINDS or session.era != "legacy" or not session.is_open:
                continue
            if isinstance(event, ResourceUpdated) and event.uri not in session.resource_subscriptions:
                continue
            self._tasks.start_soon(_deliver, session, method, params)


async def _deliver(session: LiveSession, method: str, params: dict[str, Any] | None) -> None:
    try:
        await session.notify(method, params)
    except Exception:
        log.exception("session %s: could not deliver %s", session.id[:16], method)


async def _subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
    session = CURRENT_SESSION.get()
    if session is not None:
        session.resource_subscriptions.add(params.uri)
    return EmptyResult()


async def _unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
    session = CURRENT_SESSION.get()
    if session is not None:
        session.resource_subscriptions.discard(params.uri)
    return EmptyResult()


def serve_resource_subscriptions(server: _sdk.Server[Any]) -> None:
    """Answer ``resources/subscribe``/``unsubscribe`` by recording the URI on the calling session,
    unless the server handles them itself."""
    if server.get_request_handler("resources/subscribe") is None:
        server.add_request_handler("resources/subscribe", SubscribeRequestParams, _subscribe)
        server.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, _unsubscribe)
