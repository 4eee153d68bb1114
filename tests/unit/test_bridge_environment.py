"""A bridged child's environment: `--env NAME=VALUE` parsing, and an allow list that lets nothing else leak."""

from __future__ import annotations

import pytest
from mcp.client.stdio import DEFAULT_INHERITED_ENV_VARS

from datapulse.bridge.environment import DEFAULT_ENV_ALLOW, child_environment, parse_env_assignments
from datapulse.config import ConfigurationError

SOURCE = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/ada",
    "LANG": "C.UTF-8",
    "DATAPULSE_TOKEN": "dp-secret",
    "AWS_ACCESS_KEY_ID": "AKIA",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "AWSX": "not-aws",
    "aws_lower": "lower",
    "GITHUB_TOKEN": "gh-secret",
}


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], {}),
        (["A=1"], {"A": "1"}),
        (["A="], {"A": ""}),  # the value may be empty
        (["URL=https://x?a=b&c=d"], {"URL": "https://x?a=b&c=d"}),  # split at the first '=' only
        (["A==="], {"A": "=="}),
        (["_x9=v", "B=2"], {"_x9": "v", "B": "2"}),
        (["A=1", "A=2"], {"A": "2"}),  # a later item wins
        (["A= spaced "], {"A": " spaced "}),  # values are kept verbatim
    ],
)
def test_env_assignments_split_at_the_first_equals_sign(items: list[str], expected: dict[str, str]) -> None:
    assert parse_env_assignments(items) == expected


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("X", "--env 'X': expected NAME=VALUE"),
        ("", "--env '': expected NAME=VALUE"),
        ("=value", "--env '=...': expected NAME=VALUE with NAME made of"),
        ("1X=v", "--env '1X=...'"),
        ("A-B=v", "--env 'A-B=...'"),
        ("A B=v", "--env 'A B=...'"),
        (" A=v", "--env ' A=...'"),
    ],
)
def test_a_malformed_env_assignment_is_a_configuration_error_naming_the_item(item: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_env_assignments(["OK=1", item])
    assert str(caught.value).startswith(message)


def test_an_invalid_env_name_error_does_not_echo_the_secret_value() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_env_assignments(["GITHUB-TOKEN=ghp_supersecret"])
    assert "ghp_supersecret" not in str(caught.value)
    assert "GITHUB-TOKEN" in str(caught.value)


@pytest.mark.parametrize(
    ("allow", "expected"),
    [
        ((), {}),
        (("PATH",), {"PATH": "/usr/bin:/bin"}),
        (("PATH", "TMPDIR"), {"PATH": "/usr/bin:/bin"}),  # a name absent from the source is skipped
        (("AWS_*",), {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "aws-secret"}),
        (("aws_*",), {"aws_lower": "lower"}),  # globs are case-sensitive
        (("path",), {}),  # and so are exact names
        (("AWS",), {}),  # an exact name is not a prefix
        (("*_TOKEN",), {"DATAPULSE_TOKEN": "dp-secret", "GITHUB_TOKEN": "gh-secret"}),
        (("*",), SOURCE),
    ],
)
def test_only_variables_named_by_the_allow_list_are_copied_from_the_source(
    allow: tuple[str, ...], expected: dict[str, str]
) -> None:
    assert child_environment(allow, {}, SOURCE) == expected


def test_the_default_allow_list_lets_no_secret_leak() -> None:
    environment = child_environment(DEFAULT_ENV_ALLOW, {}, SOURCE)
    assert environment == {"PATH": "/usr/bin:/bin", "HOME": "/home/ada", "LANG": "C.UTF-8"}


@pytest.mark.parametrize(
    ("allow", "extra", "expected"),
    [
        ((), {"GITHUB_TOKEN": "explicit"}, {"GITHUB_TOKEN": "explicit"}),  # extra needs no allow entry
        (("PATH",), {"PATH": "/opt/bin"}, {"PATH": "/opt/bin"}),  # extra overrides the inherited value
        (("HOME",), {"EMPTY": ""}, {"HOME": "/home/ada", "EMPTY": ""}),
        (("NOPE",), {"X": "()  { :; }"}, {"X": "()  { :; }"}),  # explicit values are taken as given
    ],
)
def test_extra_values_are_added_on_top_of_the_inherited_ones(
    allow: tuple[str, ...], extra: dict[str, str], expected: dict[str, str]
) -> None:
    assert child_environment(allow, extra, SOURCE) == expected


def test_exported_shell_functions_are_never_inherited() -> None:
    source = {"BASH_FUNC_f%%": "() {  echo pwned\n}", "FOO": "() { :; }", "BAR": "ok"}
    assert child_environment(("*",), {}, source) == {"BAR": "ok"}


def test_the_arguments_are_left_unchanged() -> None:
    source = dict(SOURCE)
    extra = {"PATH": "/opt/bin"}
    child_environment(("PATH",), extra, source)
    assert source == SOURCE
    assert extra == {"PATH": "/opt/bin"}


def test_the_sdks_own_inherited_set_is_within_the_default_allow_list() -> None:
    # stdio_client merges get_default_environment() under our mapping; the default allow list already
    # includes every variable it adds, so the default configuration means what it says.
    assert set(DEFAULT_INHERITED_ENV_VARS) <= set(DEFAULT_ENV_ALLOW)
