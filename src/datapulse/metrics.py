"""Prometheus metrics: every DataPulse instrument on one `CollectorRegistry`, and the ``/metrics`` endpoint.

Names follow the Prometheus naming conventions (https://prometheus.io/docs/practices/naming/): the
``datapulse_`` prefix, base units in the name (``_seconds``), ``_total`` on counters. Every label has a
bounded set of values: no session ids, principals or free-form strings; tool names are kept only when
registered with `Metrics.register_tools` (others become ``_other``), auth reasons and Redis commands
collapse to ``other`` outside their fixed sets. Series for the fixed label sets are created at zero, so a
rate over them exists before the first event.

Instruments (label values in brackets)::

    datapulse_sessions_open                  gauge      transport, protocol_version ("2025-11-25", "2024-11-05", "-")
    datapulse_streams_open                   gauge      transport
    datapulse_messages_total                 counter    transport, direction [in|out]
    datapulse_outbound_queue_depth           histogram  (none); buckets 0, 1, 2, 4, ... 256, +Inf
    datapulse_tool_calls_total               counter    tool, outcome [ok|error|refused|rate_limited]
    datapulse_tool_call_duration_seconds     histogram  tool
    datapulse_auth_failures_total            counter    reason (`AUTH_REASONS`)
    datapulse_rate_limited_total             counter    kind [request|tool|stream]
    datapulse_forwarded_requests_total       counter    outcome [ok|owner_gone|unavailable] (cluster mode)
    datapulse_redis_command_duration_seconds histogram  command (`REDIS_COMMANDS`, else "other"; cluster mode)
    datapulse_bridge_children                gauge      server (datapulse bridge: the bridged server's name)
    datapulse_bridge_child_starts_total      counter    server, outcome [started|failed]
    datapulse_bridge_child_exits_total       counter    server (exits and crashes DataPulse did not cause)
    datapulse_upstream_requests_total        counter    server, method, outcome (`UpstreamOutcome`; bridge, proxy)
    datapulse_upstream_request_duration_seconds histogram server, method
    datapulse_upstream_passthrough_requests_total counter server, method (proxy: forwarded on the pass-through)

``transport`` is one of ``streamable_http``, ``sse``, ``datapulse_api``, and for messages also ``stateless``
(2026-07-28 requests served without a session). Messages ``in`` are JSON-RPC requests received, ``out`` the
responses (results and errors) sent for them; notifications are not counted. The outbound queue depth is
observed for every frame written to an SSE stream: the frames of that stream already waiting to be written.
Callers pass the negotiated protocol version (a member of the server's supported set) or ``"-"`` when there
is none.

Several processes (``datapulse serve --workers N``, or ``uvicorn --workers N`` with the variable set):
prometheus-client's multiprocess mode (https://prometheus.github.io/client_python/multiprocess/). Each process
writes its values to mmap'd files ``<dir>/<type>_<pid>.db``; `Metrics.render` merges every file of the
directory with `MultiProcessCollector`, so any worker answers ``/metrics`` for all of them. Counters and
histograms are summed over every process that ever wrote (including dead ones, so they never go backwards);
the open-session and open-stream gauges use ``livesum``: the sum over processes not yet marked dead with
``prometheus_client.multiprocess.mark_process_dead(pid, dir)``. The directory must be emptied before the
workers start (never while they run). In a cluster each instance has its own registry (or directory) and is
scraped on its own; Prometheus sums across instances.

Multiprocess mode is process-global in prometheus-client: the value class (in-memory or file-backed) is a
module global chosen from ``PROMETHEUS_MULTIPROC_DIR`` when prometheus_client is imported, and files are
keyed by pid, so two instrument objects for one series in one process would overwrite each other's value.
Hence, in multiprocess mode, the instruments are created once per process (registered on no registry)
and shared by every `Metrics` of that process, while each `Metrics` still renders through its own
registry; one process writes one directory. A `Metrics(multiprocess_dir=...)` in a process that imported
prometheus_client without the variable sets ``PROMETHEUS_MULTIPROC_DIR`` and switches the value class,
so every prometheus-client metric created afterwards in that process is file-backed too (metrics created
before keep in-memory values and are not exported).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import anyio.to_thread
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import Send

__all__ = [
    "AUTH_REASONS",
    "MULTIPROC_DIR_ENV",
    "OTHER_TOOL",
    "REDIS_COMMANDS",
    "Direction",
    "ForwardOutcome",
    "Metrics",
    "RateLimitKind",
    "ToolOutcome",
    "Transport",
    "metrics_endpoint",
]

MULTIPROC_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

Transport = Literal["streamable_http", "sse", "datapulse_api", "stateless"]
Direction = Literal["in", "out"]
ToolOutcome = Literal["ok", "error", "refused", "rate_limited"]
RateLimitKind = Literal["request", "tool", "stream"]
ForwardOutcome = Literal["ok", "owner_gone", "unavailable"]

OTHER_TOOL: Final = "_other"
"""The ``tool`` label of every tool name not registered with `Metrics.register_tools`."""

AUTH_REASONS: Final = frozenset(
    {
        "missing",
        "malformed",
        "unknown_token",
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "unknown_key",
        "bad_signature",
        "algorithm_not_allowed",
        "missing_claim",
        "insufficient_scope",
        "ticket",
        "keys_unavailable",
        "other",
    }
)
"""The ``reason`` labels of ``datapulse_auth_failures_total``: the JWT reject reasons, and ``other``."""

REDIS_COMMANDS: Final = frozenset(
    {
        "get",
        "set",
        "getdel",
        "delete",
        "exists",
        "pexpire",
        "hgetall",
        "zadd",
        "zrem",
        "zrangebyscore",
        "zremrangebyscore",
        "xadd",
        "xrange",
        "publish",
        "evalsha",
        "pipeline",
        "ping",
        "other",
    }
)
"""The ``command`` labels of ``datapulse_redis_command_duration_seconds`` (lower case; others are ``other``)."""

QUEUE_DEPTH_BUCKETS: Final = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, float("inf"))
UpstreamOutcome = Literal["ok", "error", "unavailable", "timeout", "denied"]
"""How a forwarded request ended: answered, the server's own error, no server to ask (not started, exited,
restarting, busy), no answer in time, or the upstream refused DataPulse's credentials."""
TOOL_DURATION_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
REDIS_DURATION_BUCKETS_S: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_TOOL_OUTCOMES: Final = frozenset(get_args(ToolOutcome))


