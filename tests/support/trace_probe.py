"""Run in a child process by tests/http/test_tracing.py: install the OpenTelemetry SDK with an in-memory exporter
(process-global, hence the child process), serve DataPulse in-process, send one tools/call with a caller's
``traceparent`` (in the HTTP header, or in ``_meta``), and print the finished spans as JSON lines."""

from __future__ import annotations

import json
import sys

import anyio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.mcp_http import modern_headers, modern_params
from tests.support.servers import make_settings, serve_in_process


async def probe(traceparent: str, carrier: str) -> None:
    params = modern_params({"name": "echo", "arguments": {"message": "traced"}})
    headers = modern_headers("tools/call", "echo")
    if carrier == "header":
        headers["traceparent"] = traceparent
    else:
        params["_meta"]["traceparent"] = traceparent
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    async with serve_in_process(make_settings()) as server, server.client() as client:
        response = await client.post("/mcp", content=json.dumps(body), headers=headers)
        assert response.status_code == 200, response.text


def main() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    anyio.run(probe, sys.argv[1], sys.argv[2])
    for span in exporter.get_finished_spans():
        context = span.get_span_context()
        assert context is not None
        print(
            json.dumps(
                {
                    "name": span.name,
                    "trace_id": format(context.trace_id, "032x"),
                    "span_id": format(context.span_id, "016x"),
                    "parent_id": format(span.parent.span_id, "016x") if span.parent is not None else None,
                    "kind": span.kind.name,
                }
            )
        )


if __name__ == "__main__":
    main()
