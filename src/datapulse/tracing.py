"""OpenTelemetry: a span per HTTP request that continues the caller's trace, and optional OTLP export.

The SDK already wraps every MCP message in a span (``mcp.server._otel.OpenTelemetryMiddleware``) and
continues a ``traceparent`` found in the request's ``_meta``; without one it nests under the ambient
context. `request_span` makes that ambient context the caller's: it extracts W3C ``traceparent`` /
``tracestate`` from the HTTP headers (W3C Trace Context; OpenTelemetry propagation API) and opens a
SERVER span for the request, so one trace runs from the client through the request to the tool call.

Nothing is exported unless configured: with ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``DATAPULSE_OTLP_ENDPOINT``) set, `configure_tracing` installs an SDK ``TracerProvider`` with a batching
OTLP/HTTP exporter (package ``opentelemetry-exporter-otlp-proto-http``, extra ``datapulse[otel]``). When
no SDK provider is installed, `request_span` does nothing at all (the hot path pays one check).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import propagate, trace
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.trace import ProxyTracerProvider, SpanKind
from starlette.types import Scope

TRACER_NAME = "datapulse"


_PROVIDER_FROM_ENVIRONMENT = OTEL_PYTHON_TRACER_PROVIDER in os.environ
"""Whether OpenTelemetry may load a provider named by ``OTEL_PYTHON_TRACER_PROVIDER`` (read at import, as a
process's environment is fixed by then)."""


def tracing_active() -> bool:
    """Whether an OpenTelemetry SDK tracer provider is installed (else spans are no-ops and skipped).

    Until a provider is set, ``trace.get_tracer_provider()`` looks ``OTEL_PYTHON_TRACER_PROVIDER`` up in
    ``os.environ`` on every call, and this runs twice per request; so the API's global (set once, by
    ``set_tracer_provider``) is read first. ``tests/unit/test_tracing_check.py`` fails if the API moves it.
    """
    if trace._TRACER_PROVIDER is None and not _PROVIDER_FROM_ENVIRONMENT:
        return False
    provider = trace.get_tracer_provider()
    return not isinstance(provider, ProxyTracerProvider | trace.NoOpTracerProvider)


@contextmanager
def request_span(scope: Scope, path: str) -> Iterator[None]:
    """A SERVER span ``"{METHOD} {path}"`` for one HTTP request, child of the caller's ``traceparent`` header
    if it carries a valid one (W3C Trace Context §3.2), current for the block. A no-op without an SDK provider.
    """
    if not tracing_active():
        yield
        return
    carrier = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
               if key in (b"traceparent", b"tracestate")}  # fmt: skip
    parent = propagate.extract(carrier) if carrier else None
    tracer = trace.get_tracer(TRACER_NAME)
    attributes = {"http.request.method": str(scope["method"]), "url.path": path}
    with tracer.start_as_current_span(f"{scope['method']} {path}", context=parent, kind=SpanKind.SERVER,
                                      attributes=attributes):  # fmt: skip
        yield


def configure_tracing(endpoint: str | None, service_name: str) -> bool:
    """Install an SDK tracer provider exporting to the OTLP/HTTP ``endpoint`` (``http://collector:4318``).

    Returns:
        False when ``endpoint`` is empty (nothing configured, nothing exported).

    Raises:
        RuntimeError: ``endpoint`` is set but the OTLP exporter package is not installed (the message says
            which package to install).
    """
    if not endpoint:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError(
            "OTLP export needs the packages opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http "
            "(pip install 'datapulse[otel]')"
        ) from exc
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")))
    trace.set_tracer_provider(provider)
    return True