@dataclass(frozen=True, slots=True)
class _Instruments:
    """One set of instruments, registered on ``registry`` (None: on no registry, multiprocess mode)."""

    sessions_open: Gauge
    streams_open: Gauge
    messages_total: Counter
    outbound_queue_depth: Histogram
    tool_calls_total: Counter
    tool_call_duration_seconds: Histogram
    auth_failures_total: Counter
    rate_limited_total: Counter
    forwarded_requests_total: Counter
    redis_command_duration_seconds: Histogram
    bridge_children: Gauge
    bridge_child_starts_total: Counter
    bridge_child_exits_total: Counter
    upstream_requests_total: Counter
    upstream_request_duration_seconds: Histogram
    upstream_passthrough_requests_total: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None) -> _Instruments:
        # prometheus-client appends `_total` to counter names in the exposition; the object name omits it.
        instruments = cls(
            sessions_open=Gauge(
                "datapulse_sessions_open",
                "Open MCP sessions, by transport and negotiated protocol version.",
                ["transport", "protocol_version"],
                registry=registry,
                multiprocess_mode="livesum",
            ),
            streams_open=Gauge(
                "datapulse_streams_open",
                "Open SSE streams, by transport.",
                ["transport"],
                registry=registry,
                multiprocess_mode="livesum",
            ),
            messages_total=Counter(
                "datapulse_messages",
                "JSON-RPC requests received (in) and responses sent (out), by transport.",
                ["transport", "direction"],
                registry=registry,
            ),
            outbound_queue_depth=Histogram(
                "datapulse_outbound_queue_depth",
                "Frames already waiting to be written to an SSE stream when one more is written.",
                registry=registry,
                buckets=QUEUE_DEPTH_BUCKETS,
            ),
            tool_calls_total=Counter(
                "datapulse_tool_calls",
                f"Tool calls by tool (unregistered names: {OTHER_TOOL}) and outcome.",
                ["tool", "outcome"],
                registry=registry,
            ),
            tool_call_duration_seconds=Histogram(
                "datapulse_tool_call_duration_seconds",
                "Wall-clock duration of tool calls, in seconds, by tool.",
                ["tool"],
                registry=registry,
                buckets=TOOL_DURATION_BUCKETS_S,
            ),
            auth_failures_total=Counter(
                "datapulse_auth_failures",
                "Refused authentications, by reason.",
                ["reason"],
                registry=registry,
            ),
            rate_limited_total=Counter(
                "datapulse_rate_limited",
                "Rate-limit rejections, by kind (request, tool call, concurrent stream).",
                ["kind"],
                registry=registry,
            ),
            forwarded_requests_total=Counter(
                "datapulse_forwarded_requests",
                "Requests forwarded to the instance owning the session (cluster mode), by outcome.",
                ["outcome"],
                registry=registry,
            ),
            redis_command_duration_seconds=Histogram(
                "datapulse_redis_command_duration_seconds",
                "Duration of cluster-store Redis commands, in seconds, by command.",
                ["command"],
                registry=registry,
                buckets=REDIS_DURATION_BUCKETS_S,
            ),
            bridge_children=Gauge(
                "datapulse_bridge_children",
                "Live child processes of a bridged stdio server (datapulse bridge), by server.",
                ["server"],
                registry=registry,
                multiprocess_mode="livesum",
            ),
            bridge_child_starts_total=Counter(
                "datapulse_bridge_child_starts",
                "Child process starts of a bridged stdio server, by server and outcome (started, failed).",
                ["server", "outcome"],
                registry=registry,
            ),
            bridge_child_exits_total=Counter(
                "datapulse_bridge_child_exits",
                "Child processes of a bridged stdio server that exited or crashed on their own, by server.",
                ["server"],
                registry=registry,
            ),
            upstream_requests_total=Counter(
                "datapulse_upstream_requests",
                "Requests forwarded to a bridged or proxied server, by server, method and outcome (ok, error: the "
                "server's own error; unavailable, timeout, denied: see datapulse.bridge.proxy).",
                ["server", "method", "outcome"],
                registry=registry,
            ),
            upstream_request_duration_seconds=Histogram(
                "datapulse_upstream_request_duration_seconds",
                "Duration of requests forwarded to a bridged or proxied server, in seconds, by server and method.",
                ["server", "method"],
                registry=registry,
                buckets=TOOL_DURATION_BUCKETS_S,
            ),
            upstream_passthrough_requests_total=Counter(
                "datapulse_upstream_passthrough_requests",
                "Requests a gateway forwarded to its 2026-07-28 upstream on the pass-through (one HTTP exchange, no "
                "era translation: datapulse.bridge.passthrough), by server and method; also counted in "
                "datapulse_upstream_requests_total.",
                ["server", "method"],
                registry=registry,
            ),
        )
        for reason in sorted(AUTH_REASONS):
            instruments.auth_failures_total.labels(reason)
        for kind in get_args(RateLimitKind):
            instruments.rate_limited_total.labels(kind)
        for outcome in get_args(ForwardOutcome):
            instruments.forwarded_requests_total.labels(outcome)
        return instruments


