"""Closed-loop load generator: N clients, each on its own connection(s), each with one call in flight.

Client kinds (one instance per simulated client; ``setup`` is done for every client before the timed window):

``modern``   POST /mcp, 2026-07-28 stateless: ``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name`` headers and the
             ``params._meta`` envelope (protocol version, client capabilities, client info) on every request.
``session``  2025-11-25 Streamable HTTP: ``initialize`` + ``notifications/initialized`` in setup (one session per
             client connection), then ``tools/call`` with ``Mcp-Session-Id``; the session is DELETEd in teardown.
``sse``      2024-11-05 HTTP+SSE: GET /sse held open, ``endpoint`` event, POST initialize (result read from the
             stream) and initialized; then POST tools/call -> 202 on a keep-alive POST connection, result read from
             the GET stream. Latency: POST sent -> result event received.
``api``      the DataPulse API: GET /events?session_id= held open, POST /message?session_id= ``call_tool`` -> 202,
             ``tool_result`` event on the stream. Latency as for ``sse``.
``ceiling``  POST /rpc on a bare Starlette JSON-RPC route: the calibration ceiling for this client.

Every call gets a run-wide unique JSON-RPC id and a unique echo text ``bench-echo-<id>``; every response is
parsed and checked (status, matching id, the echo text back, no ``error`` member, not ``isError``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from bench.httpclient import (
    HttpConnection,
    Response,
    build_request,
    connect,
    parse_sse_body,
    post_prefix,
    with_body,
)

IDS = itertools.count(1)
"""JSON-RPC ids, unique across the whole run (never reused across cells, sessions or servers)."""

HANDSHAKE_VERSION = "2025-11-25"
SSE_VERSION = "2024-11-05"
MODERN_VERSION = "2026-07-28"
ACCEPT_BOTH = "application/json, text/event-stream"

CALL_BODY = b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"message":"%s"}}}'
MODERN_BODY = (
    b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"message":"%s"},'
    b'"_meta":{"io.modelcontextprotocol/protocolVersion":"' + MODERN_VERSION.encode() + b'",'
    b'"io.modelcontextprotocol/clientCapabilities":{},'
    b'"io.modelcontextprotocol/clientInfo":{"name":"datapulse-bench","version":"1.0"}}}}'
)
API_BODY = b'{"type":"call_tool","request_id":%d,"data":{"name":"echo","arguments":{"message":"%s"}}}'
INITIALIZE_BODY = (
    b'{"jsonrpc":"2.0","id":%d,"method":"initialize","params":{"protocolVersion":"%s","capabilities":{},'
    b'"clientInfo":{"name":"datapulse-bench","version":"1.0"}}}'
)
INITIALIZED_BODY = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'

SETUP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Endpoint:
    """Where a target server listens, and the bearer token to send (None: no Authorization header)."""

    host: str
    port: int
    token: str | None = None

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    def headers(self, *extra: tuple[str, str]) -> list[tuple[str, str]]:
        base = [("Authorization", f"Bearer {self.token}")] if self.token else []
        return [*base, *extra]


class CallFailed(Exception):
    """A call got a wrong answer (counted as bad; the client goes on)."""


def echo_text(rid: int) -> bytes:
    return b"bench-echo-%d" % rid


def check_result(msg: Any, rid: int, text: bytes) -> bool:
    """A JSON-RPC response to ``rid`` whose result echoes ``text`` (no error, not isError)."""
    try:
        if msg.get("id") != rid or "error" in msg:
            return False
        result = msg["result"]
        return bool(result["content"][0]["text"] == text.decode()) and not result.get("isError", False)
    except (AttributeError, KeyError, IndexError, TypeError):
        return False


def rpc_message(response: Response) -> Any:
    """The JSON-RPC response carried by an HTTP response (``application/json`` or an SSE body)."""
    if response.content_type.startswith(b"application/json"):
        return json.loads(response.body)
    if response.content_type.startswith(b"text/event-stream"):
        for _event, data in parse_sse_body(response.body):
            msg = json.loads(data)
            if "id" in msg and ("result" in msg or "error" in msg):
                return msg
    return None


class Client:
    """One simulated client. ``call`` returns ``(ok, latency_s, completed_at)``."""

    kind = "?"

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.errors: list[str] = []

    async def setup(self) -> None:
        raise NotImplementedError

    async def call(self, rid: int) -> tuple[bool, float, float]:
        raise NotImplementedError

    async def teardown(self) -> None:
        raise NotImplementedError


class PostClient(Client):
    """Request/response clients (modern, ceiling, session): one keep-alive connection."""

    path = "/mcp"
    body = MODERN_BODY

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self.conn: HttpConnection | None = None
        self.prefix = b""

    def _headers(self) -> list[tuple[str, str]]:
        return self.endpoint.headers(("Content-Type", "application/json"), ("Accept", ACCEPT_BOTH))

    async def setup(self) -> None:
        self.conn = await connect(self.endpoint.host, self.endpoint.port)
        self.prefix = post_prefix(self.path, self.endpoint.authority, self._headers())

    async def call(self, rid: int) -> tuple[bool, float, float]:
        assert self.conn is not None
        text = echo_text(rid)
        started = time.perf_counter()
        response = await self.conn.request(with_body(self.prefix, self.body % (rid, text)))
        ok = response.status == 200 and check_result(rpc_message(response), rid, text)
        if not ok and len(self.errors) < 3:
            self.errors.append(f"HTTP {response.status}: {response.body[:300]!r}")
        return ok, response.done_at - started, response.done_at

    async def teardown(self) -> None:
        if self.conn is not None:
            self.conn.close()


class ModernClient(PostClient):
    kind = "modern"

    def _headers(self) -> list[tuple[str, str]]:
        return [
            *super()._headers(),
            ("MCP-Protocol-Version", MODERN_VERSION),
            ("Mcp-Method", "tools/call"),
            ("Mcp-Name", "echo"),
        ]


class CeilingClient(PostClient):
    kind = "ceiling"
    path = "/rpc"
    body = CALL_BODY


class SessionClient(PostClient):
    """2025-11-25 Streamable HTTP with one session per client connection."""

    kind = "session"
    body = CALL_BODY

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self.session_id: str | None = None

    async def setup(self) -> None:
        self.conn = conn = await connect(self.endpoint.host, self.endpoint.port)
        rid = next(IDS)
        init = post_prefix(self.path, self.endpoint.authority, super()._headers())
        response = await conn.request(with_body(init, INITIALIZE_BODY % (rid, HANDSHAKE_VERSION.encode())))
        msg = rpc_message(response)
        session_id = response.headers.get(b"mcp-session-id")
        if response.status != 200 or session_id is None or not isinstance(msg, dict) or "result" not in msg:
            raise CallFailed(f"initialize: HTTP {response.status} {response.body[:300]!r}")
        self.session_id = session_id.decode()
        self.prefix = post_prefix(self.path, self.endpoint.authority, self._headers())
        response = await conn.request(with_body(self.prefix, INITIALIZED_BODY))
        if response.status != 202:
            raise CallFailed(f"notifications/initialized: HTTP {response.status} {response.body[:300]!r}")

    def _headers(self) -> list[tuple[str, str]]:
        assert self.session_id is not None
        return [
            *super()._headers(),
            ("Mcp-Session-Id", self.session_id),
            ("MCP-Protocol-Version", HANDSHAKE_VERSION),
        ]

    async def teardown(self) -> None:
        conn = self.conn
        if conn is not None and not conn.closed and self.session_id is not None:
            request = build_request("DELETE", self.path, self.endpoint.authority, self._headers())
            try:
                response = await asyncio.wait_for(conn.request(request), 10)
                if response.status not in (200, 202, 204):
                    self.errors.append(f"DELETE: HTTP {response.status}")
            except (ConnectionError, TimeoutError) as exc:
                self.errors.append(f"DELETE: {exc}")
        await super().teardown()


class StreamClient(Client):
    """Clients whose results arrive on a held-open GET stream (2024-11-05 HTTP+SSE and the DataPulse API)."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self.stream: HttpConnection | None = None
        self.post: HttpConnection | None = None
        self.prefix = b""
        self._pending_id: int | str | None = None
        self._pending: asyncio.Future[tuple[Any, float]] | None = None
        self.unexpected = 0

    def deliver(self, key: int | str | None, msg: Any, arrived: float) -> None:
        pending = self._pending
        if pending is not None and key == self._pending_id and not pending.done():
            self._pending = None
            pending.set_result((msg, arrived))
        else:
            self.unexpected += 1
            if len(self.errors) < 3:
                self.errors.append(f"unexpected stream event: {str(msg)[:300]}")

    def expect(self, key: int | str) -> asyncio.Future[tuple[Any, float]]:
        future: asyncio.Future[tuple[Any, float]] = asyncio.get_running_loop().create_future()
        self._pending_id = key
        self._pending = future
        return future

    def stream_alive(self) -> bool:
        return self.stream is not None and not self.stream.closed and not self.stream.stream_ended

    async def teardown(self) -> None:
        for conn in (self.post, self.stream):
            if conn is not None:
                conn.close()


