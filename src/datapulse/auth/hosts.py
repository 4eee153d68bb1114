"""DNS-rebinding protection: Host and Origin checks (pure functions), behind proxies too.

Spec 2025-11-25/2026-07-28 basic/transports "Security Warning": servers MUST validate ``Origin``
(403 when present and invalid) and SHOULD bind to localhost. A local server must also refuse
requests whose ``Host`` is not one of its own names (421 Misdirected Request, RFC 9110 §15.5.20),
or a rebinding page could reach it. Behind a reverse proxy the client's Host arrives as
``X-Forwarded-Host``, believed only from configured trusted proxies.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

LOOPBACK_HOST_PATTERNS = ("localhost:*", "127.0.0.1:*", "[::1]:*", "localhost", "127.0.0.1", "[::1]")
LOOPBACK_ORIGIN_HOSTS = ("localhost", "127.0.0.1", "[::1]")

Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]


def parse_networks(items: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """CIDRs or single addresses as networks (``"10.0.0.1"`` → ``10.0.0.1/32``)."""
    return [ipaddress.ip_network(item, strict=False) for item in items]


def is_trusted_proxy(client_ip: str | None, trusted: Networks) -> bool:
    """Whether the peer address ``client_ip`` is one of the trusted proxies."""
    if not client_ip or not trusted:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(address in network for network in trusted)


def effective_host(host: str | None, forwarded_host: str | None, client_ip: str | None, trusted: Networks) -> str:
    """The host the client addressed: the first ``X-Forwarded-Host`` from a trusted proxy, else ``Host``."""
    if forwarded_host and is_trusted_proxy(client_ip, trusted):
        return forwarded_host.split(",")[0].strip().lower()
    return (host or "").strip().lower()


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """Whether ``host`` (``name`` or ``name:port``) matches one of ``patterns``.

    A pattern is ``*`` (any), ``name`` (that name on any port or none), or ``name:*`` / ``name:port``.
    Comparison is case-insensitive.
    """
    if not host:
        return False
    name, port = split_host(host)
    for pattern in patterns:
        pattern = pattern.strip().lower()
        if pattern == "*":
            return True
        p_name, p_port = split_host(pattern)
        if p_name != name:
            continue
        if p_port is None or p_port == "*" or p_port == port:
            return True
    return False


def split_host(host: str) -> tuple[str, str | None]:
    """Split ``name:port`` (IPv6 in brackets) into ``(name, port or None)``."""
    host = host.lower()
    if host.startswith("["):
        end = host.find("]")
        if end == -1:
            return host, None
        rest = host[end + 1 :]
        return host[: end + 1], rest[1:] if rest.startswith(":") else None
    if host.count(":") == 1:
        name, port = host.split(":")
        return name, port
    return host, None


def origin_allowed(origin: str, request_host: str, allowed_origins: Sequence[str], *, allow_loopback: bool) -> bool:
    """Whether a browser ``Origin`` may talk to this server.

    Allowed: ``null``-free origins listed in ``allowed_origins`` (``*`` for any), the same origin as
    the request's host, and — when the server itself is on loopback — any loopback origin.
    """
    origin = origin.strip().lower()
    if not origin or origin == "null":
        return False
    for allowed in allowed_origins:
        if allowed.strip() == "*" or allowed.strip().lower().rstrip("/") == origin.rstrip("/"):
            return True
    try:
        parts = urlsplit(origin)
    except ValueError:  # e.g. "http://[::1" (an unclosed IPv6 bracket): not an origin we can match
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    if parts.netloc == request_host:
        return True
    name = split_host(parts.netloc)[0]
    return allow_loopback and name in LOOPBACK_ORIGIN_HOSTS
