"""Endpoints of the security layer: RFC 9728 metadata (public) and stream tickets (authenticated)."""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from datapulse.auth.middleware import BASE_URL_SCOPE_KEY
from datapulse.auth.principal import principal_of
from datapulse.auth.resource import WELL_KNOWN
from datapulse.errors import MethodNotFound
from datapulse.runtime import Runtime
from datapulse.transports._http import send_json

METADATA_HEADERS = ((b"access-control-allow-origin", b"*"), (b"cache-control", b"public, max-age=300"))


async def handle_protected_resource(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /.well-known/oauth-protected-resource[/mcp|/sse]``: the RFC 9728 §3.2 metadata response.

    Readable by any origin (``Access-Control-Allow-Origin: *``): it only describes public facts.
    """
    resource = runtime.security.resource
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    resource_path = resource.served_paths().get(path, "")
    base_url = scope.get(BASE_URL_SCOPE_KEY) or runtime.settings.base_url
    assert path.startswith(WELL_KNOWN)
    await send_json(send, 200, resource.document(str(base_url), resource_path), METADATA_HEADERS)


async def handle_tickets(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /tickets``: a single-use ticket for one stream GET, bound to the caller (see `datapulse.auth.tickets`).

    Response: 201 ``{"ticket": str, "expires_in": seconds, "usage": str}``.

    Raises:
        MethodNotFound: auth is off (404: there is nothing a ticket could stand in for).
        StoreUnavailable: cluster mode and Redis did not answer (503).
    """
    tickets = runtime.security.tickets
    if tickets is None:
        raise MethodNotFound("Not Found: stream tickets are only issued when authentication is on")
    ticket = await tickets.issue(principal_of(scope))
    ttl_s = runtime.settings.stream_ticket_ttl_s
    await send_json(
        send,
        201,
        {
            "ticket": ticket,
            "expires_in": int(ttl_s),
            "usage": "valid once, for one GET /events?session_id=...&ticket=... or GET /sse?ticket=...",
        },
        ((b"cache-control", b"no-store"),),
    )
