"""An SSRF-safe HTTP GET for the ``fetch_url`` demo tool.

Refuses, by default, every destination that is not a globally routable address: loopback, private
(RFC 1918, RFC 4193), link-local (including 169.254.169.254 and other cloud metadata endpoints),
carrier-grade NAT, multicast, reserved and unspecified addresses, and IPv4-mapped forms of those.
The check runs on the addresses the host name actually resolves to, the connection is made to the
checked address (so a DNS answer cannot change between check and connect), and it is repeated for
every redirect hop. An allowlist of host names or CIDRs lifts the refusal for chosen destinations.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import anyio
import httpx2

MAX_REDIRECTS = 5
SNIPPET_CHARS = 500

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchRefused(Exception):
    """The URL or one of its redirects points somewhere the fetcher may not go (the message says why)."""


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What ``fetch_url`` reports.

    Attributes:
        url: the final URL after redirects.
        status: the final HTTP status code.
        content_type: the response's Content-Type, or "".
        snippet: the first `SNIPPET_CHARS` characters of the decoded body.
        bytes_read: body bytes read (at most ``max_bytes``).
        truncated: whether the body was longer than what was read.
    """

    url: str
    status: int
    content_type: str
    snippet: str
    bytes_read: int
    truncated: bool


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Limits of one fetch.

    Attributes:
        timeout_s: bound on the whole fetch, redirects included, in seconds.
        max_bytes: most body bytes read from the final response.
        allowlist: host names (exact, case-insensitive) or CIDRs exempt from the address check.
    """

    timeout_s: float = 5.0
    max_bytes: int = 1024 * 1024
    allowlist: Sequence[str] = ()

    def host_allowlisted(self, host: str) -> bool:
        """Whether ``host`` is an allowlisted name (exact, case-insensitive)."""
        return host.lower() in {entry.lower() for entry in self.allowlist if "/" not in entry and not _is_ip(entry)}

    def address_allowlisted(self, address: IPAddress) -> bool:
        """Whether ``address`` falls in an allowlisted CIDR or equals an allowlisted IP."""
        for entry in self.allowlist:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        return False


def is_public_address(address: IPAddress) -> bool:
    """Whether ``address`` is globally routable (and not an IPv4-mapped non-public address)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public_address(address.ipv4_mapped)
    return address.is_global and not address.is_multicast


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses ``host`` resolves to (an IP literal resolves to itself).

    Raises:
        FetchRefused: the name does not resolve.
    """
    literal = host.strip("[]")
    if _is_ip(literal):
        return [ipaddress.ip_address(literal)]
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FetchRefused(f"cannot resolve {host!r}: {exc}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def checked_address(host: str, port: int, policy: FetchPolicy) -> IPAddress:
    """Resolve ``host`` and return an address the policy allows connecting to.

    Every resolved address must be allowed, so a name with one public and one private answer is
    refused (the client library could pick either).

    Raises:
        FetchRefused: the name does not resolve, or resolves to a refused address.
    """
    addresses = await resolve(host, port)
    if not addresses:
        raise FetchRefused(f"{host!r} resolves to no address")
    if policy.host_allowlisted(host):
        return addresses[0]
    for address in addresses:
        if not is_public_address(address) and not policy.address_allowlisted(address):
            raise FetchRefused(
                f"refusing to fetch {host!r}: it resolves to {address}, a loopback, private, link-local or "
                "otherwise non-public address (allow it with DATAPULSE_FETCH_ALLOWLIST)"
            )
    return addresses[0]


async def safe_fetch(url: str, policy: FetchPolicy) -> FetchResult:
    """GET ``url`` under ``policy``, following up to `MAX_REDIRECTS` redirects, each one re-checked.

    Raises:
        FetchRefused: a refused scheme or destination, too many redirects, or the timeout.
        httpx2.HTTPError: the connection or protocol failed.
    """
    try:
        with anyio.fail_after(policy.timeout_s):
            async with httpx2.AsyncClient(trust_env=False, follow_redirects=False) as client:
                for _hop in range(MAX_REDIRECTS + 1):
                    response, body, truncated = await _fetch_once(client, url, policy)
                    location = response.headers.get("location")
                    if response.is_redirect and location:
                        url = urljoin(url, location)
                        continue
                    text = body.decode(response.encoding or "utf-8", errors="replace")
                    return FetchResult(
                        url=url,
                        status=response.status_code,
                        content_type=response.headers.get("content-type", ""),
                        snippet=text[:SNIPPET_CHARS],
                        bytes_read=len(body),
                        truncated=truncated,
                    )
    except TimeoutError:
        raise FetchRefused(f"fetching took longer than {policy.timeout_s:g} s") from None
    raise FetchRefused(f"more than {MAX_REDIRECTS} redirects")


async def _fetch_once(client: httpx2.AsyncClient, url: str, policy: FetchPolicy) -> tuple[httpx2.Response, bytes, bool]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchRefused(f"only http and https URLs can be fetched, not {parts.scheme or 'a relative URL'!r}")
    host = parts.hostname
    if not host:
        raise FetchRefused("the URL has no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = await checked_address(host, port, policy)
    literal = f"[{address}]" if address.version == 6 else str(address)
    target = parts._replace(netloc=f"{literal}:{port}").geturl()
    host_header = parts.netloc.rpartition("@")[2]
    request = client.build_request(
        "GET",
        target,
        headers={"Host": host_header, "User-Agent": "datapulse-fetch/1"},
        extensions={"sni_hostname": host} if parts.scheme == "https" else {},
    )
    response = await client.send(request, stream=True)
    try:
        chunks: list[bytes] = []
        size = 0
        truncated = False
        if not response.is_redirect:
            async for chunk in response.aiter_bytes():
                room = policy.max_bytes - size
                if len(chunk) > room:
                    chunks.append(chunk[:room])
                    size += room
                    truncated = True
                    break
                chunks.append(chunk)
                size += len(chunk)
        return response, b"".join(chunks), truncated
    finally:
        await response.aclose()
