"""The dashboard's JSON API (``/dashboard/api/...``; shapes in ``docs/dashboard.md``).

Every view answers for the whole cluster: the instance the browser reached answers for itself and asks the
others (`datapulse.dashboard.gather`), each filtering by the caller's principal (`datapulse.dashboard.access`).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import Receive, Scope, Send

from datapulse import _sdk
from datapulse._version import __version__
from datapulse.auth.principal import principal_of
from datapulse.auth.tickets import is_dashboard_ticket
from datapulse.dashboard import figures
from datapulse.dashboard.access import is_admin, sees
from datapulse.dashboard.gather import asks_local_only, gather
from datapulse.dashboard.index import ENDPOINTS
from datapulse.errors import BadRequest
from datapulse.runtime import Runtime
from datapulse.sessions.live import LiveSession
from datapulse.transports._http import header, query_param, send_empty, send_json

MAX_SESSIONS_LISTED = 1000
"""Sessions one instance lists at most per answer (the newest first)."""
DEFAULT_AUDIT_LIMIT = 100
MAX_AUDIT_LIMIT = 500


def _bearer(scope: Scope) -> str | None:
    value = header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


async def handle_sign_in(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /dashboard/api/sign-in`` (``Authorization: Bearer <token>``, checked by the auth middleware): a
    dashboard ticket for the caller's principal, valid ``dashboard_ticket_ttl_s``.

    Raises:
        BadRequest: the caller signed in with a dashboard ticket (400: a ticket is not renewed by itself).
        StoreUnavailable: Redis did not answer (cluster mode, 503).
    """
    principal = principal_of(scope)
    admin = is_admin(principal, runtime.settings.dashboard_admins)
    tickets = runtime.security.tickets
    if runtime.security.authenticator is None or tickets is None:
        payload: dict[str, Any] = {"auth": False, "ticket": None, "expires_in_s": None}
    else:
        bearer = _bearer(scope)
        if bearer is not None and is_dashboard_ticket(bearer):
            raise BadRequest("Bad Request: sign in with a token; a dashboard ticket does not renew itself")
        ttl_s = runtime.settings.dashboard_ticket_ttl_s
        payload = {"auth": True, "ticket": await tickets.issue_dashboard(principal, ttl_s), "expires_in_s": ttl_s}
    payload.update(principal=principal.name, admin=admin)
    await send_json(send, 200, payload, ((b"cache-control", b"no-store"),))


