"""Rate-limit notation: `parse_limit` and `parse_tool_limits` driven by tables of good and bad specs."""

from __future__ import annotations

import pytest

from datapulse.ratelimit import RateLimiter, parse_limit, parse_tool_limits

# (spec, [(amount, window_s), ...])
GOOD_LIMITS: list[tuple[str, list[tuple[int, int]]]] = [
    ("60/minute", [(60, 60)]),
    ("1/second", [(1, 1)]),
    ("10/second;1000/hour", [(10, 1), (1000, 3600)]),
    ("10 per second, 100 per minute", [(10, 1), (100, 60)]),
    ("5 / 2 minutes", [(5, 120)]),
    ("3/hour|4/day", [(3, 3600), (4, 86400)]),
    ("  7/MINUTE  ", [(7, 60)]),
    ("", []),
    ("   ", []),
]

BAD_LIMITS = ["60", "sixty/minute", "60/fortnight", "60/minute;", ";60/minute", "0/minute", "60/minute;0/hour", "-1/s"]


@pytest.mark.parametrize(("spec", "expected"), GOOD_LIMITS)
def test_parse_limit_reads_limits_notation_in_order(spec: str, expected: list[tuple[int, int]]) -> None:
    assert [(item.amount, item.get_expiry()) for item in parse_limit(spec)] == expected


@pytest.mark.parametrize("spec", BAD_LIMITS)
def test_parse_limit_rejects_a_bad_spec_naming_it(spec: str) -> None:
    with pytest.raises(ValueError, match="invalid rate limit") as caught:
        parse_limit(spec)
    assert repr(spec) in str(caught.value)


# (spec, [(glob, [(amount, window_s), ...]), ...])
GOOD_TOOL_LIMITS: list[tuple[str, list[tuple[str, list[tuple[int, int]]]]]] = [
    ("search=10/minute", [("search", [(10, 60)])]),
    (
        "search=10/minute,fetch_*=5/minute;100/hour",
        [("search", [(10, 60)]), ("fetch_*", [(5, 60), (100, 3600)])],
    ),
    (" a = 1/second | 2/hour , b?=3/day ", [("a", [(1, 1), (2, 3600)]), ("b?", [(3, 86400)])]),
    ("admin_*=1/minute,*=100/minute", [("admin_*", [(1, 60)]), ("*", [(100, 60)])]),
    ("", []),
]

BAD_TOOL_LIMITS = [
    "search",  # no '='
    "search=10/minute,100/hour",  # ',' separates entries, so '100/hour' has no glob
    "=10/minute",  # empty glob
    "search=",  # no limit
    "search=ten/minute",  # bad limit
    "search=10/minute,",  # trailing empty entry
    "search=1/minute,search=2/minute",  # repeated glob
    "search=0/minute",  # allows nothing
]


@pytest.mark.parametrize(("spec", "expected"), GOOD_TOOL_LIMITS)
def test_parse_tool_limits_keeps_globs_in_written_order(
    spec: str, expected: list[tuple[str, list[tuple[int, int]]]]
) -> None:
    parsed = parse_tool_limits(spec)
    assert [(glob, [(item.amount, item.get_expiry()) for item in items]) for glob, items in parsed] == expected


@pytest.mark.parametrize("spec", BAD_TOOL_LIMITS)
def test_parse_tool_limits_rejects_a_bad_entry_naming_it(spec: str) -> None:
    with pytest.raises(ValueError, match="invalid tool limit entry") as caught:
        parse_tool_limits(spec)
    assert repr(spec) in str(caught.value)


@pytest.mark.parametrize(
    ("tool", "glob"),
    [("admin_reset", "admin_*"), ("search", "*"), ("Admin_reset", "*"), ("admin", "*")],
)
def test_the_first_matching_glob_wins(tool: str, glob: str) -> None:
    parsed = parse_tool_limits("admin_*=1/minute,*=100/minute")
    limiter = RateLimiter(per_principal=(), per_tool=parsed)
    assert limiter.tool_limits(tool) is dict(parsed)[glob]


@pytest.mark.parametrize(
    ("tool", "limited"),
    [("search", True), ("searcher", False), ("SEARCH", False), ("fetch_a", True), ("fetch", False)],
)
def test_globs_match_whole_names_case_sensitively(tool: str, limited: bool) -> None:
    limiter = RateLimiter(per_principal=(), per_tool=parse_tool_limits("search=1/minute,fetch_?=1/minute"))
    assert bool(limiter.tool_limits(tool)) is limited