_process_lock = threading.Lock()
_process_instruments: dict[str, _Instruments] = {}
"""Multiprocess mode: this process's instruments, keyed by the real path of its directory (one entry)."""


def _shared_instruments(directory: str) -> _Instruments:
    """This process's file-backed instruments for ``directory``, created (and the mode entered) on first use.

    Raises:
        ValueError: the process already writes another directory.
    """
    with _process_lock:
        instruments = _process_instruments.get(directory)
        if instruments is None:
            if _process_instruments:
                (other,) = _process_instruments
                raise ValueError(f"this process already writes its metrics to {other!r}, not {directory!r}")
            _enter_multiprocess_mode(directory)
            instruments = _process_instruments[directory] = _Instruments.create(None)
        return instruments


def _enter_multiprocess_mode(directory: str) -> None:
    """Make prometheus-client write this process's values to files in ``directory``.

    Raises:
        ValueError: prometheus-client already writes to (or ``PROMETHEUS_MULTIPROC_DIR`` names) another
            directory.
    """
    configured = os.environ.get(MULTIPROC_DIR_ENV)
    if configured is not None and os.path.realpath(configured) != directory:
        raise ValueError(f"{MULTIPROC_DIR_ENV}={configured!r} names another directory than {directory!r}")
    if getattr(values.ValueClass, "_multiprocess", False):
        if configured is None:
            raise ValueError(f"prometheus-client is in multiprocess mode but {MULTIPROC_DIR_ENV} is unset")
        return
    os.environ[MULTIPROC_DIR_ENV] = directory
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


