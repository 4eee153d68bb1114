"""Host and Origin checks against DNS rebinding, including behind trusted proxies."""

from __future__ import annotations

import pytest

from datapulse.auth.hosts import (
    LOOPBACK_HOST_PATTERNS,
    effective_host,
    host_allowed,
    origin_allowed,
    parse_networks,
    split_host,
)


@pytest.mark.parametrize(
    ("host", "patterns", "allowed"),
    [
        ("127.0.0.1:8000", LOOPBACK_HOST_PATTERNS, True),
        ("localhost:1234", LOOPBACK_HOST_PATTERNS, True),
        ("LOCALHOST", LOOPBACK_HOST_PATTERNS, True),
        ("[::1]:8000", LOOPBACK_HOST_PATTERNS, True),
        ("evil.example:8000", LOOPBACK_HOST_PATTERNS, False),
        ("127.0.0.1.evil.example", LOOPBACK_HOST_PATTERNS, False),
        ("", LOOPBACK_HOST_PATTERNS, False),
        ("api.example.com", ("api.example.com",), True),
        ("api.example.com:443", ("api.example.com",), True),
        ("api.example.com:8443", ("api.example.com:443",), False),
        ("api.example.com:8443", ("api.example.com:*",), True),
        ("anything", ("*",), True),
    ],
)
def test_host_patterns(host: str, patterns: tuple[str, ...], allowed: bool) -> None:
    assert host_allowed(host, patterns) is allowed


@pytest.mark.parametrize(
    ("value", "parts"),
    [("a.b:80", ("a.b", "80")), ("a.b", ("a.b", None)), ("[::1]:9", ("[::1]", "9")), ("[::1]", ("[::1]", None))],
)
def test_split_host(value: str, parts: tuple[str, str | None]) -> None:
    assert split_host(value) == parts


TRUSTED = parse_networks(["10.0.0.0/8", "192.168.1.5"])


@pytest.mark.parametrize(
    ("host", "forwarded", "client", "expected"),
    [
        ("internal:8000", "public.example.com", "10.1.2.3", "public.example.com"),
        ("internal:8000", "a.example, b.example", "192.168.1.5", "a.example"),
        ("internal:8000", "public.example.com", "203.0.113.9", "internal:8000"),
        ("internal:8000", None, "10.1.2.3", "internal:8000"),
        ("internal:8000", "public.example.com", None, "internal:8000"),
    ],
)
def test_forwarded_host_is_believed_only_from_trusted_proxies(
    host: str, forwarded: str | None, client: str | None, expected: str
) -> None:
    assert effective_host(host, forwarded, client, TRUSTED) == expected


@pytest.mark.parametrize(
    ("origin", "host", "extra", "loopback", "allowed"),
    [
        ("http://localhost:3000", "127.0.0.1:8000", (), True, True),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", (), True, True),
        ("http://evil.example", "127.0.0.1:8000", (), True, False),
        ("http://localhost:3000", "api.example.com", (), False, False),
        ("https://api.example.com", "api.example.com", (), False, True),
        ("https://app.example.com", "api.example.com", ("https://app.example.com",), False, True),
        ("https://app.example.com", "api.example.com", ("*",), False, True),
        ("null", "127.0.0.1:8000", (), True, False),
        ("file://", "127.0.0.1:8000", (), True, False),
    ],
)
def test_origin_rules(origin: str, host: str, extra: tuple[str, ...], loopback: bool, allowed: bool) -> None:
    assert origin_allowed(origin, host, extra, allow_loopback=loopback) is allowed
