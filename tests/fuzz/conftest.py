"""One real DataPulse server for the whole fuzz module, and the clients around it.

The server is the test-suite's in-process uvicorn (`serve_in_process`) on a free port, run in a
blocking portal's event loop so that synchronous Hypothesis tests can hit it with a synchronous
``httpx2.Client`` over real sockets. Long-lived SSE streams are read by `StreamWatcher` tasks in the
same event loop; the test thread waits on them through the portal, every wait bounded.

Two principals take part: ``local`` (the `TOKEN`) sends the hostile traffic and owns the sessions it
aims at; ``alice`` is the well-behaved client whose sessions must come through untouched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest
from anyio.abc import TaskStatus
from anyio.from_thread import BlockingPortal, start_blocking_portal

from datapulse.sessions.registry import SessionKind
from datapulse.transports._sse_codec import SseDecoder, SseEvent
from tests.support.mcp_http import jsonrpc, legacy_initialize
from tests.support.servers import ALICE_TOKEN, TOKEN, RunningServer, bearer, make_settings, serve_in_process

MAX_BODY_BYTES = 16_384
KEEPALIVE_S = 0.25
WAIT_S = 10.0
JSON = {"Content-Type": "application/json"}


class LogRecorder(logging.Handler):
    """Keeps every WARNING-or-worse record the server process logs (the server runs in this process)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def problems(self, since: int = 0, ignore: Callable[[logging.LogRecord], bool] | None = None) -> list[str]:
        """Records since index ``since`` that show an unhandled error (ERROR or worse, or a traceback),
        except those ``ignore`` accepts."""
        found = []
        for record in self.records[since:]:
            if ignore is not None and ignore(record):
                continue
            text = self.format(record)
            if record.levelno >= logging.ERROR or record.exc_info or "Traceback" in text:
                found.append(text)
        return found


class StreamWatcher:
    """One SSE stream read by a real client task in the server's event loop; what arrives is recorded.

    Attributes:
        status: the HTTP status of the stream's response.
        events: every event so far, in order.
        pings: keepalive comments so far.
        ended: the stream is over (``error`` says why, if it failed).
    """

    def __init__(self, portal: BlockingPortal) -> None:
        self.portal = portal
        self.status = 0
        self.events: list[SseEvent] = []
        self.pings = 0
        self.ended = False
        self.error: Exception | None = None
        self._changed: anyio.Event | None = None
        self._future: Future[None] | None = None

    def start(self, url: str, token: str, path: str, headers: Mapping[str, str] | None = None) -> StreamWatcher:
        """Open ``GET path`` and return once its response headers arrived."""
        self._future, _ = self.portal.start_task(self._run, url, token, path, dict(headers or {}))
        return self

    async def _run(
        self, url: str, token: str, path: str, headers: dict[str, str], *, task_status: TaskStatus[None]
    ) -> None:
        self._changed = anyio.Event()
        started = False
        timeout = httpx2.Timeout(WAIT_S, read=None)
        try:
            async with (
                httpx2.AsyncClient(base_url=url, headers=bearer(token), timeout=timeout) as client,
                client.stream("GET", path, headers={"Accept": "text/event-stream", **headers}) as response,
            ):
                self.status = response.status_code
                task_status.started()
                started = True
                decoder = SseDecoder()
                async for chunk in response.aiter_raw():
                    self.events.extend(decoder.feed(chunk))
                    self.pings = decoder.comments.count("ping")
                    self._notify()
        except Exception as exc:
            self.error = exc
        finally:
            self.ended = True
            self._notify()
            if not started:
                task_status.started()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
        self._changed = anyio.Event()

    def wait_for(self, predicate: Callable[[SseEvent], bool], after: int = 0, timeout_s: float = WAIT_S) -> SseEvent:
        """The first event from index ``after`` on that satisfies ``predicate``.

        Raises:
            EOFError: the stream ended first.
            TimeoutError: nothing matching arrived within ``timeout_s``.
        """
        return self.portal.call(self._wait_for, predicate, after, timeout_s)

    async def _wait_for(self, predicate: Callable[[SseEvent], bool], after: int, timeout_s: float) -> SseEvent:
        with anyio.fail_after(timeout_s):
            while True:
                for event in self.events[after:]:
                    if predicate(event):
                        return event
                if self.ended:
                    raise EOFError(f"the stream ended ({self.error!r})")
                assert self._changed is not None
                await self._changed.wait()

    def wait_for_ping(self, after: int, timeout_s: float = WAIT_S) -> None:
        """Wait for a keepalive newer than the ``after``-th (proof the stream is still open and served)."""
        self.portal.call(self._wait_for_ping, after, timeout_s)

    async def _wait_for_ping(self, after: int, timeout_s: float) -> None:
        with anyio.fail_after(timeout_s):
            while self.pings <= after:
                if self.ended:
                    raise EOFError(f"the stream ended ({self.error!r})")
                assert self._changed is not None
                await self._changed.wait()

    def close(self) -> None:
        if self._future is not None:
            self._future.cancel()
            self.portal.call(self._wait_ended)

    async def _wait_ended(self) -> None:
        with anyio.fail_after(WAIT_S):
            while not self.ended:
                assert self._changed is not None
                await self._changed.wait()


def message_of(event: SseEvent) -> Any:
    """The JSON payload of an event (None for priming/retry events and non-JSON data)."""
    try:
        return json.loads(event.data)
    except ValueError:
        return None


def carrying(key: str, value: Any) -> Callable[[SseEvent], bool]:
    """A predicate for events whose JSON object has ``key`` equal to ``value``."""

    def matches(event: SseEvent) -> bool:
        message = message_of(event)
        return isinstance(message, dict) and key in message and message[key] == value

    return matches


