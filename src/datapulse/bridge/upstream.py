"""Reaching a remote MCP server (the upstream of ``datapulse proxy``) over HTTP, in whichever era it speaks.

`open_streams` opens the SDK's client transport for one upstream transport: ``streamable_http_client`` for the
2026-07-28 and the 2025 Streamable HTTP (one endpoint; which era is settled by the handshake, see `client_mode`),
``sse_client`` for the 2024-11-05 HTTP+SSE transport. `candidates` says which transports a start tries, in order:
``auto`` tries Streamable HTTP (the SDK's ``mode="auto"``: ``server/discover``, then ``initialize``), then SSE.

Every HTTP request to the upstream carries the upstream's own credentials (`datapulse.bridge.credentials`), never the
inbound client's token (MCP security best practices, "Token Passthrough"). A 401 or 403 answer is turned into a
JSON-RPC error body naming the refusal (`DenialAsJsonRpc`), so the SDK client surfaces it to the waiting request
instead of a bare "Server returned an error response"; on the SSE transport, where the SDK cannot carry it, the
connection is ended and the refusal named when the waiting requests fail (``on_response``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Literal

import httpx2
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage
from opentelemetry import propagate

from datapulse.bridge.config import BridgedServer, UpstreamTransport

__all__ = [
    "CONNECT_TIMEOUT_S",
    "UPSTREAM_DENIED",
    "ConcreteTransport",
    "DenialAsJsonRpc",
    "ForwardingClients",
    "candidates",
    "client_mode",
    "denial_message",
    "open_streams",
]

ConcreteTransport = Literal["modern", "streamable-http", "sse"]
CONNECT_TIMEOUT_S: Final = 30.0
UPSTREAM_DENIED: Final = -32000
"""JSON-RPC error code (implementation-defined server error) when the upstream refused DataPulse's credentials."""

Streams = tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]]


def candidates(transport: UpstreamTransport) -> tuple[Literal["streamable", "sse"], ...]:
    """The client transports a start tries, in order: Streamable HTTP (either era) and/or HTTP+SSE."""
    if transport == "auto":
        return ("streamable", "sse")
    if transport == "sse":
        return ("sse",)
    return ("streamable",)


def client_mode(transport: UpstreamTransport) -> Literal["auto", "legacy"]:
    """The SDK ``Client`` mode for a transport: the 2025 handshake when pinned to it or on SSE, else ``auto``
    (``server/discover``, falling back to ``initialize``; a ``modern`` pin is checked after the handshake)."""
    return "legacy" if transport in ("streamable-http", "sse") else "auto"


def denial_message(server: str, status: int) -> str:
    """What a client is told when the upstream answered 401 or 403 to DataPulse."""
    what = "refused DataPulse's credentials" if status == 401 else "denied DataPulse access"
    return (
        f"the upstream server {server!r} {what} (HTTP {status}); check its upstream credentials "
        "(bearer_env, oauth, headers) in DataPulse's configuration"
    )