async def handle_sign_out(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /dashboard/api/sign-out``: revoke the dashboard ticket the request carries (204; a token is left as
    it is: only its issuer can revoke it).

    Raises:
        StoreUnavailable: Redis did not answer (cluster mode, 503).
    """
    bearer = _bearer(scope)
    tickets = runtime.security.tickets
    if bearer is not None and tickets is not None and is_dashboard_ticket(bearer):
        await tickets.revoke_dashboard(bearer)
    await send_empty(send, 204)


async def handle_overview(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /dashboard/api/overview``: the server, this instance, the cluster's live instances and the caller."""
    principal = principal_of(scope)
    cluster = runtime.cluster
    nodes = await cluster.live_nodes() if cluster is not None else []
    server = runtime.server
    await send_json(
        send,
        200,
        {
            "server": {"name": server.name, "version": server.version or __version__},
            "datapulse_version": __version__,
            "node_id": cluster.node_id if cluster is not None else None,
            "cluster": cluster is not None,
            "nodes": nodes,
            "principal": principal.name,
            "admin": is_admin(principal, runtime.settings.dashboard_admins),
            "endpoints": [
                {"path": path, "methods": list(methods), "description": description}
                for path, methods, description in ENDPOINTS
            ],
        },
    )


def session_row(runtime: Runtime, session: LiveSession, now: float) -> dict[str, Any]:
    """One session as the sessions view shows it (``created_at`` Unix seconds; ``idle_s`` from the registry's
    clock, ``now``)."""
    streams = session.event_streams()
    open_streams = sum(1 for stream in streams if stream.connection is not None and not stream.connection.closed)
    if not streams and session.has_open_stream:
        open_streams = 1  # a 2024-11-05 session: one stream, not resumable
    registry = runtime.sessions.registry
    created_at = session.opened_at
    last_seen = registry.last_seen(session.id)
    cluster = runtime.cluster
    return {
        "session_id": session.id,
        "principal": session.principal,
        "transport": session.kind.value,
        "protocol_version": session.connection.protocol_version,
        "node_id": cluster.node_id if cluster is not None else None,
        "created_at": created_at,
        "age_s": round(max(0.0, time.time() - created_at), 3),
        "idle_s": round(max(0.0, now - last_seen), 3) if last_seen is not None else None,
        "streams": open_streams,
        "queue_depth": sum(stream.undelivered for stream in streams),
    }


async def handle_sessions(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /dashboard/api/sessions``: the sessions the caller may see, on every instance, newest first."""
    principal = principal_of(scope)
    admins = runtime.settings.dashboard_admins
    now = runtime.sessions.clock()
    rows = [
        session_row(runtime, session, now)
        for session in runtime.sessions.live_sessions()
        if session.is_open and sees(principal, session.principal, admins)
    ]
    rows.sort(key=lambda row: -row["created_at"])
    rows = rows[:MAX_SESSIONS_LISTED]
    unreachable: list[str] = []
    if not asks_local_only(scope):
        answers, unreachable = await gather(runtime, scope)
        for answer in answers:
            rows.extend(answer.get("sessions", []))
        rows.sort(key=lambda row: -float(row.get("created_at", 0)))
    await send_json(send, 200, {"sessions": rows, "nodes_unreachable": unreachable})


async def handle_catalog(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /dashboard/api/catalog``: the served tools, resources, resource templates and prompts (every instance
    serves the same app, so this one answers alone). Empty lists for a low-level ``Server`` app, whose lists only
    its own handlers can produce."""
    target = runtime.app_target
    catalog: dict[str, list[dict[str, Any]]] = {"tools": [], "resources": [], "resource_templates": [], "prompts": []}
    if isinstance(target, _sdk.MCPServer):
        catalog["tools"] = [
            {
                "name": tool.name,
                "title": tool.title,
                "description": tool.description,
                "input_schema": tool.input_schema,
                "output_schema": tool.output_schema,
            }
            for tool in await target.list_tools()
        ]
        catalog["resources"] = [
            {
                "uri": str(resource.uri),
                "name": resource.name,
                "description": resource.description,
                "mime_type": resource.mime_type,
            }
            for resource in await target.list_resources()
        ]
        catalog["resource_templates"] = [
            {
                "uri_template": template.uri_template,
                "name": template.name,
                "description": template.description,
                "mime_type": template.mime_type,
            }
            for template in await target.list_resource_templates()
        ]
        catalog["prompts"] = [
            {
                "name": prompt.name,
                "description": prompt.description,
                "arguments": [
                    {"name": argument.name, "description": argument.description, "required": bool(argument.required)}
                    for argument in prompt.arguments or []
                ],
            }
            for prompt in await target.list_prompts()
        ]
    await send_json(send, 200, catalog)


async def handle_stats(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /dashboard/api/stats``: per-tool calls, errors and latency percentiles, summed over the instances
    (with ``?local=1``: this instance's mergeable tallies only)."""
    tallies = figures.tool_tallies(figures.registry_samples(runtime.metrics.collect()))
    if asks_local_only(scope):
        await send_json(send, 200, {"tallies": tallies})
        return
    answers, unreachable = await gather(runtime, scope)
    merged = figures.merge_tallies([tallies, *(answer.get("tallies", {}) for answer in answers)])
    await send_json(send, 200, {"tools": figures.tool_figures(merged), "nodes_unreachable": unreachable})


async def handle_audit(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /dashboard/api/audit?limit=N``: the latest audit records the caller may see (``limit`` 1-500,
    default 100), newest first, from every instance; ``"enabled": false`` when no audit sink is configured.

    Raises:
        BadRequest: ``limit`` is not an integer in 1-500 (400).
    """
    raw = query_param(scope, "limit")
    limit = DEFAULT_AUDIT_LIMIT
    if raw is not None:
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_AUDIT_LIMIT:
            raise BadRequest(f"Bad Request: limit must be an integer from 1 to {MAX_AUDIT_LIMIT}")
        limit = int(raw)
    principal = principal_of(scope)
    admins = runtime.settings.dashboard_admins
    admin = is_admin(principal, admins)
    records = [
        record.to_dict() for record in reversed(runtime.auditor.recent) if admin or record.principal == principal.key
    ][:limit]
    unreachable: list[str] = []
    if not asks_local_only(scope):
        answers, unreachable = await gather(runtime, scope, f"limit={limit}".encode())
        for answer in answers:
            records.extend(answer.get("records", []))
        records.sort(key=lambda record: str(record.get("time", "")), reverse=True)
        records = records[:limit]
    await send_json(
        send,
        200,
        {"enabled": bool(runtime.settings.audit_sinks), "records": records, "nodes_unreachable": unreachable},
    )