class SseClient(StreamClient):
    """2024-11-05 HTTP+SSE: GET /sse, ``endpoint`` event, initialize handshake over POST + stream."""

    kind = "sse"

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self._endpoint_event: asyncio.Future[str] | None = None
        self.post_path = ""

    def _on_event(self, event: bytes, data: bytes, arrived: float) -> None:
        if event == b"endpoint":
            waiter = self._endpoint_event
            if waiter is not None and not waiter.done():
                waiter.set_result(data.decode())
            return
        try:
            msg = json.loads(data)
        except ValueError:
            msg = {"unparsable": data[:200].decode("latin-1")}
        self.deliver(msg.get("id") if isinstance(msg, dict) else None, msg, arrived)

    async def open_session(self) -> None:
        """GET /sse + endpoint event + POST initialize (result read from the stream) + POST initialized."""
        ep = self.endpoint
        self._endpoint_event = asyncio.get_running_loop().create_future()
        self.stream = await connect(ep.host, ep.port)
        get = build_request("GET", "/sse", ep.authority, ep.headers(("Accept", "text/event-stream")))
        await self.stream.open_stream(get, self._on_event)
        self.post_path = await asyncio.wait_for(self._endpoint_event, SETUP_TIMEOUT_S)
        self.post = await connect(ep.host, ep.port)
        self.prefix = post_prefix(self.post_path, ep.authority, ep.headers(("Content-Type", "application/json")))
        rid = next(IDS)
        result = self.expect(rid)
        response = await self.post.request(with_body(self.prefix, INITIALIZE_BODY % (rid, SSE_VERSION.encode())))
        if response.status != 202:
            raise CallFailed(f"initialize: HTTP {response.status} {response.body[:300]!r}")
        msg, _ = await asyncio.wait_for(result, SETUP_TIMEOUT_S)
        if "result" not in msg:
            raise CallFailed(f"initialize failed: {str(msg)[:300]}")
        response = await self.post.request(with_body(self.prefix, INITIALIZED_BODY))
        if response.status != 202:
            raise CallFailed(f"notifications/initialized: HTTP {response.status} {response.body[:300]!r}")

    async def setup(self) -> None:
        await self.open_session()

    def close_post(self) -> None:
        """Close the keep-alive POST connection: the session is then held by its GET stream only."""
        if self.post is not None:
            self.post.close()
            self.post = None

    async def call(self, rid: int) -> tuple[bool, float, float]:
        if self.post is None:
            self.post = await connect(self.endpoint.host, self.endpoint.port)
        text = echo_text(rid)
        result = self.expect(rid)
        started = time.perf_counter()
        response = await self.post.request(with_body(self.prefix, CALL_BODY % (rid, text)))
        msg, arrived = await result
        ok = response.status == 202 and check_result(msg, rid, text)
        if not ok and len(self.errors) < 3:
            self.errors.append(f"HTTP {response.status}; stream message {str(msg)[:300]}")
        return ok, arrived - started, arrived


