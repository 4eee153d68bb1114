"""`Metrics`: values read back from the rendered exposition, bounded label sets, separate registries, and
prometheus-client multiprocess mode with real child processes."""

from __future__ import annotations

import os
import random
import string
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import values
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message

import datapulse.metrics as metrics_module
from datapulse.metrics import AUTH_REASONS, MULTIPROC_DIR_ENV, OTHER_TOOL, Metrics, ToolOutcome, metrics_endpoint

CHILD_TIMEOUT_S = 60.0

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(metrics: Metrics) -> Series:
    """Every sample of ``metrics.render()``, keyed by sample name and sorted labels."""
    body, _ = metrics.render()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return scrape(metrics).get((name, tuple(sorted(labels.items()))))


def label_values(metrics: Metrics, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for sample, labels in scrape(metrics) if sample == name}


def test_the_session_gauge_moves_per_transport_and_protocol_version_pair() -> None:
    metrics = Metrics()
    metrics.sessions_open.labels("sse", "2024-11-05").inc()
    metrics.sessions_open.labels("sse", "2024-11-05").inc()
    metrics.sessions_open.labels("streamable_http", "2025-11-25").inc()
    metrics.sessions_open.labels("sse", "2024-11-05").dec()
    assert value(metrics, "datapulse_sessions_open", transport="sse", protocol_version="2024-11-05") == 1
    assert value(metrics, "datapulse_sessions_open", transport="streamable_http", protocol_version="2025-11-25") == 1
    assert value(metrics, "datapulse_sessions_open", transport="datapulse_api", protocol_version="-") is None


def test_a_tool_call_counts_ok_and_observes_one_duration() -> None:
    metrics = Metrics()
    metrics.register_tools(["echo"])
    with metrics.time_tool("echo"):
        pass
    assert value(metrics, "datapulse_tool_calls_total", tool="echo", outcome="ok") == 1
    assert value(metrics, "datapulse_tool_call_duration_seconds_count", tool="echo") == 1
    assert value(metrics, "datapulse_tool_call_duration_seconds_bucket", tool="echo", le="+Inf") == 1


def call_and_raise(metrics: Metrics, outcome: ToolOutcome) -> None:
    with metrics.time_tool("echo") as set_outcome:
        set_outcome(outcome)
        raise RuntimeError(outcome)


@pytest.mark.parametrize("outcome", ["refused", "rate_limited", "error"])
def test_the_outcome_set_inside_a_tool_call_is_counted_even_when_an_exception_escapes(outcome: ToolOutcome) -> None:
    metrics = Metrics()
    metrics.register_tools(["echo"])
    with pytest.raises(RuntimeError):
        call_and_raise(metrics, outcome)
    assert value(metrics, "datapulse_tool_calls_total", tool="echo", outcome=outcome) == 1
    assert value(metrics, "datapulse_tool_calls_total", tool="echo", outcome="ok") is None
    assert value(metrics, "datapulse_tool_call_duration_seconds_count", tool="echo") == 1


def test_an_exception_escaping_a_tool_call_counts_error() -> None:
    metrics = Metrics()
    metrics.register_tools(["echo"])
    with pytest.raises(ZeroDivisionError), metrics.time_tool("echo"):
        _ = 1 / 0
    assert value(metrics, "datapulse_tool_calls_total", tool="echo", outcome="error") == 1
    assert value(metrics, "datapulse_tool_calls_total", tool="echo", outcome="ok") is None
    assert value(metrics, "datapulse_tool_call_duration_seconds_count", tool="echo") == 1


def test_an_unknown_tool_outcome_is_refused() -> None:
    metrics = Metrics()
    with metrics.time_tool("echo") as set_outcome, pytest.raises(ValueError, match="unknown tool outcome"):
        set_outcome("timeout")  # type: ignore[arg-type]
    assert value(metrics, "datapulse_tool_calls_total", tool=OTHER_TOOL, outcome="ok") == 1


