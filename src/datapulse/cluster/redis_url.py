"""The cluster's Redis URL: which schemes are accepted, and the Redis Sentinel form parsed into its parts.

Plain URLs (``redis://``, ``rediss://``, ``unix://``) go to redis-py's ``from_url`` as they are. A Sentinel URL
names the sentinels and the monitored service instead of one server::

    redis+sentinel://[[username]:password@]host[:port][,host[:port]...]/service_name[/db][?query]
    rediss+sentinel://...   the same over TLS, to the sentinels and to the master

- ``host`` is a name, an IPv4 address or a bracketed IPv6 address (``[::1]:26379``); ``port`` defaults to 26379.
- ``username``/``password`` (percent-encoded) authenticate to the master, as in a ``redis://`` URL.
- ``db`` is the database number (default 0).
- query keys ``sentinel_username`` and ``sentinel_password`` authenticate to the sentinels themselves (Sentinel's
  own ``requirepass``); no other key is accepted.

Pure functions, no I/O: `check_redis_url` for settings validation, `parse_sentinel_url` for `store.connect`.
Error messages never repeat a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, unquote

__all__ = [
    "ACCEPTED_SCHEMES",
    "DEFAULT_SENTINEL_PORT",
    "SENTINEL_SCHEMES",
    "SentinelUrl",
    "check_redis_url",
    "is_sentinel_url",
    "parse_sentinel_url",
]

PLAIN_SCHEMES: Final = ("redis", "rediss", "unix")
SENTINEL_SCHEMES: Final = ("redis+sentinel", "rediss+sentinel")
ACCEPTED_SCHEMES: Final = PLAIN_SCHEMES + SENTINEL_SCHEMES
DEFAULT_SENTINEL_PORT: Final = 26379
_QUERY_KEYS: Final = ("sentinel_password", "sentinel_username")
_SYNTAX: Final = "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]"


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed Sentinel URL.

    Attributes:
        sentinels: ``(host, port)`` of each sentinel, in URL order (IPv6 hosts without brackets).
        service_name: the master's name as the sentinels monitor it (``sentinel monitor <name> ...``).
        db: the database number on the master.
        username: ACL user on the master, or None.
        password: password on the master, or None.
        sentinel_username: ACL user on the sentinels, or None.
        sentinel_password: password on the sentinels, or None.
        ssl: TLS to the sentinels and to the master (``rediss+sentinel``).
    """

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False

    def __repr__(self) -> str:  # never show passwords (settings and logs may print this)
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"SentinelUrl({hosts}/{self.service_name}/{self.db}, ssl={self.ssl})"


