"""The round-robin proxy used by the cluster tests: rotation per request, streaming both ways, disconnects, 502."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from tests.support.rr_proxy import round_robin_proxy
from tests.support.servers import ReadyServer

pytestmark = pytest.mark.anyio

WAIT_S = 10.0


@dataclass
class Backend:
    """A plain ASGI backend that names itself, echoes requests, and serves SSE streams the test controls."""

    index: int
    release: anyio.Event = field(default_factory=anyio.Event)
    disconnected: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        path: str = scope["path"]
        if path == "/echo":
            await self._echo(scope, receive, send)
        elif path == "/stream":
            await self._sse_start(send)
            await self._sse_event(send, "one")
            await self.release.wait()
            await self._sse_event(send, "two")
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif path == "/hold":
            await self._sse_start(send)
            await self._sse_event(send, "held")
            while (await receive())["type"] != "http.disconnect":
                pass
            self.disconnected.set()
        else:
            await self._reply(send, 200, f"backend {self.index}".encode(), [(b"content-type", b"text/plain")])

    async def _echo(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            assert message["type"] == "http.request"
            body += message.get("body", b"")
            more = message.get("more_body", False)
        seen = {
            "backend": self.index,
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
            "body": body.decode(),
        }
        headers = [
            (b"content-type", b"application/json"),
            (b"mcp-session-id", b"session-from-backend"),
            (b"www-authenticate", b'Bearer realm="test"'),
            (b"retry-after", b"7"),
            (b"connection", b"keep-alive"),
        ]
        await self._reply(send, 201, json.dumps(seen).encode(), headers)

    @staticmethod
    async def _reply(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    @staticmethod
    async def _sse_start(send: Send) -> None:
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

    @staticmethod
    async def _sse_event(send: Send, data: str) -> None:
        await send({"type": "http.response.body", "body": f"data: {data}\n\n".encode(), "more_body": True})


@asynccontextmanager
async def serve_asgi(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port; yield its base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_level="warning",
        log_config=None,
        timeout_graceful_shutdown=2,
    )
    server = ReadyServer(config)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server._serve)
        with anyio.fail_after(WAIT_S):
            await server.ready.wait()
        try:
            yield f"http://127.0.0.1:{server.port}"
        finally:
            server.should_exit = True
            tasks.cancel_scope.deadline = anyio.current_time() + WAIT_S


@asynccontextmanager
async def serve_backends(backends: Sequence[Backend]) -> AsyncIterator[list[str]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(serve_asgi(backend)) for backend in backends]


def closed_port_url() -> str:
    """The URL of a loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_consecutive_requests_on_one_keepalive_connection_rotate_across_the_backends() -> None:
    backends = [Backend(i) for i in range(3)]
    async with (
        serve_backends(backends) as urls,
        round_robin_proxy(urls) as proxy,
        httpx2.AsyncClient(base_url=proxy.url, limits=httpx2.Limits(max_connections=1), timeout=WAIT_S) as client,
    ):
        names: list[str] = []
        client_ports: set[object] = set()
        with anyio.fail_after(WAIT_S):
            for _ in range(6):
                response = await client.get("/whoami")
                names.append(response.text)
                client_ports.add(response.extensions["network_stream"].get_extra_info("client_addr"))
        assert names == ["backend 0", "backend 1", "backend 2"] * 2
        assert proxy.hits == [2, 2, 2]
        assert len(client_ports) == 1  # one downstream connection, kept alive across all six requests


async def test_a_streamed_response_reaches_the_client_event_by_event() -> None:
    backend = Backend(0)
    async with (
        serve_backends([backend]) as urls,
        round_robin_proxy(urls) as proxy,
        httpx2.AsyncClient(base_url=proxy.url, timeout=WAIT_S) as client,
    ):
        with anyio.fail_after(WAIT_S):
            async with client.stream("GET", "/stream") as response:
                assert response.headers["content-type"] == "text/event-stream"
                lines = response.aiter_lines()
                assert await anext(lines) == "data: one"
                assert not backend.release.is_set()  # the first event arrived while the second was held back
                backend.release.set()
                rest = [line async for line in lines]
        assert [line for line in rest if line] == ["data: two"]


