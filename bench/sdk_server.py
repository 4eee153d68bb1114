"""The comparison servers, one per process: the official SDK apps and a bare ceiling app.

Run as ``python -m bench.sdk_server KIND PORT`` from the repository root (the runner does this, pinned with
``taskset``). Every app is served by uvicorn with the same settings: one worker, ``loop="uvloop"``,
``http="httptools"``, ``log_level="warning"``, ``access_log=False``, plus the settings DataPulse's own
``uvicorn_config`` uses (keep-alive 30 s, backlog 4096, no proxy headers, no server header). The SDK apps
use their defaults (``MCPServer.streamable_http_app()`` / ``.sse_app()``; on 127.0.0.1 the SDK enables its
DNS-rebinding check with ``127.0.0.1:*`` allowed, so the bench's ``Host: 127.0.0.1:PORT`` passes).

Kinds:
    sdk-http       ``streamable_http_app()`` with default settings (``json_response=False``)
    sdk-http-json  ``streamable_http_app(json_response=True, stateless_http=True)``: the configuration the issue
                   names as the SDK's fastest
    sdk-http-json-sessions  ``streamable_http_app(json_response=True)``: JSON responses with the session manager
                   kept (2026-07-28 requests carry no session, so it serves them without one either)
    sdk-sse        ``sse_app()`` (2024-11-05 HTTP+SSE)
    ceiling        a bare Starlette JSON-RPC echo route (``POST /rpc``), the client-calibration ceiling
"""

from __future__ import annotations

import json
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.echo_app import app as mcp_app

KINDS = ("sdk-http", "sdk-http-json", "sdk-http-json-sessions", "sdk-sse", "ceiling")


async def _rpc(request: Request) -> Response:
    message = json.loads(await request.body())
    text = message["params"]["arguments"]["message"]
    result = {"content": [{"type": "text", "text": text}], "isError": False}
    body = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}, separators=(",", ":"))
    return Response(body, media_type="application/json")


def build(kind: str) -> Starlette:
    """The ASGI app of ``kind``."""
    if kind == "sdk-http":
        return mcp_app.streamable_http_app()
    if kind == "sdk-http-json":
        return mcp_app.streamable_http_app(json_response=True, stateless_http=True)
    if kind == "sdk-http-json-sessions":
        return mcp_app.streamable_http_app(json_response=True)
    if kind == "sdk-sse":
        return mcp_app.sse_app()
    if kind == "ceiling":
        return Starlette(routes=[Route("/rpc", _rpc, methods=["POST"])])
    raise SystemExit(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    uvicorn.run(
        build(kind),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        # The rest as DataPulse's own uvicorn settings (datapulse.server.uvicorn_config), so only the app differs.
        timeout_keep_alive=30,
        backlog=4096,
        proxy_headers=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