class Metrics:
    """All DataPulse metrics on one `CollectorRegistry` (never the global default registry, so several apps
    in one process, as in tests, do not collide).

    Args:
        multiprocess_dir: use prometheus-client multiprocess mode, writing to this directory (created if
            missing); None: the ``PROMETHEUS_MULTIPROC_DIR`` environment variable, and single-process mode
            (values in memory) when it is unset. See the module docstring for the process-global constraint.

    Raises:
        ValueError: the process already writes its metrics to another directory.

    Attributes:
        multiprocess_dir: the real path of the multiprocess directory, or None in single-process mode.
    """

    sessions_open: Gauge
    streams_open: Gauge
    messages_total: Counter
    outbound_queue_depth: Histogram
    tool_calls_total: Counter
    tool_call_duration_seconds: Histogram
    auth_failures_total: Counter
    rate_limited_total: Counter
    forwarded_requests_total: Counter
    redis_command_duration_seconds: Histogram
    bridge_children: Gauge
    bridge_child_starts_total: Counter
    bridge_child_exits_total: Counter
    upstream_requests_total: Counter
    upstream_request_duration_seconds: Histogram
    upstream_passthrough_requests_total: Counter

    def __init__(self, *, multiprocess_dir: str | None = None) -> None:
        if multiprocess_dir is None:
            multiprocess_dir = os.environ.get(MULTIPROC_DIR_ENV) or None
        self._registry = CollectorRegistry()
        self._tools: frozenset[str] = frozenset()
        if multiprocess_dir is None:
            if getattr(values.ValueClass, "_multiprocess", False):
                raise ValueError(f"prometheus-client is in multiprocess mode but {MULTIPROC_DIR_ENV} is unset")
            self.multiprocess_dir: str | None = None
            instruments = _Instruments.create(self._registry)
        else:
            os.makedirs(multiprocess_dir, exist_ok=True)
            self.multiprocess_dir = os.path.realpath(multiprocess_dir)
            instruments = _shared_instruments(self.multiprocess_dir)
            MultiProcessCollector(self._registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        for field in dataclasses.fields(_Instruments):
            setattr(self, field.name, getattr(instruments, field.name))

    def register_tools(self, names: Iterable[str]) -> None:
        """Keep these tool names as ``tool`` label values (in addition to those registered before)."""
        self._tools = self._tools | frozenset(names)

    def tool_label(self, name: str) -> str:
        """The ``tool`` label for a requested tool name: the name if registered, else ``_other``."""
        return name if name in self._tools else OTHER_TOOL

    def auth_reason(self, reason: str) -> str:
        """The ``reason`` label for an authentication failure: ``reason`` if in `AUTH_REASONS`, else ``other``."""
        return reason if reason in AUTH_REASONS else "other"

    def redis_command_label(self, command: str) -> str:
        """The ``command`` label for a Redis command name (any case): in `REDIS_COMMANDS`, else ``other``."""
        label = command.lower()
        return label if label in REDIS_COMMANDS else "other"

    def observe_redis_command(self, command: str, seconds: float) -> None:
        """Observe one Redis command (or pipeline) of ``seconds``; ``command`` is labelled with `redis_command_label`
        (a `datapulse.cluster.timed_redis.CommandObserver`)."""
        self.redis_command_duration_seconds.labels(self.redis_command_label(command)).observe(seconds)

    def collect(self) -> Iterable[Any]:
        """The metric families ``/metrics`` renders (prometheus-client ``Metric`` objects: ``.samples`` of
        ``(name, labels, value, ...)``); in multiprocess mode every worker's, merged."""
        return self._registry.collect()

    def render(self) -> tuple[bytes, str]:
        """The exposition of every metric: Prometheus text format 0.0.4 and its content type.

        In multiprocess mode this reads every file of the directory (blocking file I/O).
        """
        return generate_latest(self._registry), CONTENT_TYPE_PLAIN_0_0_4

    @contextmanager
    def time_tool(self, tool: str) -> Iterator[Callable[[ToolOutcome], None]]:
        """Count one call of ``tool`` and observe its duration, in seconds, when the block ends.

        ``tool`` is the requested name; it is labelled with `tool_label`. The yielded callable sets the
        outcome; when it was not called the outcome is ``error`` if an exception (any `BaseException`,
        cancellation included) escapes the block, else ``ok``.

        Raises:
            ValueError: from the yielded callable, for an outcome not in `ToolOutcome`.
        """
        label = self.tool_label(tool)
        chosen: list[ToolOutcome] = []

        def set_outcome(outcome: ToolOutcome) -> None:
            if outcome not in _TOOL_OUTCOMES:
                raise ValueError(f"unknown tool outcome {outcome!r}")
            chosen[:] = [outcome]

        started = time.perf_counter()
        outcome: ToolOutcome = "error"
        try:
            yield set_outcome
            outcome = "ok"
        finally:
            self.tool_call_duration_seconds.labels(label).observe(time.perf_counter() - started)
            self.tool_calls_total.labels(label, chosen[0] if chosen else outcome).inc()


async def metrics_endpoint(metrics: Metrics, send: Send) -> None:
    """Answer ``GET /metrics``: 200 with `Metrics.render`'s body and content type.

    In multiprocess mode the files are read in a worker thread, so the event loop is not blocked.
    """
    if metrics.multiprocess_dir is None:
        body, content_type = metrics.render()
    else:
        body, content_type = await anyio.to_thread.run_sync(metrics.render)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"content-length", str(len(body)).encode("latin-1")),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