def test_a_thousand_unregistered_tool_names_share_one_other_series() -> None:
    metrics = Metrics()
    metrics.register_tools(["echo", "add"])
    rng = random.Random(20260101)
    names = {"".join(rng.choices(string.ascii_letters + string.digits + "-_./ ", k=16)) for _ in range(1000)}
    assert len(names) == 1000
    for name in [*names, "echo", "add"]:
        with metrics.time_tool(name):
            pass
    assert label_values(metrics, "datapulse_tool_calls_total", "tool") == {"echo", "add", OTHER_TOOL}
    assert label_values(metrics, "datapulse_tool_call_duration_seconds_count", "tool") == {"echo", "add", OTHER_TOOL}
    assert value(metrics, "datapulse_tool_calls_total", tool=OTHER_TOOL, outcome="ok") == 1000
    assert value(metrics, "datapulse_tool_calls_total", tool="echo", outcome="ok") == 1


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("expired", "expired"),
        ("unknown_token", "unknown_token"),
        ("keys_unavailable", "keys_unavailable"),
        ("Expired", "other"),
        ("some new reason", "other"),
        ("", "other"),
    ],
)
def test_auth_reasons_outside_the_fixed_set_collapse_to_other(reason: str, label: str) -> None:
    metrics = Metrics()
    assert metrics.auth_reason(reason) == label
    metrics.auth_failures_total.labels(metrics.auth_reason(reason)).inc()
    assert label_values(metrics, "datapulse_auth_failures_total", "reason") == AUTH_REASONS
    assert value(metrics, "datapulse_auth_failures_total", reason=label) == 1


@pytest.mark.parametrize(("command", "label"), [("GET", "get"), ("evalsha", "evalsha"), ("FLUSHALL", "other")])
def test_redis_commands_outside_the_fixed_set_collapse_to_other(command: str, label: str) -> None:
    assert Metrics().redis_command_label(command) == label


def test_the_fixed_label_sets_are_exported_at_zero_before_any_event() -> None:
    metrics = Metrics()
    assert label_values(metrics, "datapulse_rate_limited_total", "kind") == {"request", "tool", "stream"}
    assert label_values(metrics, "datapulse_forwarded_requests_total", "outcome") == {"ok", "owner_gone", "unavailable"}
    assert value(metrics, "datapulse_auth_failures_total", reason="missing") == 0


def test_every_metric_is_prefixed_and_names_its_unit() -> None:
    body, content_type = Metrics().render()
    families = {
        family.name: family.type
        for family in text_string_to_metric_families(body.decode())
        if not family.name.endswith("_created")  # prometheus-client's creation timestamps (single-process only)
    }
    assert families == {
        "datapulse_sessions_open": "gauge",
        "datapulse_streams_open": "gauge",
        "datapulse_messages": "counter",
        "datapulse_outbound_queue_depth": "histogram",
        "datapulse_tool_calls": "counter",
        "datapulse_tool_call_duration_seconds": "histogram",
        "datapulse_auth_failures": "counter",
        "datapulse_rate_limited": "counter",
        "datapulse_forwarded_requests": "counter",
        "datapulse_redis_command_duration_seconds": "histogram",
        "datapulse_bridge_children": "gauge",
        "datapulse_bridge_child_starts": "counter",
        "datapulse_bridge_child_exits": "counter",
        "datapulse_upstream_requests": "counter",
        "datapulse_upstream_request_duration_seconds": "histogram",
        "datapulse_upstream_passthrough_requests": "counter",
    }
    assert content_type.startswith("text/plain; version=0.0.4")


def test_the_queue_depth_histogram_has_power_of_two_buckets() -> None:
    metrics = Metrics()
    metrics.outbound_queue_depth.observe(3)
    buckets = {
        dict(labels)["le"]: count
        for (name, labels), count in scrape(metrics).items()
        if name == "datapulse_outbound_queue_depth_bucket"
    }
    expected_bounds = ["0.0", "1.0", "2.0", "4.0", "8.0", "16.0", "32.0", "64.0", "128.0", "256.0", "+Inf"]
    assert list(buckets) == expected_bounds
    assert [buckets[b] for b in expected_bounds] == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]


