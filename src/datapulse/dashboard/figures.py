"""Per-tool figures for the dashboard from the same instruments as ``/metrics`` (pure functions).

`tool_tallies` reads one registry's samples into mergeable tallies (call counts by outcome, cumulative latency
buckets); `merge_tallies` adds the tallies of several instances; `tool_figures` turns tallies into what the
dashboard shows: calls, errors, error rate and latency percentiles interpolated within the histogram buckets the
way Prometheus's ``histogram_quantile`` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

CALLS_SAMPLE = "datapulse_tool_calls_total"
BUCKET_SAMPLE = "datapulse_tool_call_duration_seconds_bucket"
ERROR_OUTCOMES = frozenset({"error"})
"""Outcomes counted as errors (``refused`` and ``rate_limited`` calls never ran: they are policy, not faults)."""


class Tally(TypedDict):
    """One tool's mergeable figures: ``outcomes`` call counts by outcome; ``buckets`` ``[upper bound in seconds,
    cumulative count]`` pairs, ascending, the last bound ``+Inf`` (JSON: the string "+Inf")."""

    outcomes: dict[str, float]
    buckets: list[tuple[float | str, float]]


class Figures(TypedDict):
    """One tool's row in the stats view: call counts (every outcome), errors (`ERROR_OUTCOMES`), their ratio
    (0-1), and latency percentiles in milliseconds (None before the first call)."""

    name: str
    calls: int
    errors: int
    error_rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


def tool_tallies(samples: Iterable[tuple[str, Mapping[str, str], float]]) -> dict[str, Tally]:
    """Tallies by tool from ``(sample name, labels, value)`` triples (a registry's collected samples)."""
    tallies: dict[str, Tally] = {}
    buckets: dict[str, dict[float, float]] = {}
    for name, labels, value in samples:
        tool = labels.get("tool")
        if tool is None:
            continue
        if name == CALLS_SAMPLE:
            tally = tallies.setdefault(tool, Tally(outcomes={}, buckets=[]))
            outcome = labels.get("outcome", "ok")
            tally["outcomes"][outcome] = tally["outcomes"].get(outcome, 0.0) + value
        elif name == BUCKET_SAMPLE:
            tallies.setdefault(tool, Tally(outcomes={}, buckets=[]))
            per_tool = buckets.setdefault(tool, {})
            bound = float(labels["le"])
            per_tool[bound] = per_tool.get(bound, 0.0) + value
    for tool, per_tool in buckets.items():
        tallies[tool]["buckets"] = [(_json_bound(bound), count) for bound, count in sorted(per_tool.items())]
    return tallies


def merge_tallies(parts: Iterable[Mapping[str, Tally]]) -> dict[str, Tally]:
    """The sum of several instances' tallies (same buckets: every instance uses the same histogram bounds)."""
    outcomes: dict[str, dict[str, float]] = {}
    buckets: dict[str, dict[float, float]] = {}
    for part in parts:
        for tool, tally in part.items():
            mine = outcomes.setdefault(tool, {})
            for outcome, count in tally["outcomes"].items():
                mine[outcome] = mine.get(outcome, 0.0) + count
            per_tool = buckets.setdefault(tool, {})
            for bound, count in tally["buckets"]:
                key = float(bound)
                per_tool[key] = per_tool.get(key, 0.0) + count
    return {
        tool: Tally(
            outcomes=outcomes[tool],
            buckets=[(_json_bound(bound), count) for bound, count in sorted(buckets.get(tool, {}).items())],
        )
        for tool in outcomes
    }


def quantile_s(q: float, buckets: list[tuple[float | str, float]]) -> float | None:
    """The ``q`` quantile (0 < q < 1) in seconds from cumulative ``buckets``, interpolated linearly within the
    bucket it falls in (from 0 for the first); the highest finite bound when it falls in ``+Inf``; None without
    observations."""
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for raw_bound, count in buckets:
        bound = float(raw_bound)
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (count - previous_count)
        previous_bound, previous_count = bound, count
    return previous_bound


def tool_figures(tallies: Mapping[str, Tally]) -> list[Figures]:
    """What the dashboard shows per tool, busiest first (latencies in milliseconds, rounded to 0.01)."""
    figures: list[Figures] = []
    for tool, tally in tallies.items():
        calls = int(sum(tally["outcomes"].values()))
        errors = int(sum(count for outcome, count in tally["outcomes"].items() if outcome in ERROR_OUTCOMES))

        def ms(q: float, buckets: list[tuple[float | str, float]] = tally["buckets"]) -> float | None:
            seconds = quantile_s(q, buckets)
            return None if seconds is None else round(seconds * 1000, 2)

        figures.append(
            Figures(
                name=tool,
                calls=calls,
                errors=errors,
                error_rate=round(errors / calls, 4) if calls else 0.0,
                p50_ms=ms(0.5),
                p95_ms=ms(0.95),
                p99_ms=ms(0.99),
            )
        )
    figures.sort(key=lambda item: (-item["calls"], item["name"]))
    return figures


def _json_bound(bound: float) -> float | str:
    return "+Inf" if math.isinf(bound) else bound


def registry_samples(families: Iterable[Any]) -> list[tuple[str, Mapping[str, str], float]]:
    """``(name, labels, value)`` triples from prometheus-client metric families (``registry.collect()``)."""
    return [(sample.name, sample.labels, sample.value) for family in families for sample in family.samples]
