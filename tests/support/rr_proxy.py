"""A tiny round-robin HTTP reverse proxy for tests: every request (not every connection) goes to the next backend.

It stands in for a load balancer in front of several DataPulse instances: a client that keeps one keep-alive
connection to the proxy still lands each request on a different instance. Request and response bodies are
streamed both ways (an SSE response flows event by event), a client disconnect closes the upstream response,
and an unreachable backend answers 502. It runs under uvicorn inside the test's event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import httpx2
import uvicorn
from starlette.types import Message, Receive, Scope, Send

from tests.support.servers import STARTUP_TIMEOUT_S, ReadyServer

CONNECT_TIMEOUT_S = 5.0
SHUTDOWN_TIMEOUT_S = 10
# Hop-by-hop headers (RFC 9110 section 7.6.1) are never forwarded; neither is Host (httpx2 sets the backend's).
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade"})


async def _send_502(send: Send, reason: str) -> None:
    body = f"502 Bad Gateway: {reason}\n".encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 502, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _end_of_body() -> Message:
    return {"type": "http.response.body", "body": b"", "more_body": False}


class _ClientGone(Exception):
    """The downstream client disconnected while its request body was being forwarded."""


class _UpstreamBroke(Exception):
    """The backend failed in the middle of a length-delimited body: the downstream connection must be dropped."""


def _forwardable(name: bytes) -> bool:
    name = name.lower()
    return name not in _HOP_BY_HOP and not name.startswith(b"proxy-")


@dataclass
class RoundRobinProxy:
    """A running proxy: its base URL and how many requests each backend was sent (by index in `backends`).

    ``cut()`` ends every request in flight at once, as a load balancer that drops its connections does: open
    SSE streams end mid-stream (the client sees the response end) and pending requests fail.
    """

    url: str
    backends: tuple[str, ...]
    hits: list[int]
    cut: Callable[[], None] = lambda: None


@dataclass
class _ProxyApp:
    """The pure ASGI app (no BaseHTTPMiddleware, so streaming and disconnects pass straight through)."""

    backends: tuple[str, ...]
    client: httpx2.AsyncClient
    hits: list[int]
    _next: int = 0
    _active: set[anyio.CancelScope] = field(default_factory=set)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not proxied
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        index = self._next % len(self.backends)
        self._next += 1
        self.hits[index] += 1
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        with anyio.CancelScope() as request_scope:
            self._active.add(request_scope)
            try:
                await self._proxy(self.backends[index], scope, receive, tracked)
            finally:
                self._active.discard(request_scope)
        if request_scope.cancelled_caught and not started:  # cut before any answer: a gateway error, not a 500
            await _send_502(send, "the proxy cut this request before the backend answered")

    def cancel_all(self) -> None:
        """Cancel every request in flight (open SSE streams must not hold up shutdown)."""
        for request_scope in list(self._active):
            request_scope.cancel()

    async def _proxy(self, backend: str, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        target = backend + raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        incoming: list[tuple[bytes, bytes]] = scope["headers"]
        # Field values exclude surrounding whitespace (RFC 9110 section 5.5); a proxy forwards them trimmed.
        headers = [(k, v.strip(b" \t")) for k, v in incoming if _forwardable(k) and k.lower() != b"host"]
        has_body = any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in incoming)
        body_read = anyio.Event()

        async def request_body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    break
            body_read.set()

        if not has_body:
            body_read.set()
        # A bare Request (not client.build_request) is sent as-is: no client default headers (Accept-Encoding,
        # User-Agent...) are added to what the downstream client sent.
        request = httpx2.Request(scope["method"], target, headers=headers, content=request_body() if has_body else None)

        async def watch_disconnect(cancel_scope: anyio.CancelScope) -> None:
            await body_read.wait()  # the request body is receive()'s to read until then
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    cancel_scope.cancel()
                    return

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch_disconnect, tasks.cancel_scope)
            await self._exchange(backend, request, send)
            tasks.cancel_scope.cancel()

    async def _exchange(self, backend: str, request: httpx2.Request, send: Send) -> None:
        try:
            response = await self.client.send(request, stream=True)
        except _ClientGone:
            return
        except httpx2.TransportError as exc:
            await _send_502(send, f"backend {backend} failed ({type(exc).__name__}: {exc})")
            return
        try:
            headers = [(k, v) for k, v in response.headers.raw if _forwardable(k)]
            length_delimited = any(k.lower() == b"content-length" for k, _ in headers)
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx2.TransportError as exc:
                # The backend went away mid-body. A chunked response (SSE) is finished cleanly, as when the
                # backend closes it; a length-delimited one cannot be, so the downstream connection is dropped.
                if length_delimited:
                    raise _UpstreamBroke(f"backend {backend} failed mid-body: {exc}") from exc
            except anyio.get_cancelled_exc_class():
                # Client gone (uvicorn then ignores the send) or proxy shutting down: end the response cleanly.
                if not length_delimited:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                        await send(_end_of_body())
                raise
            await send(_end_of_body())
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_TIMEOUT_S):
                await response.aclose()


@asynccontextmanager
async def round_robin_proxy(backends: Sequence[str]) -> AsyncIterator[RoundRobinProxy]:
    """Serve a round-robin reverse proxy to ``backends`` (base URLs) on a free loopback port until exit."""
    if not backends:
        raise ValueError("round_robin_proxy needs at least one backend")
    bases = tuple(backend.rstrip("/") for backend in backends)
    hits = [0] * len(bases)
    client = httpx2.AsyncClient(
        timeout=httpx2.Timeout(None, connect=CONNECT_TIMEOUT_S),
        limits=httpx2.Limits(max_connections=None, max_keepalive_connections=20),
        trust_env=False,  # never route test traffic through an HTTP(S)_PROXY from the environment
    )
    app = _ProxyApp(bases, client, hits)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_level="warning",
        log_config=None,
        access_log=False,
        server_header=False,  # pass the backend's Server and Date headers through instead of adding ours
        date_header=False,
        timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S,
    )
    server = ReadyServer(config)
    async with client, anyio.create_task_group() as tasks:
        tasks.start_soon(server._serve)  # _serve: uvicorn's serve() without taking over the signal handlers
        with anyio.fail_after(STARTUP_TIMEOUT_S):
            await server.ready.wait()
        try:
            yield RoundRobinProxy(f"http://127.0.0.1:{server.port}", bases, hits, app.cancel_all)
        finally:
            app.cancel_all()
            server.should_exit = True
            tasks.cancel_scope.deadline = anyio.current_time() + SHUTDOWN_TIMEOUT_S
