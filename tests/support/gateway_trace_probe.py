"""Run in a child process by tests/gateway/test_proxy.py: install the OpenTelemetry SDK (process-global, hence the
child process), start a 2025 upstream (tests/support/http_upstream.py) and an in-process ``datapulse proxy`` app in
front of it, send one tools/call with a caller's ``traceparent`` header, and print what the upstream saw as its
``traceparent`` header, as one JSON line."""

from __future__ import annotations

import json
import sys

import anyio
import httpx2
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from datapulse.bridge.config import BridgedServer
from datapulse.bridge.proxy import Bridge, probe
from tests.support.http_upstream import spawn_upstream
from tests.support.mcp_http import modern_headers, modern_params
from tests.support.servers import make_settings, serve_in_process


async def run(traceparent: str) -> None:
    async with spawn_upstream("2025") as upstream:
        info, spec = await probe(BridgedServer(name="traced", url=upstream.mcp_url))
        bridge = Bridge(spec, info)
        params = modern_params({"name": "echo", "arguments": {"message": "traced"}})
        headers = {**modern_headers("tools/call", "echo"), "traceparent": traceparent}
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
        async with serve_in_process(make_settings(), server=bridge.server) as server, server.client() as client:
            response = await client.post("/mcp", content=json.dumps(body), headers=headers)
            assert response.status_code == 200, response.text
            async with httpx2.AsyncClient(timeout=10) as http:
                seen = (await http.get(upstream.seen_url)).json()
    print(json.dumps({"upstream_traceparent": seen["traceparent"]}))


def main() -> None:
    trace.set_tracer_provider(TracerProvider())
    anyio.run(run, sys.argv[1])


if __name__ == "__main__":
    main()
