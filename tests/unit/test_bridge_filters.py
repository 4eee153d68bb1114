"""Bridge allow/deny filters: case-sensitive globs, deny winning, one filter per kind, and pattern parsing."""

from __future__ import annotations

import dataclasses

import pytest

from datapulse.bridge.filters import BridgeFilters, Kind, NameFilter, parse_patterns
from datapulse.config import ConfigurationError


@pytest.mark.parametrize(
    ("allow", "deny", "name", "permitted"),
    [
        ((), (), "anything", True),  # an open filter permits every name
        ((), (), "", True),
        (("get_*",), (), "get_issue", True),
        (("get_*",), (), "list_issues", False),  # a non-empty allow list is exhaustive
        (("get_*", "list_*"), (), "list_issues", True),
        (("get_*",), (), "Get_issue", False),  # globs are case-sensitive
        (("get_?",), (), "get_x", True),
        (("get_?",), (), "get_xy", False),
        (("[ab]*",), (), "alpha", True),
        (("[ab]*",), (), "gamma", False),
        (("echo",), (), "echo_twice", False),  # a glob without wildcards is an exact name
        ((), ("delete_*",), "delete_repo", False),
        ((), ("delete_*",), "create_repo", True),  # empty allow: everything not denied
        (("*",), ("delete_*",), "delete_repo", False),  # deny wins over allow
        (("delete_repo",), ("delete_*",), "delete_repo", False),  # even over an exact allow
        (("*_repo",), ("delete_*",), "create_repo", True),
    ],
)
def test_a_name_is_permitted_when_no_deny_glob_and_some_allow_glob_matches(
    allow: tuple[str, ...], deny: tuple[str, ...], name: str, permitted: bool
) -> None:
    assert NameFilter(allow=allow, deny=deny).permits(name) is permitted


def test_deny_wins_over_allow() -> None:
    name_filter = NameFilter(allow=("admin_*", "echo"), deny=("admin_reset",))
    assert name_filter.permits("admin_status")
    assert not name_filter.permits("admin_reset")


@pytest.mark.parametrize(
    ("name_filter", "is_open"),
    [
        (NameFilter(), True),
        (NameFilter(allow=("*",)), False),  # permits everything, but is still a configured filter
        (NameFilter(deny=("x",)), False),
        (NameFilter(allow=("a",), deny=("b",)), False),
    ],
)
def test_a_filter_is_open_only_without_any_glob(name_filter: NameFilter, is_open: bool) -> None:
    assert name_filter.is_open is is_open


FILTERS = BridgeFilters(
    tools=NameFilter(deny=("delete_*",)),
    resources=NameFilter(allow=("file:///srv/public/*",)),
    prompts=NameFilter(allow=("summarize",)),
)


@pytest.mark.parametrize(
    ("kind", "name", "permitted"),
    [
        ("tool", "delete_repo", False),
        ("tool", "summarize", True),
        ("prompt", "summarize", True),
        ("prompt", "delete_repo", False),  # the prompt filter allows only 'summarize'
        ("resource", "file:///srv/public/readme.md", True),  # resources match by URI
        ("resource", "file:///srv/public/{name}", True),  # templates match by URI template
        ("resource", "file:///srv/private/key.pem", False),
        ("resource", "delete_repo", False),  # the tool deny list does not apply, but the resource allow list does
    ],
)
def test_each_kind_is_filtered_by_its_own_filter(kind: Kind, name: str, permitted: bool) -> None:
    assert FILTERS.permits(kind, name) is permitted


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("tool", FILTERS.tools), ("resource", FILTERS.resources), ("prompt", FILTERS.prompts)],
)
def test_for_kind_returns_that_kinds_filter(kind: Kind, expected: NameFilter) -> None:
    assert FILTERS.for_kind(kind) is expected


def test_an_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown kind 'widget'"):
        FILTERS.for_kind("widget")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("filters", "is_open"),
    [
        (BridgeFilters(), True),
        (BridgeFilters(tools=NameFilter(deny=("x",))), False),
        (BridgeFilters(resources=NameFilter(allow=("file:*",))), False),
        (BridgeFilters(prompts=NameFilter(deny=("x",))), False),
    ],
)
def test_bridge_filters_are_open_only_when_every_kind_is(filters: BridgeFilters, is_open: bool) -> None:
    assert filters.is_open is is_open


def test_the_default_bridge_filters_permit_every_kind_and_name() -> None:
    assert all(BridgeFilters().permits(kind, "anything") for kind in ("tool", "resource", "prompt"))


def test_filters_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        NameFilter().allow = ("x",)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "patterns"),
    [
        (None, ()),
        ("", ()),
        ("  ", ()),
        ("get_*", ("get_*",)),
        ("get_*, list_* ,echo", ("get_*", "list_*", "echo")),
        ("a,,b,", ("a", "b")),  # empty pieces of a comma string are skipped
        ([], ()),
        (["get_*", " list_* "], ("get_*", "list_*")),
        (("a", "b"), ("a", "b")),
        (["a,b"], ("a,b",)),  # a list item is one pattern, commas and all
        (["file:///srv/*"], ("file:///srv/*",)),
    ],
)
def test_patterns_come_stripped_and_in_order_from_a_comma_string_or_a_list(
    value: str | list[str] | tuple[str, ...] | None, patterns: tuple[str, ...]
) -> None:
    assert parse_patterns(value) == patterns


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["a", ""], "pattern 2 is empty"),
        (["  "], "pattern 1 is empty"),
        (["a", 3], r"pattern 2 \(3\) must be a string"),
        (["get\t*"], r"pattern 1 \('get\\t\*'\) contains a control character"),
        ("a, b\nc", r"pattern 2 \('b\\nc'\) contains a control character"),
        (["x\x7f"], "contains a control character"),
        (3, "expected a comma-separated string or a list of glob strings, got int"),
    ],
)
def test_an_empty_non_string_or_control_character_pattern_is_a_configuration_error(value: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_patterns(value)  # type: ignore[arg-type]
