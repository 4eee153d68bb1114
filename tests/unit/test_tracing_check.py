"""`tracing_active` reads OpenTelemetry's global provider directly; these fail loudly if the API moves it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from opentelemetry import trace


def test_the_api_still_keeps_its_global_provider_where_tracing_active_reads_it() -> None:
    assert hasattr(trace, "_TRACER_PROVIDER"), "opentelemetry.trace moved _TRACER_PROVIDER: revisit tracing_active"


def test_tracing_is_inactive_without_a_provider_and_active_once_one_is_set() -> None:
    # a fresh interpreter: a provider can be set once per process
    script = textwrap.dedent(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from datapulse.tracing import tracing_active
        before = tracing_active()
        trace.set_tracer_provider(TracerProvider())
        print(before, tracing_active())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_a_provider_named_in_the_environment_counts_as_active() -> None:
    script = "from datapulse.tracing import tracing_active; print(tracing_active())"
    env_provider = "sdk_tracer_provider"
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"OTEL_PYTHON_TRACER_PROVIDER": env_provider, "PATH": ""},
    )
    assert out.stdout.split() == ["True"]