def scheme_of(url: str) -> str:
    """The part of ``url`` before ``://``, lower-cased (``""`` when there is no ``://``)."""
    scheme, separator, _ = url.partition("://")
    return scheme.lower() if separator else ""


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` uses a Sentinel scheme (``redis+sentinel://`` or ``rediss+sentinel://``)."""
    return scheme_of(url) in SENTINEL_SCHEMES


def check_redis_url(url: str) -> None:
    """Check that ``url`` can be the cluster's Redis URL (for settings validation).

    Raises:
        ValueError: the scheme is none of `ACCEPTED_SCHEMES` (the message names every one), or a Sentinel
            URL is malformed (from `parse_sentinel_url`).
    """
    if scheme_of(url) not in ACCEPTED_SCHEMES:
        accepted = ", ".join(f"{scheme}://" for scheme in ACCEPTED_SCHEMES[:-1])
        raise ValueError(f"redis_url must start with {accepted} or {ACCEPTED_SCHEMES[-1]}://")
    if is_sentinel_url(url):
        parse_sentinel_url(url)


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Split a Sentinel URL (module docstring) into its parts.

    Returns:
        The `SentinelUrl`, with percent-encoded user, password and service name decoded.

    Raises:
        ValueError: not a Sentinel scheme, no sentinel, an empty or malformed host entry, a port that is not
            1-65535, no service name, a db that is not a non-negative integer, extra path segments, a fragment,
            or an unknown or repeated query key. The message says what is wrong without the password.
    """
    scheme = scheme_of(url)
    if scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"not a Sentinel URL: expected {' or '.join(f'{s}://' for s in SENTINEL_SCHEMES)}")
    rest = url.partition("://")[2]
    if "#" in rest:
        raise ValueError("Sentinel URL: '#' is not allowed (percent-encode it as %23 in a password)")
    authority, slash, tail = rest.partition("/")  # a password cannot hold a raw '/', so this ends the hosts
    path, _, query_text = tail.partition("?")
    if "@" in path or "@" in query_text.split("=", 1)[0]:  # the rest of a password that held a '/'
        raise ValueError("Sentinel URL: '@' after the host list (percent-encode '/' in a password as %2F)")
    userinfo, at, hosts = authority.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    if "?" in hosts:
        raise ValueError(f"Sentinel URL: no service name; expected {_SYNTAX}")
    sentinels = _sentinels(hosts)
    segments = path.split("/") if slash else []
    if len(segments) > 1 and segments[-1] == "":
        segments.pop()  # one trailing slash is harmless
    service_name = unquote(segments[0]) if segments else ""
    if not service_name:
        raise ValueError(f"Sentinel URL: no service name; expected {_SYNTAX}")
    if len(segments) > 2:
        raise ValueError(f"Sentinel URL: too many path segments after the hosts; expected {_SYNTAX}")
    db = 0
    if len(segments) == 2:
        if not (segments[1].isascii() and segments[1].isdigit()):
            raise ValueError(f"Sentinel URL: db {segments[1]!r} is not a non-negative integer")
        db = int(segments[1])
    query = _query(query_text)
    return SentinelUrl(
        sentinels=sentinels,
        service_name=service_name,
        db=db,
        username=username,
        password=password,
        sentinel_username=query.get("sentinel_username"),
        sentinel_password=query.get("sentinel_password"),
        ssl=scheme == "rediss+sentinel",
    )


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, _, password = userinfo.partition(":")  # "user@host": a user without a password, as redis-py reads it
    return unquote(user) or None, unquote(password) or None


def _sentinels(hosts: str) -> tuple[tuple[str, int], ...]:
    if not hosts:
        raise ValueError(f"Sentinel URL: no sentinel host; expected {_SYNTAX}")
    return tuple(_host_port(entry) for entry in hosts.split(","))


def _host_port(entry: str) -> tuple[str, int]:
    if not entry:
        raise ValueError("Sentinel URL: empty entry in the sentinel host list (two commas, or a trailing comma)")
    if entry.startswith("["):
        host, bracket, after = entry[1:].partition("]")
        if not bracket or not host or (after and not after.startswith(":")):
            raise ValueError(f"Sentinel URL: malformed IPv6 sentinel {entry!r}; expected [address]:port")
        port_text = after[1:] if after else ""
        if after and not port_text:
            raise ValueError(f"Sentinel URL: sentinel {entry!r} has ':' but no port")
    else:
        if entry.count(":") > 1:
            raise ValueError(f"Sentinel URL: sentinel {entry!r}: put an IPv6 address in brackets, [address]:port")
        host, colon, port_text = entry.partition(":")
        if not host:
            raise ValueError(f"Sentinel URL: sentinel {entry!r} has no host")
        if colon and not port_text:
            raise ValueError(f"Sentinel URL: sentinel {entry!r} has ':' but no port")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"Sentinel URL: sentinel {entry!r}: port {port_text!r} is not 1-65535")
    return host, int(port_text)


def _query(query: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in _QUERY_KEYS:
            raise ValueError(f"Sentinel URL: unknown query key {key!r}; accepted: {', '.join(_QUERY_KEYS)}")
        if key in values:
            raise ValueError(f"Sentinel URL: query key {key!r} given twice")
        values[key] = value
    return {key: value for key, value in values.items() if value}
