"""Feeding one parsed JSON-RPC message from an HTTP request into a session's SDK kernel."""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

from datapulse.errors import MethodNotFound, Unavailable
from datapulse.runtime import Runtime
from datapulse.sessions.live import Emit, LegacyDispatchContext, LiveSession
from datapulse.transports._jsonrpc import Message, Notification, Request, Response, error_json
from datapulse.transports._negotiation import resolve_method


def dispatch_context(
    session: LiveSession,
    scope: Scope,
    request_id: str | int | None,
    params: dict[str, Any] | None,
    emit: Emit | None,
    *,
    transport_kind: str,
    can_send_request: bool,
) -> LegacyDispatchContext:
    """Build the SDK dispatch context for one inbound message carried by the HTTP request ``scope``.

    The handler sees the HTTP request as ``ctx.request`` (a Starlette `Request`) and its headers on
    the transport context, as with the SDK's own transports.
    """
    return LegacyDispatchContext(
        session, request_id, emit, scope, params, transport_kind=transport_kind, can_send_request=can_send_request
    )


async def dispatch(
    session: LiveSession,
    scope: Scope,
    message: Message,
    emit: Emit,
    *,
    transport_kind: str,
    allow_aliases: bool,
    can_send_request: bool = True,
) -> str | None:
    """Handle one client message on ``session``.

    Requests run through the SDK kernel and their response text is returned (the caller writes it
    where the transport puts responses); notifications are handled and client answers to our
    server-to-client requests are delivered, both returning None.
    """
    if isinstance(message, Response):
        session.resolve(message)
        return None
    if isinstance(message, Notification):
        dctx = dispatch_context(
            session, scope, None, message.params, None, transport_kind=transport_kind, can_send_request=False
        )
        await session.handle_notification(dctx, message.method, message.params)
        return None
    assert isinstance(message, Request)
    try:
        method = resolve_method(message.method, allow_aliases=allow_aliases)
    except MethodNotFound as exc:
        return error_json(message.id, exc.jsonrpc_code, exc.message, exc.data)
    dctx = dispatch_context(
        session,
        scope,
        message.id,
        message.params,
        emit,
        transport_kind=transport_kind,
        can_send_request=can_send_request,
    )
    session.activate()
    return await session.handle_request(dctx, method, message.params)


def refuse_while_draining(runtime: Runtime) -> None:
    """Refuse a request that would be acknowledged before it is handled (``POST /message``, ``POST /messages``)
    once this instance drains: its handler might not have begun when the drain hands the session over or
    closes it, and an acknowledged request must not vanish. The client retries; in cluster mode the session
    then continues on another instance.

    Raises:
        Unavailable: the instance is draining (503, ``Retry-After: 1``).
    """
    if runtime.draining:
        raise Unavailable(
            "Service Unavailable: this instance is draining; retry and the session continues on another instance "
            "(or on this one once it is back)",
            headers={"Retry-After": "1"},
        )