class DenialAsJsonRpc(httpx2.AsyncBaseTransport):
    """An httpx2 transport that reports 401 and 403 answers (see the module docstring).

    Args:
        inner: the real transport.
        server: the upstream's name (in the error message).
        on_response: called with every answer, before anything else sees it (401 and 403 also when an auth flow
            then retries them).
    """

    def __init__(
        self, inner: httpx2.AsyncBaseTransport, server: str, on_response: Callable[[httpx2.Response], None]
    ) -> None:
        self._inner = inner
        self._server = server
        self._on_response = on_response

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        self._on_response(response)
        if response.status_code not in (401, 403):
            return response
        request_id = _request_id(request)
        if request.method != "POST" or request_id is None:
            return response
        await response.aread()
        await response.aclose()
        error = {
            "code": UPSTREAM_DENIED,
            "message": denial_message(self._server, response.status_code),
            "data": {"reason": "upstream_unauthorized" if response.status_code == 401 else "upstream_forbidden"},
        }
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _BODY_HEADERS]
        return httpx2.Response(
            response.status_code,
            headers=[*headers, ("content-type", "application/json")],
            content=body,
            request=request,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


_BODY_HEADERS: Final = frozenset({"content-type", "content-length", "content-encoding", "transfer-encoding"})


def _request_id(request: httpx2.Request) -> str | int | None:
    """The JSON-RPC id of a request's body, or None (not a JSON-RPC request)."""
    try:
        message = json.loads(request.content)
    except (ValueError, httpx2.RequestNotRead):
        return None
    if not isinstance(message, dict):
        return None
    candidate = message.get("id")
    return candidate if isinstance(candidate, str | int) and not isinstance(candidate, bool) else None


FORWARD_SHARDS: Final = 32
"""How many HTTP clients (each its own connection pool) the pass-through spreads its requests over, in turn."""
FORWARD_KEEPALIVE_PER_SHARD: Final = 8
"""Idle connections each of them keeps open to the upstream."""


class ForwardingClients:
    """The HTTP clients of the gateway's pass-through to a 2026-07-28 upstream (`datapulse.bridge.passthrough`).

    Args:
        headers: sent on every request (the upstream credentials' static and bearer headers).
        auth: the upstream credentials' auth flow (OAuth client credentials: a 401 refreshes its token once, and the
            token is shared by every client), or None.

    `FORWARD_SHARDS` httpx2 clients sharing one TLS context, used in turn (`next`): httpcore's connection pool
    looks at each of its connections when a request starts and when its response closes, so one pool holding a
    connection per concurrent request costs more per request the more requests are in flight (at 256: about half
    again, measured); pools of a few connections each keep that short. Connect, write and pool waits time out after
    `CONNECT_TIMEOUT_S`; reads do not: the caller bounds the whole exchange (the server's ``request_timeout_s``).
    401 and 403 answers are left to the caller.
    """

    def __init__(self, headers: Mapping[str, str], auth: httpx2.Auth | None) -> None:
        verify = httpx2.create_ssl_context()
        sent = {"accept": "application/json, text/event-stream", "content-type": "application/json", **headers}
        self._clients = [
            httpx2.AsyncClient(
                headers=sent,
                auth=auth,
                verify=verify,
                timeout=httpx2.Timeout(CONNECT_TIMEOUT_S, read=None),
                limits=httpx2.Limits(max_connections=None, max_keepalive_connections=FORWARD_KEEPALIVE_PER_SHARD),
            )
            for _ in range(FORWARD_SHARDS)
        ]
        self.next: Callable[[], httpx2.AsyncClient] = itertools.cycle(self._clients).__next__
        """The client the next request uses."""

    async def aclose(self) -> None:
        """Close every client's connections."""
        for client in self._clients:
            await client.aclose()


def _client(
    spec: BridgedServer,
    headers: Mapping[str, str],
    auth: httpx2.Auth | None,
    on_response: Callable[[httpx2.Response], None],
    timeout: httpx2.Timeout,
) -> httpx2.AsyncClient:
    transport = DenialAsJsonRpc(httpx2.AsyncHTTPTransport(), spec.name, on_response)
    return httpx2.AsyncClient(
        headers=dict(headers),
        auth=auth,
        timeout=timeout,
        transport=transport,
        event_hooks={"request": [_carry_trace_context]},
    )


async def _carry_trace_context(request: httpx2.Request) -> None:
    """Put the current trace context on an upstream request as W3C ``traceparent``/``tracestate`` headers (the
    SDK's client also carries it in the request's ``_meta``, MCP's own carrier; an upstream or a proxy in between
    may read either). Nothing is added while no trace is active (no tracer provider, or an unsampled no-op span)."""
    propagate.inject(request.headers)


@asynccontextmanager
async def open_streams(
    spec: BridgedServer,
    kind: Literal["streamable", "sse"],
    headers: Mapping[str, str],
    auth: httpx2.Auth | None,
    on_response: Callable[[httpx2.Response], None],
) -> AsyncIterator[Streams]:
    """The SDK client transport's read and write streams for ``spec.url`` (see the module docstring).

    Args:
        spec: a remote bridged server (``spec.url`` set).
        kind: ``streamable`` (2026-07-28 or 2025 Streamable HTTP) or ``sse`` (2024-11-05 HTTP+SSE).
        headers: sent on every request (the upstream credentials' static and bearer headers).
        auth: the upstream credentials' auth flow (OAuth client credentials), or None.
        on_response: called with every upstream answer (its status and headers; the body is not read yet).

    Raises:
        httpx2.HTTPError: the upstream cannot be reached, or (SSE) its GET is refused.
    """
    assert spec.url is not None
    timeout = httpx2.Timeout(CONNECT_TIMEOUT_S, read=max(spec.request_timeout_s, CONNECT_TIMEOUT_S))
    if kind == "sse":

        def factory(
            headers: dict[str, str] | None = None,
            timeout: httpx2.Timeout | None = None,
            auth: httpx2.Auth | None = None,
        ) -> httpx2.AsyncClient:
            return _client(spec, headers or {}, auth, on_response, timeout or httpx2.Timeout(CONNECT_TIMEOUT_S))

        async with sse_client(
            spec.url,
            headers=dict(headers),
            timeout=CONNECT_TIMEOUT_S,
            sse_read_timeout=timeout.read or CONNECT_TIMEOUT_S,
            httpx_client_factory=factory,
            auth=auth,
        ) as streams:
            yield _typed(streams)
        return
    async with (
        _client(spec, headers, auth, on_response, timeout) as http,
        streamable_http_client(spec.url, http_client=http) as streams,
    ):
        yield _typed(streams)


def _typed(streams: Any) -> Streams:
    read, write = streams
    return read, write