class ApiClient(StreamClient):
    """The DataPulse API: GET /events?session_id= and POST /message?session_id= (``call_tool``)."""

    kind = "api"

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self.session_id = "bench-" + uuid.uuid4().hex

    def _on_event(self, _event: bytes, data: bytes, arrived: float) -> None:
        try:
            msg = json.loads(data)
        except ValueError:
            msg = {"unparsable": data[:200].decode("latin-1")}
        self.deliver(msg.get("request_id") if isinstance(msg, dict) else None, msg, arrived)

    async def setup(self) -> None:
        ep = self.endpoint
        self.stream = await connect(ep.host, ep.port)
        get = build_request(
            "GET", f"/events?session_id={self.session_id}", ep.authority, ep.headers(("Accept", "text/event-stream"))
        )
        await self.stream.open_stream(get, self._on_event)
        self.post = await connect(ep.host, ep.port)
        headers = ep.headers(("Content-Type", "application/json"))
        self.prefix = post_prefix(f"/message?session_id={self.session_id}", ep.authority, headers)

    async def call(self, rid: int) -> tuple[bool, float, float]:
        assert self.post is not None
        text = echo_text(rid)
        result = self.expect(rid)
        started = time.perf_counter()
        response = await self.post.request(with_body(self.prefix, API_BODY % (rid, text)))
        msg, arrived = await result
        ok = (
            response.status == 202
            and b'"queued"' in response.body
            and isinstance(msg, dict)
            and msg.get("type") == "tool_result"
            and msg.get("request_id") == rid
            and _api_text(msg.get("data")) == text.decode()
        )
        if not ok and len(self.errors) < 3:
            self.errors.append(f"HTTP {response.status} {response.body[:100]!r}; event {str(msg)[:300]}")
        return ok, arrived - started, arrived


