"""The dashboard's pure parts, as tables: content negotiation of ``GET /``, who is an admin, and per-tool figures
from histogram buckets."""

from __future__ import annotations

import pytest

from datapulse.auth.principal import ANONYMOUS, Principal
from datapulse.dashboard.access import is_admin, sees
from datapulse.dashboard.figures import merge_tallies, quantile_s, tool_figures, tool_tallies
from datapulse.dashboard.index import prefers_html

INF = float("inf")


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (None, False),
        ("", False),
        ("application/json", False),
        ("*/*", False),
        ("text/html", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("application/json, text/html;q=0.5", False),
        ("text/html;q=0", False),
        ("text/html;q=0.9, */*;q=1", False),
        ("text/html;q=bogus", False),
    ],
)
def test_the_root_page_is_html_only_when_the_client_prefers_it(accept: str | None, html: bool) -> None:
    assert prefers_html(accept) is html


ADMINS = ("local", "https://issuer.example ops")


@pytest.mark.parametrize(
    ("principal", "admin"),
    [
        (ANONYMOUS, True),
        (Principal("local", unrestricted=True), True),
        (Principal("alice", unrestricted=True), False),  # a static token's every-scope makes no admin
        (Principal("alice", frozenset({"datapulse:admin"}), issuer="https://issuer.example"), True),
        (Principal("ops", issuer="https://issuer.example"), True),  # named by key
        (Principal("ops", issuer="https://other.example"), False),
        (Principal("bob", frozenset({"tools:call"})), False),
    ],
)
def test_who_is_a_dashboard_admin(principal: Principal, admin: bool) -> None:
    assert is_admin(principal, ADMINS) is admin


def test_a_principal_sees_its_own_and_only_an_admin_sees_anothers() -> None:
    alice = Principal("alice", unrestricted=True)
    assert sees(alice, "alice", ADMINS)
    assert not sees(alice, "bob", ADMINS)
    assert sees(Principal("local", unrestricted=True), "bob", ADMINS)


BUCKETS: list[tuple[float | str, float]] = [(0.005, 0), (0.01, 50), (0.05, 90), (0.1, 100), ("+Inf", 100)]


@pytest.mark.parametrize(
    ("q", "expected_s"),
    [
        (0.5, 0.01),  # rank 50 is the top of the (0.005, 0.01] bucket
        (0.25, 0.0075),  # halfway into it
        (0.7, 0.03),  # halfway into (0.01, 0.05]
        (0.95, 0.075),
        (1.0, 0.1),
    ],
)
def test_quantiles_interpolate_within_the_bucket_like_histogram_quantile(q: float, expected_s: float) -> None:
    assert quantile_s(q, BUCKETS) == pytest.approx(expected_s)


def test_a_quantile_in_the_infinite_bucket_is_the_highest_finite_bound_and_none_without_observations() -> None:
    assert quantile_s(0.99, [(0.1, 1), ("+Inf", 10)]) == 0.1
    assert quantile_s(0.5, [(0.1, 0), ("+Inf", 0)]) is None
    assert quantile_s(0.5, []) is None


def test_tallies_from_samples_merge_across_instances_into_figures() -> None:
    def samples(ok: float, error: float, fast: float, total: float) -> list[tuple[str, dict[str, str], float]]:
        return [
            ("datapulse_tool_calls_total", {"tool": "echo", "outcome": "ok"}, ok),
            ("datapulse_tool_calls_total", {"tool": "echo", "outcome": "error"}, error),
            ("datapulse_tool_calls_total", {"tool": "echo", "outcome": "refused"}, 1),
            ("datapulse_tool_call_duration_seconds_bucket", {"tool": "echo", "le": "0.01"}, fast),
            ("datapulse_tool_call_duration_seconds_bucket", {"tool": "echo", "le": "+Inf"}, total),
            ("datapulse_tool_call_duration_seconds_count", {"tool": "echo"}, total),
            ("datapulse_sessions_open", {"transport": "sse"}, 3),
        ]

    merged = merge_tallies([tool_tallies(samples(8, 1, 9, 9)), tool_tallies(samples(1, 0, 0, 1))])
    assert merged["echo"]["outcomes"] == {"ok": 9, "error": 1, "refused": 2}
    assert merged["echo"]["buckets"] == [(0.01, 9), ("+Inf", 10)]
    (echo,) = tool_figures(merged)
    assert echo == {
        "name": "echo",
        "calls": 12,
        "errors": 1,
        "error_rate": 0.0833,
        "p50_ms": 5.56,
        "p95_ms": 10.0,
        "p99_ms": 10.0,
    }