@dataclass
class LiveServer:
    """The server under test, its log, and the portal its event loop runs in."""

    running: RunningServer
    portal: BlockingPortal
    log: LogRecorder
    watchers: list[StreamWatcher] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def authority(self) -> str:
        """``host:port`` as the client sends it in ``Host``."""
        return self.url.removeprefix("http://")

    def client(self, token: str | None = TOKEN) -> httpx2.Client:
        """A synchronous client; without a default ``Accept`` so that a missing header can be tested."""
        client = httpx2.Client(base_url=self.url, headers=bearer(token) if token else {}, timeout=WAIT_S)
        del client.headers["accept"]
        return client

    def watch(self, token: str, path: str, headers: Mapping[str, str] | None = None) -> StreamWatcher:
        watcher = StreamWatcher(self.portal).start(self.url, token, path, headers)
        self.watchers.append(watcher)
        assert watcher.status == 200, (path, watcher.status, watcher.error)
        return watcher

    def open_2025_session(self, token: str) -> str:
        """A 2025-11-25 Streamable HTTP session (initialize + initialized) for the principal of ``token``."""
        return self.portal.call(self._open_2025_session, token)

    async def _open_2025_session(self, token: str) -> str:
        async with self.running.client(token) as client:
            return await legacy_initialize(client)

    def stream_counts(self) -> dict[SessionKind, int]:
        return dict(self.running.runtime.sessions.stream_counts())

    def wait_for_stream_counts(self, expected: Mapping[SessionKind, int], timeout_s: float = WAIT_S) -> None:
        """Wait until the server's open-stream counts are ``expected`` (streams whose client left are closed)."""
        self.portal.call(self._wait_for_stream_counts, dict(expected), timeout_s)

    async def _wait_for_stream_counts(self, expected: dict[SessionKind, int], timeout_s: float) -> None:
        sessions = self.running.runtime.sessions
        with anyio.move_on_after(timeout_s):
            await sessions.wait_until(lambda: dict(sessions.stream_counts()) == expected)
        assert dict(sessions.stream_counts()) == expected


@dataclass
class SseSession:
    """A 2024-11-05 session: its id and the watcher reading its stream."""

    session_id: str
    stream: StreamWatcher

    @property
    def messages_path(self) -> str:
        return f"/messages?session_id={self.session_id}"


@dataclass
class ApiSession:
    """A DataPulse API session: its client-chosen id and the watcher reading ``/events``."""

    session_id: str
    stream: StreamWatcher

    @property
    def message_path(self) -> str:
        return f"/message?session_id={self.session_id}"


@dataclass
class Sessions:
    """One principal's sessions of every kind, each with an open stream read by a watcher."""

    token: str
    mcp: str
    mcp_stream: StreamWatcher | None
    sse: SseSession
    api: ApiSession

    @property
    def ids(self) -> list[str]:
        return [self.mcp, self.sse.session_id, self.api.session_id]


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    settings = make_settings(max_body_bytes=MAX_BODY_BYTES, keepalive_interval_s=KEEPALIVE_S)
    recorder = LogRecorder()
    root = logging.getLogger()
    root.addHandler(recorder)
    try:
        with (
            start_blocking_portal("asyncio") as portal,
            portal.wrap_async_context_manager(serve_in_process(settings)) as running,
        ):
            server = LiveServer(running, portal, recorder)
            try:
                yield server
            finally:
                for watcher in server.watchers:
                    watcher.close()
    finally:
        root.removeHandler(recorder)


def open_sessions(server: LiveServer, token: str, api_session_id: str, *, standalone: bool) -> Sessions:
    """Open a 2025 session (with its standalone GET stream if ``standalone``), a 2024-11-05 session
    (handshake done) and a DataPulse API session for the principal of ``token``."""
    mcp = server.open_2025_session(token)
    mcp_stream = server.watch(token, "/mcp", {"Mcp-Session-Id": mcp}) if standalone else None
    sse_stream = server.watch(token, "/sse")
    endpoint = sse_stream.wait_for(lambda event: event.event == "endpoint").data
    sse = SseSession(endpoint.split("session_id=", 1)[1], sse_stream)
    with server.client(token) as client:
        init = {
            "jsonrpc": "2.0",
            "id": "init",
            "method": "initialize",
            "params": {
                "protocolVersion": "2024-11-05",
                "capabilities": {},
                "clientInfo": {"name": "f", "version": "1"},
            },
        }
        assert client.post(sse.messages_path, json=init).status_code == 202
        sse_stream.wait_for(carrying("id", "init"))
        initialized = jsonrpc("notifications/initialized", request_id=None)
        assert client.post(sse.messages_path, content=initialized, headers=JSON).status_code == 202
    api = ApiSession(api_session_id, server.watch(token, f"/events?session_id={api_session_id}"))
    return Sessions(token, mcp, mcp_stream, sse, api)


@pytest.fixture(scope="module")
def steady(live_server: LiveServer) -> Sessions:
    """alice's well-behaved sessions, open before any hostile request and for the whole module."""
    return open_sessions(live_server, ALICE_TOKEN, "alice-steady", standalone=True)


@pytest.fixture(scope="module")
def hostile(live_server: LiveServer, steady: Sessions) -> Sessions:
    """The hostile principal's own sessions, so that hostile input reaches past the session lookup (no
    standalone GET stream is held open on its 2025 session: the fuzzed GETs may open it)."""
    return open_sessions(live_server, TOKEN, "hostile-api", standalone=False)
