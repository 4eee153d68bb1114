"""``GET /``: what this server is, for a person (HTML) or a program (JSON): its name and version, its endpoints with
a line each, and where the dashboard is. Public (it names endpoints only; everything behind them needs auth).

The answer is JSON unless the ``Accept`` header prefers ``text/html`` (browsers do), by `prefers_html`.
"""

from __future__ import annotations

from html import escape

from starlette.types import Receive, Scope, Send

from datapulse._version import __version__
from datapulse.runtime import Runtime
from datapulse.transports._http import header, send_bytes, send_json

ENDPOINTS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("/mcp", ("POST", "GET", "DELETE"), "MCP Streamable HTTP: 2026-07-28 stateless requests and 2025 sessions"),
    ("/sse", ("GET",), "MCP 2024-11-05 HTTP+SSE stream (deprecated era; its endpoint event names /messages)"),
    ("/messages", ("POST",), "MCP 2024-11-05 HTTP+SSE messages (?session_id=)"),
    ("/events", ("GET", "DELETE"), "DataPulse API event stream (?session_id=); DELETE ends the session"),
    ("/message", ("POST",), "DataPulse API messages {type, request_id, data} (?session_id=), or one JSON-RPC request"),
    ("/tickets", ("POST",), "Single-use stream tickets for browsers (EventSource cannot send headers)"),
    ("/health", ("GET",), "Liveness, and this instance's figures"),
    ("/ready", ("GET",), "Readiness (503 while starting, draining or away from Redis)"),
    ("/metrics", ("GET",), "Prometheus metrics"),
    ("/openapi.json", ("GET",), "OpenAPI description of the REST endpoints"),
)
"""The public surface: (path, methods, one line)."""
DASHBOARD_ENDPOINT = ("/dashboard/", ("GET",), "The web console: sessions, tools, figures, audit, try a tool, watch")


def prefers_html(accept: str | None) -> bool:
    """Whether an ``Accept`` header value ranks ``text/html`` above ``application/json`` (RFC 9110 §12.5.1 q-values;
    ties and absence go to JSON)."""
    if not accept:
        return False
    ranks: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (item.strip() for item in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranks[media.lower()] = max(quality, ranks.get(media.lower(), 0.0))
    html = ranks.get("text/html", 0.0)
    json_rank = max(ranks.get("application/json", 0.0), ranks.get("*/*", 0.0) * 0.999)
    return html > 0 and html > json_rank


def endpoints(dashboard: bool) -> list[tuple[str, tuple[str, ...], str]]:
    """The endpoints to list, the dashboard's first when it is served."""
    return [DASHBOARD_ENDPOINT, *ENDPOINTS] if dashboard else list(ENDPOINTS)


async def handle_index(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /``: the server's name, version and endpoints (HTML for browsers, JSON otherwise)."""
    server = runtime.server
    dashboard = runtime.settings.dashboard_enabled
    listed = endpoints(dashboard)
    name = server.name
    version = server.version or __version__
    if not prefers_html(header(scope, b"accept")):
        await send_json(
            send,
            200,
            {
                "name": name,
                "version": version,
                "datapulse_version": __version__,
                "dashboard": "/dashboard/" if dashboard else None,
                "endpoints": [
                    {"path": path, "methods": list(methods), "description": line} for path, methods, line in listed
                ],
            },
        )
        return
    rows = "\n".join(
        f"<tr><td><code>{escape(path)}</code></td><td>{escape(' '.join(methods))}</td><td>{escape(line)}</td></tr>"
        for path, methods, line in listed
    )
    link = (
        '<p><a href="dashboard/">Open the dashboard</a></p>'
        if dashboard
        else "<p>The dashboard is off here (DATAPULSE_DASHBOARD=on serves it).</p>"
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(name)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><h1>{escape(name)} <small>{escape(version)}</small></h1>
<p>An MCP server run by DataPulse {escape(__version__)}.</p>
{link}
<table><thead><tr><th>path</th><th>methods</th><th></th></tr></thead><tbody>
{rows}
</tbody></table></body></html>
"""
    await send_bytes(
        send,
        200,
        page.encode(),
        ((b"content-type", b"text/html; charset=utf-8"),),
        ((b"content-security-policy", b"default-src 'none'"), (b"x-content-type-options", b"nosniff")),
    )