def test_two_metrics_in_one_process_keep_separate_registries() -> None:
    first, second = Metrics(), Metrics()
    first.messages_total.labels("sse", "in").inc()
    assert value(first, "datapulse_messages_total", transport="sse", direction="in") == 1
    assert value(second, "datapulse_messages_total", transport="sse", direction="in") is None


@pytest.mark.anyio
async def test_the_metrics_endpoint_sends_200_with_the_exposition() -> None:
    metrics = Metrics()
    metrics.streams_open.labels("datapulse_api").inc()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await metrics_endpoint(metrics, send)
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == 200
    assert headers[b"content-type"].decode() == metrics.render()[1]
    assert int(headers[b"content-length"]) == len(body["body"])
    assert b'datapulse_streams_open{transport="datapulse_api"} 1.0' in body["body"]


# --- multiprocess mode --------------------------------------------------------------------------------------


@pytest.fixture
def multiproc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty metrics directory; prometheus-client's process-global mode is restored afterwards."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(directory))
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setattr(metrics_module, "_process_instruments", {})
    yield directory
    values.close_all_multiprocess_files()  # type: ignore[no-untyped-call]


CHILD = """
import os, sys
from datapulse.metrics import Metrics
metrics = Metrics(multiprocess_dir=sys.argv[1]) if len(sys.argv) > 1 else Metrics()
metrics.messages_total.labels("sse", "in").inc()
metrics.sessions_open.labels("sse", "2024-11-05").inc()
print(os.getpid())
"""


def run_children(directory: Path) -> list[int]:
    """Two concurrent children: one names the directory, the other finds it in ``PROMETHEUS_MULTIPROC_DIR``."""
    without_env = {k: v for k, v in os.environ.items() if k != MULTIPROC_DIR_ENV}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(directory)], env=without_env, stdout=subprocess.PIPE, text=True
        ),
        subprocess.Popen(
            [sys.executable, "-c", CHILD],
            env={**without_env, MULTIPROC_DIR_ENV: str(directory)},
            stdout=subprocess.PIPE,
            text=True,
        ),
    ]
    pids = []
    try:
        for child in children:
            out, _ = child.communicate(timeout=CHILD_TIMEOUT_S)
            assert child.returncode == 0
            pids.append(int(out))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=CHILD_TIMEOUT_S)
    return pids


def test_child_processes_sum_counters_and_live_sum_session_gauges(multiproc_dir: Path) -> None:
    pids = run_children(multiproc_dir)
    metrics = Metrics(multiprocess_dir=str(multiproc_dir))
    metrics.messages_total.labels("sse", "in").inc()
    assert value(metrics, "datapulse_messages_total", transport="sse", direction="in") == 3
    assert value(metrics, "datapulse_sessions_open", transport="sse", protocol_version="2024-11-05") == 2

    mark_process_dead(pids[0], str(multiproc_dir))  # type: ignore[no-untyped-call]
    assert value(metrics, "datapulse_messages_total", transport="sse", direction="in") == 3
    assert value(metrics, "datapulse_sessions_open", transport="sse", protocol_version="2024-11-05") == 1


def test_metrics_twice_in_one_multiprocess_process_share_the_instruments(multiproc_dir: Path) -> None:
    first, second = Metrics(multiprocess_dir=str(multiproc_dir)), Metrics()
    assert first.messages_total is second.messages_total
    first.messages_total.labels("sse", "out").inc()
    second.messages_total.labels("sse", "out").inc()
    first.tool_calls_total.labels(OTHER_TOOL, "ok").inc()
    for metrics in (first, second):
        assert value(metrics, "datapulse_messages_total", transport="sse", direction="out") == 2
        assert value(metrics, "datapulse_tool_calls_total", tool=OTHER_TOOL, outcome="ok") == 1


def test_a_second_multiprocess_dir_in_one_process_is_refused(multiproc_dir: Path, tmp_path: Path) -> None:
    Metrics(multiprocess_dir=str(multiproc_dir))
    with pytest.raises(ValueError, match="already writes its metrics"):
        Metrics(multiprocess_dir=str(tmp_path / "elsewhere"))