def _api_text(data: Any) -> Any:
    if not isinstance(data, dict):
        return None
    if "result" in data:
        return data["result"]
    content = data.get("content")
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return content[0].get("text")
    return None


CLIENTS: dict[str, type[Client]] = {
    "modern": ModernClient,
    "session": SessionClient,
    "sse": SseClient,
    "api": ApiClient,
    "ceiling": CeilingClient,
}


@dataclass
class CellResult:
    """One cell: one target at one concurrency for one window."""

    concurrency: int
    duration_s: float
    calls: int = 0
    ok: int = 0
    bad: int = 0
    timeouts: int = 0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    cpu_busy: list[float] = field(default_factory=list)
    """Busy fraction of each CPU during the window (all processes: the noise on a shared machine)."""
    errors: list[str] = field(default_factory=list)
    setup_failed: int = 0
    check_failures: int = 0
    """Checks beyond the calls' own answers that failed (a benchmark's own checks); any flags the cell."""
    extra: dict[str, Any] = field(default_factory=dict)
    """A benchmark's own figures for this cell (numbers or lists of numbers), reported by name."""

    @property
    def rate(self) -> float:
        return self.calls / self.duration_s if self.duration_s else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    @property
    def flagged(self) -> bool:
        return self.bad > 0 or self.timeouts > 0 or self.setup_failed > 0 or self.check_failures > 0 or self.calls == 0

    @property
    def failed(self) -> int:
        """Calls answered wrongly, timed out, or clients whose setup failed."""
        return self.bad + self.timeouts + self.setup_failed

    @property
    def cpu_per_call_us(self) -> float:
        """Server CPU over the window per call completed in it, in µs."""
        return self.server_cpu * self.duration_s / self.calls * 1e6 if self.calls else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "duration_s": self.duration_s,
            "calls": self.calls,
            "calls_per_s": round(self.rate, 1),
            "p50_ms": round(self.percentile(0.50), 3),
            "p99_ms": round(self.percentile(0.99), 3),
            "ok": self.ok,
            "bad": self.bad,
            "timeouts": self.timeouts,
            "setup_failed": self.setup_failed,
            "client_cpu": round(self.client_cpu, 3),
            "server_cpu": round(self.server_cpu, 3),
            "cpu_busy": [round(b, 3) for b in self.cpu_busy],
            "check_failures": self.check_failures,
            "errors": self.errors[:5],
            **{name: _rounded(value) for name, value in self.extra.items()},
        }


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