async def test_request_bodies_and_headers_reach_the_backend_and_response_headers_come_back() -> None:
    backends = [Backend(0), Backend(1)]

    async def chunks() -> AsyncIterator[bytes]:
        for part in (b'{"jsonrpc": "2.0", ', b'"id": 1, ', b'"method": "ping"}'):
            yield part

    async with (
        serve_backends(backends) as urls,
        round_robin_proxy(urls) as proxy,
        httpx2.AsyncClient(base_url=proxy.url, timeout=WAIT_S) as client,
    ):
        request_headers = {
            "Authorization": "Bearer secret-token",
            "Mcp-Session-Id": "session-from-client",
            "Mcp-Protocol-Version": "2025-06-18",
            "Content-Type": "application/json",
            "Proxy-Authorization": "Basic c2VjcmV0",
        }
        with anyio.fail_after(WAIT_S):
            sized = await client.post("/echo?a=1&b=two", content=b'{"x": 1}', headers=request_headers)
            chunked = await client.put("/echo", content=chunks(), headers=request_headers)

        assert sized.status_code == 201
        seen = sized.json()
        assert (seen["backend"], seen["method"], seen["path"], seen["query"]) == (0, "POST", "/echo", "a=1&b=two")
        assert seen["body"] == '{"x": 1}'
        headers = dict(seen["headers"])
        assert headers["authorization"] == "Bearer secret-token"
        assert headers["mcp-session-id"] == "session-from-client"
        assert headers["mcp-protocol-version"] == "2025-06-18"
        assert headers["content-type"] == "application/json"
        assert headers["content-length"] == "8"
        assert headers["host"] == urls[0].removeprefix("http://")
        assert "connection" not in headers
        assert "proxy-authorization" not in headers

        assert sized.headers["content-type"] == "application/json"
        assert sized.headers["mcp-session-id"] == "session-from-backend"
        assert sized.headers["www-authenticate"] == 'Bearer realm="test"'
        assert sized.headers["retry-after"] == "7"
        assert sized.headers["content-length"] == str(len(sized.content))

        seen = chunked.json()
        assert (seen["backend"], seen["method"]) == (1, "PUT")
        assert seen["body"] == '{"jsonrpc": "2.0", "id": 1, "method": "ping"}'
        assert dict(seen["headers"])["host"] == urls[1].removeprefix("http://")
        assert proxy.hits == [1, 1]


async def test_a_backend_that_is_down_answers_502_and_the_rotation_goes_on() -> None:
    backend = Backend(0)
    async with (
        serve_backends([backend]) as urls,
        round_robin_proxy([urls[0], closed_port_url()]) as proxy,
        httpx2.AsyncClient(base_url=proxy.url, timeout=WAIT_S) as client,
    ):
        with anyio.fail_after(WAIT_S):
            responses = [await client.get("/whoami") for _ in range(4)]
        assert [response.status_code for response in responses] == [200, 502, 200, 502]
        assert proxy.hits == [2, 2]
        failed = responses[1]
        assert failed.headers["content-type"].startswith("text/plain")
        assert "Bad Gateway" in failed.text


async def test_closing_a_streamed_response_disconnects_the_backend() -> None:
    backend = Backend(0)
    async with (
        serve_backends([backend]) as urls,
        round_robin_proxy(urls) as proxy,
        httpx2.AsyncClient(base_url=proxy.url, timeout=WAIT_S) as client,
    ):
        with anyio.fail_after(WAIT_S):
            async with client.stream("GET", "/hold") as response:
                assert await anext(response.aiter_lines()) == "data: held"
                assert not backend.disconnected.is_set()
            await backend.disconnected.wait()


async def test_leaving_the_proxy_with_a_stream_open_is_prompt_and_ends_the_stream() -> None:
    backend = Backend(0)
    async with serve_backends([backend]) as urls, AsyncExitStack() as stack:
        client = await stack.enter_async_context(httpx2.AsyncClient(timeout=WAIT_S))
        with anyio.fail_after(WAIT_S / 2):  # well inside the proxy's own shutdown bound
            async with round_robin_proxy(urls) as proxy:
                response = await stack.enter_async_context(client.stream("GET", f"{proxy.url}/hold"))
                lines = response.aiter_lines()
                assert await anext(lines) == "data: held"
            rest = [line async for line in lines]  # the proxy ended the stream; the client is not left hanging
            await backend.disconnected.wait()
        assert [line for line in rest if line] == []
