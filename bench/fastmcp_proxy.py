"""FastMCP's proxy in front of an upstream MCP server, for ``bench.gateway``: the competitor of ``datapulse proxy``.

Run with the Python of the benchmark's own FastMCP venv (``.bench-venv/fastmcp``, made by ``bench.gateway`` on first
use; FastMCP is not a dependency of DataPulse)::

    .bench-venv/fastmcp/bin/python bench/fastmcp_proxy.py UPSTREAM_URL PORT            # create_proxy(URL)
    .bench-venv/fastmcp/bin/python bench/fastmcp_proxy.py UPSTREAM_URL PORT --reuse    # create_proxy(connected Client)

``create_proxy(URL)`` is FastMCP's documented default: a fresh backend client (its own HTTP client, its own
connection) for every request, in the era the front request came in. ``--reuse`` hands ``create_proxy`` a
``Client(URL)`` connected at start, which FastMCP then reuses for every request (one backend session and one
connection pool; FastMCP logs that concurrent requests may mix contexts, which an echo tool on a stateless upstream
cannot show): its fastest proxy configuration. Either is served as ``proxy.http_app(path="/mcp", transport="http",
json_response=True, stateless_http=True)``, FastMCP's Streamable HTTP app in its leanest mode (JSON answers, no
session manager), under uvicorn with the settings ``bench.sdk_server`` gives every server (uvloop, httptools,
keep-alive 30 s, backlog 4096, no proxy headers, no server header, warnings only, no access log).
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
import uvloop
from fastmcp import Client  # type: ignore[import-not-found, unused-ignore]
from fastmcp.server import create_proxy  # type: ignore[import-not-found, unused-ignore]

APP_OPTIONS: dict[str, Any] = {"path": "/mcp", "transport": "http", "json_response": True, "stateless_http": True}


def config(app: Any, port: int) -> uvicorn.Config:
    """uvicorn's settings, as `bench.sdk_server` gives every server (DataPulse's own), so only the app differs."""
    return uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="none",  # the running loop: uvloop, see main
        http="httptools",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
        backlog=4096,
        proxy_headers=False,
        server_header=False,
    )


async def serve(url: str, port: int, reuse: bool) -> None:
    if not reuse:
        app = create_proxy(url, name="bench-fastmcp-proxy").http_app(**APP_OPTIONS)
        await uvicorn.Server(config(app, port)).serve()
        return
    async with Client(url) as backend:  # connected before create_proxy, so FastMCP reuses it for every request
        app = create_proxy(backend, name="bench-fastmcp-proxy").http_app(**APP_OPTIONS)
        await uvicorn.Server(config(app, port)).serve()


def main() -> None:
    url, port = sys.argv[1], int(sys.argv[2])
    uvloop.run(serve(url, port, "--reuse" in sys.argv[3:]))


if __name__ == "__main__":
    main()