async def gather_limited(coros: list[Any], limit: int) -> list[Any]:
    """Run coroutines with at most ``limit`` at a time; exceptions are returned, not raised."""
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros), return_exceptions=True)


async def run_cell(
    kind: str,
    endpoint: Endpoint,
    concurrency: int,
    duration_s: float,
    *,
    server_cpu_seconds: Any = None,
    grace_s: float = 15.0,
    setup_parallel: int = 64,
    prepare: Callable[[list[Any]], Awaitable[None]] | None = None,
    finish: Callable[[list[Any], CellResult], Awaitable[None]] | None = None,
) -> CellResult:
    """Set up ``concurrency`` clients, run them closed-loop for ``duration_s``, check every answer, tear down.

    Throughput and latency count the calls completed inside the window; calls in flight at its end are still
    checked (ok/bad) but not timed. A client whose call does not complete within ``grace_s`` after the window is
    cancelled and counted as a timeout. ``server_cpu_seconds`` is called exactly twice, at the start and at the
    end of the window. ``prepare(clients)`` runs after every client's setup, before the window (an exception
    counts as a failed setup); ``finish(clients, result)`` runs last, after the clients' teardown.
    """
    cls = CLIENTS[kind]
    clients = [cls(endpoint) for _ in range(concurrency)]
    result = CellResult(concurrency, duration_s)
    outcomes = await gather_limited([asyncio.wait_for(c.setup(), SETUP_TIMEOUT_S) for c in clients], setup_parallel)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    if not failed and prepare is not None:
        try:
            await prepare(clients)
        except Exception as exc:  # counted as a failed setup
            failed = [exc]
    if failed:
        result.setup_failed = len(failed)
        result.errors.append(f"setup: {failed[0]!r}")
        await gather_limited([c.teardown() for c in clients], setup_parallel)
        if finish is not None:
            await finish(clients, result)
        return result

    latencies = result.latencies_ms
    start = time.perf_counter()
    end = start + duration_s
    cpu_start = time.process_time()
    server_start = server_cpu_seconds() if server_cpu_seconds else 0.0
    per_cpu_start = psutil.cpu_times(percpu=True)
    usage: dict[str, float] = {}

    async def sample_cpu() -> None:
        await asyncio.sleep(duration_s)
        usage["client"] = (time.process_time() - cpu_start) / duration_s
        if server_cpu_seconds:
            usage["server"] = (server_cpu_seconds() - server_start) / duration_s
        for before, after in zip(per_cpu_start, psutil.cpu_times(percpu=True), strict=True):
            total = sum(after) - sum(before)
            idle = (after.idle + after.iowait) - (before.idle + before.iowait)
            result.cpu_busy.append((total - idle) / total if total > 0 else 0.0)

    async def worker(client: Client) -> None:
        while time.perf_counter() < end:
            rid = next(IDS)
            try:
                ok, latency, completed = await client.call(rid)
            except (ConnectionError, CallFailed) as exc:
                result.bad += 1
                if len(result.errors) < 5:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                return
            if ok:
                result.ok += 1
            else:
                result.bad += 1
            if completed <= end:
                result.calls += 1
                latencies.append(latency * 1000.0)

    sampler = asyncio.create_task(sample_cpu())
    tasks = [asyncio.create_task(worker(c)) for c in clients]
    _done, pending = await asyncio.wait(tasks, timeout=duration_s + grace_s)
    for task in pending:
        task.cancel()
    result.timeouts = len(pending)
    await sampler
    result.client_cpu = usage.get("client", 0.0)
    result.server_cpu = usage.get("server", 0.0)
    await gather_limited([c.teardown() for c in clients], setup_parallel)
    for client in clients:
        for error in client.errors:
            if len(result.errors) < 5:
                result.errors.append(error)
        if isinstance(client, StreamClient) and client.unexpected:
            result.bad += client.unexpected
    if finish is not None:
        await finish(clients, result)
    return result
