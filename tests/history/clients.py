"""The workload's clients: each follows its transport's protocol as a careful real client would, and records
what it sent and saw (`Recorder`), for `tests.history.checker`.

* `ApiClient`: the DataPulse API. A reader holds ``GET /events`` open and reconnects with ``Last-Event-ID``; a
  sender POSTs ``call_tool`` echo messages one after another, each answered 202 before the next.
* `StreamableClient`: 2025-11-25 Streamable HTTP. ``initialize``, then ``tools/call`` of ``steps`` with a
  progress token, answered as an SSE stream; a cut stream is resumed with ``GET`` + ``Last-Event-ID``.
* `SseClient`: 2024-11-05 HTTP+SSE. ``GET /sse``, ``initialize``, then echo calls POSTed to the endpoint; a
  cut stream ends the session (this era cannot resume), and the client opens a new one.
* `ModernClient`: 2026-07-28 stateless ``tools/call`` echo, answered in the HTTP response.
* `ListenClient`: 2026-07-28 ``subscriptions/listen`` for its own resource URIs, held open (on whichever instance
  the proxy picks), while stateless ``touch`` calls, one after another, each publish an update on some instance.

Every wait is bounded; a client stops sending at ``stop_sending`` and then waits, bounded, for what it is owed.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2

from datapulse.transports._sse_codec import SseEvent
from tests.history.checker import Record, RecordKind
from tests.support.mcp_http import initialize_request, jsonrpc, legacy_headers, modern_params
from tests.support.sse import SseReader

REQUEST_TIMEOUT_S = 10.0
RETRY_PAUSE_S = 0.1
STEPS = 3
MAX_FRUITLESS_RESUMES = 5
_conn_ids = itertools.count(1)


class Recorder:
    """The run's history: every client appends to one list, stamped with seconds since `started`."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.records: list[Record] = []

    def now(self) -> float:
        return time.monotonic() - self.started

    def add(self, client: str, kind: RecordKind, item: str = "", **fields: Any) -> None:
        self.records.append(Record(self.now(), client, kind, item, **fields))


@dataclass
class Pace:
    """When clients stop sending, how often they send, and whether readers are slow (the nemesis sets it)."""

    stop_sending: anyio.Event = field(default_factory=anyio.Event)
    interval_s: float = 0.05
    slow_readers: bool = False
    slow_read_s: float = 0.2
    burst: int = 5
    """Clients that send one request after another send this many back to back (each still answered before
    the next), then pause for as long as the burst would have taken at ``interval_s``: concurrent results,
    as in the reproduction of issue 13."""

    async def between_sends(self, n: int) -> None:
        if n % self.burst == 0:
            await anyio.sleep(self.interval_s * self.burst)


def outcome(exc: BaseException) -> str:
    return type(exc).__name__


@asynccontextmanager
async def sse_stream(http: httpx2.AsyncClient, method: str, url: str, **kwargs: Any) -> AsyncIterator[SseReader]:
    headers = {"Accept": "text/event-stream", **kwargs.pop("headers", {})}
    async with http.stream(method, url, headers=headers, **kwargs) as response:
        yield SseReader(response)


async def events(reader: SseReader, pace: Pace) -> AsyncIterator[SseEvent]:
    """The stream's events until it ends (no per-event timeout: a quiet stream is fine; the caller bounds it)."""
    while True:
        try:
            event = await reader.next_event(timeout_s=3600)
        except EOFError:
            return
        if pace.slow_readers:
            await anyio.sleep(pace.slow_read_s)
        yield event


def echoed(text: str) -> tuple[str, int]:
    """The client name and the tool's finish time from an ``echo`` answer ``"<client>|<n>|<finished_ns>"``."""
    parts = text.split("|")
    return parts[0], int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0


def event_seq(event_id: str | None) -> int | None:
    if not event_id or "." not in event_id:
        return None
    tail = event_id.rsplit(".", 1)[1]
    return int(tail) if tail.isdigit() else None


class Client:
    transport = ""

    def __init__(self, name: str, http: httpx2.AsyncClient, recorder: Recorder, pace: Pace) -> None:
        self.name = name
        self.http = http
        self.recorder = recorder
        self.pace = pace
        self.owed: set[str] = set()
        self.seen: set[str] = set()
        self.settled = anyio.Event()
        self.stopped = anyio.Event()
        """Set by the sending loop when it has stopped (no request of it in flight): only then can nothing more
        be owed."""

    def record(self, kind: RecordKind, item: str = "", **fields: Any) -> None:
        self.recorder.add(self.name, kind, item, **fields)
        if kind == "expect" and item not in self.seen:  # (a result may come before its request's answer)
            self.owed.add(item)
        elif kind == "result":
            self.seen.add(item)
            self.owed.discard(item)
        if self.stopped.is_set() and not self.owed:
            self.settled.set()

    def new_session(self, why: str) -> None:
        self.recorder.add(self.name, "session", detail=why)
        self.owed.clear()
        self.seen.clear()

    async def run(self, settle_timeout_s: float) -> None:
        """Send until told to stop, then wait (at most ``settle_timeout_s``) for everything owed."""
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self.loop)
            await self.pace.stop_sending.wait()
            with anyio.move_on_after(settle_timeout_s):
                await self.stopped.wait()  # a request sent just before the stop is answered first
            if not self.owed:
                self.settled.set()
            with anyio.move_on_after(settle_timeout_s):
                await self.settled.wait()
            tasks.cancel_scope.cancel()

    async def loop(self) -> None:
        raise NotImplementedError


class ApiClient(Client):
    transport = "datapulse-api"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session_id = f"hist-{self.name}-{time.monotonic_ns()}"
        self.last_event_id: str | None = None

    async def loop(self) -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self.read_forever)
            await self.send_until_stopped()

    async def read_forever(self) -> None:
        url = f"/events?session_id={self.session_id}"
        while True:
            headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
            conn = next(_conn_ids)
            try:
                async with sse_stream(self.http, "GET", url, headers=headers) as reader:
                    if reader.response.status_code != 200:
                        self.record("error", detail=f"GET /events {reader.response.status_code}")
                    else:
                        async for event in events(reader, self.pace):
                            self.on_event(event, conn)
            except (httpx2.HTTPError, OSError) as exc:
                self.record("error", detail=f"GET /events {outcome(exc)}")
            await anyio.sleep(RETRY_PAUSE_S)

    def on_event(self, event: SseEvent, conn: int) -> None:
        if not event.data:
            return
        body = json.loads(event.data)
        if event.event_id:
            self.last_event_id = event.event_id
        if body.get("type") == "tool_result":
            request_id = str(body["request_id"])
            tag, finished_ns = echoed(str(body["data"]["result"]))
            seq = event_seq(event.event_id)
            self.record(
                "result", request_id, order=int(request_id[1:]), conn=conn, seq=seq, tag=tag, finished_ns=finished_ns
            )
        elif body.get("type") == "error":
            self.record("error", detail="error event: " + str(body.get("error"))[:60])

    async def send_until_stopped(self) -> None:
        for n in itertools.count(1):
            if self.pace.stop_sending.is_set():
                self.stopped.set()  # no request of this client is in flight any more
                return
            request_id = f"r{n}"
            message = {
                "type": "call_tool",
                "request_id": request_id,
                "data": {"name": "echo", "message": f"{self.name}|{n}"},
            }
            try:
                response = await self.http.post(f"/message?session_id={self.session_id}", json=message)
            except (httpx2.HTTPError, OSError) as exc:
                self.record("indeterminate", request_id, order=n, detail=outcome(exc))
            else:
                if response.status_code == 202:
                    self.record("expect", request_id, order=n)
                elif response.status_code == 502:  # the proxy lost the backend: accepted or not, unknown
                    self.record("indeterminate", request_id, order=n, detail="502")
                else:
                    self.record("error", detail=f"POST /message {response.status_code}")
            await self.pace.between_sends(n)


class StreamableClient(Client):
    transport = "streamable-http-2025"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session_id: str | None = None
        self.standalone_session: str | None = None  # the session the standalone stream's last event id is of
        self.standalone_last: str | None = None

    async def loop(self) -> None:
        """Odd n: a ``steps`` call streamed on its own response; even n: ``announce``, whose message rides the
        session's standalone GET stream, which a reader holds open and resumes."""
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self.standalone_forever)
            for n in itertools.count(1):
                if self.pace.stop_sending.is_set():
                    self.stopped.set()  # no request of this client is in flight any more
                    break
                if self.session_id is None:
                    self.session_id = await self.initialize()
                    if self.session_id is None:
                        await anyio.sleep(RETRY_PAUSE_S)
                        continue
                if n % 2:
                    self.session_id = await self.call(self.session_id, n)
                else:
                    self.session_id = await self.announce(self.session_id, n)
                await anyio.sleep(self.pace.interval_s)
            await anyio.sleep_forever()  # the reader goes on until everything owed arrived (run() ends it)

    async def announce(self, session_id: str, n: int) -> str | None:
        item = f"a{n}"
        self.record("expect", item, order=n, stream="standalone")
        params = {"name": "announce", "arguments": {"client": self.name, "n": n}}
        try:
            response = await self.http.post(
                "/mcp", content=jsonrpc("tools/call", params, request_id=f"a{n}"), headers=legacy_headers(session_id)
            )
            body = await response.aread()
        except (httpx2.HTTPError, OSError) as exc:
            self.indeterminate(item, n, outcome(exc))
            return session_id
        if response.status_code == 404:
            self.new_session("404: session not found")
            return None
        if response.status_code != 200 or b'"announced"' not in body:
            # Refused (503, 502), or the handler died with its instance before announcing: not owed.
            self.indeterminate(item, n, f"announce {response.status_code}")
        return session_id

    def indeterminate(self, item: str, n: int, detail: str) -> None:
        """An item recorded as expected turned out uncertain (its request failed in an unknown state)."""
        self.owed.discard(item)
        self.record("indeterminate", item, order=n, detail=detail)

    async def standalone_forever(self) -> None:
        while True:
            session_id = self.session_id
            if session_id is None:
                await anyio.sleep(RETRY_PAUSE_S)
                continue
            if self.standalone_session != session_id:
                self.standalone_session, self.standalone_last = session_id, None
            headers = legacy_headers(session_id)
            if self.standalone_last is not None:
                headers["Last-Event-ID"] = self.standalone_last
            conn = next(_conn_ids)
            try:
                async with sse_stream(self.http, "GET", "/mcp", headers=headers) as reader:
                    status = reader.response.status_code
                    if status != 200:
                        self.record("error", detail=f"GET /mcp stream {status}")
                    else:
                        async for event in events(reader, self.pace):
                            if self.standalone_session != session_id:
                                break
                            self.standalone_last = event.event_id or self.standalone_last
                            self.on_standalone(event, conn)
            except (httpx2.HTTPError, OSError) as exc:
                self.record("error", detail=f"GET /mcp stream {outcome(exc)}")
            await anyio.sleep(RETRY_PAUSE_S)

    def on_standalone(self, event: SseEvent, conn: int) -> None:
        if not event.data:
            return
        message = json.loads(event.data)
        if message.get("method") != "notifications/message":
            return
        data = message["params"].get("data")
        if isinstance(data, dict) and "n" in data:
            n = int(data["n"])
            tag = str(data.get("client", ""))
            self.record(
                "result", f"a{n}", order=n, conn=conn, seq=event_seq(event.event_id), tag=tag, stream="standalone"
            )

    async def initialize(self) -> str | None:
        try:
            response = await self.http.post("/mcp", content=initialize_request(), headers=legacy_headers())
            if response.status_code != 200:
                self.record("error", detail=f"initialize {response.status_code}")
                return None
            session_id = response.headers["mcp-session-id"]
            done = jsonrpc("notifications/initialized", request_id=None)
            await self.http.post("/mcp", content=done, headers=legacy_headers(session_id))
            return str(session_id)
        except (httpx2.HTTPError, OSError) as exc:
            self.record("error", detail=f"initialize {outcome(exc)}")
            return None

    async def call(self, session_id: str, n: int) -> str | None:
        """One ``steps`` call; returns the session id to go on with (None: the session is gone)."""
        req = f"c{n}"
        items = [f"{req}#{step}" for step in range(1, STEPS + 1)] + [req]
        params = {
            "name": "steps",
            "arguments": {"count": STEPS, "message": f"{self.name}|{n}"},
            "_meta": {"progressToken": req},
        }
        body = jsonrpc("tools/call", params, request_id=req)
        conn = next(_conn_ids)
        last_event_id: str | None = None
        try:
            async with self.http.stream("POST", "/mcp", content=body, headers=legacy_headers(session_id)) as response:
                if response.status_code == 404:
                    self.new_session("404: session not found")
                    return None
                if response.status_code != 200:
                    self.record("error", detail=f"POST /mcp {response.status_code}")
                    return session_id
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    self.expect(items, n)
                    self.on_message(json.loads(await response.aread()), conn, None, n)
                    return session_id
                async for event in events(SseReader(response), self.pace):
                    if last_event_id is None and event.event_id:
                        self.expect(items, n)  # resumable from here on: everything is owed
                    last_event_id = event.event_id or last_event_id
                    if event.data and self.on_message(json.loads(event.data), conn, event.event_id, n):
                        return session_id
        except (httpx2.HTTPError, OSError) as exc:
            self.record("error", detail=f"POST stream {outcome(exc)}")
        if last_event_id is None:  # cut before the first event id: nothing to resume from
            self.record("indeterminate", req, order=n * 10, detail="cut before the first event")
            return session_id
        return await self.resume(session_id, n, last_event_id)

    def expect(self, items: list[str], n: int) -> None:
        for index, item in enumerate(items):
            self.record("expect", item, order=n * 10 + index, stream=f"c{n}")

    async def resume(self, session_id: str, n: int, last_event_id: str | None) -> str | None:
        """Resume a cut response stream with GET + Last-Event-ID until the result arrives (bounded)."""
        fruitless = 0  # resumes in a row that brought nothing new: the stream ended without its result
        with anyio.move_on_after(REQUEST_TIMEOUT_S * 3):
            while last_event_id is not None and fruitless < MAX_FRUITLESS_RESUMES:
                fruitless += 1
                conn = next(_conn_ids)
                headers = {**legacy_headers(session_id), "Last-Event-ID": last_event_id}
                try:
                    async with sse_stream(self.http, "GET", "/mcp", headers=headers) as reader:
                        status = reader.response.status_code
                        if status == 404:
                            self.new_session("404: session not found on resume")
                            return None
                        if status != 200:
                            self.record("error", detail=f"resume GET {status}")
                            if status == 400:  # the stream is gone (its owner died): re-send, as the spec says
                                return session_id
                        else:
                            async for event in events(reader, self.pace):
                                fruitless = 0
                                last_event_id = event.event_id or last_event_id
                                if event.data and self.on_message(json.loads(event.data), conn, event.event_id, n):
                                    return session_id
                except (httpx2.HTTPError, OSError) as exc:
                    self.record("error", detail=f"resume GET {outcome(exc)}")
                await anyio.sleep(RETRY_PAUSE_S)
        return session_id

    def on_message(self, message: dict[str, Any], conn: int, event_id: str | None, n: int) -> bool:
        """Record a progress step or the result; True for the result."""
        req = f"c{n}"
        seq = event_seq(event_id)
        if message.get("method") == "notifications/progress":
            step = int(message["params"]["progress"])
            self.record(
                "result", f"{req}#{step}", order=n * 10 + step - 1, conn=conn, seq=seq, tag=self.name, stream=req
            )
            return False
        if message.get("id") == req:
            if "result" in message:
                text = message["result"]["content"][0]["text"]
                self.record(
                    "result", req, order=n * 10 + STEPS, conn=conn, seq=seq, tag=text.split("|", 1)[0], stream=req
                )
            else:
                self.record("error", detail=f"tools/call error {message['error'].get('code')}")
                self.owed.difference_update({req, *(f"{req}#{s}" for s in range(1, STEPS + 1))})
            return True
        return False


class SseClient(Client):
    transport = "http+sse-2024"

    async def loop(self) -> None:
        while not self.pace.stop_sending.is_set():
            conn = next(_conn_ids)
            try:
                async with sse_stream(self.http, "GET", "/sse") as reader:
                    if reader.response.status_code != 200:
                        self.record("error", detail=f"GET /sse {reader.response.status_code}")
                    else:
                        await self.session(reader, conn)
            except (httpx2.HTTPError, OSError) as exc:
                self.record("error", detail=f"GET /sse {outcome(exc)}")
            if self.owed or not self.pace.stop_sending.is_set():
                self.new_session("stream ended (2024-11-05 cannot resume)")
            await anyio.sleep(RETRY_PAUSE_S)

    async def session(self, reader: SseReader, conn: int) -> None:
        endpoint = (await reader.next_event()).data
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self.send_until_stopped, endpoint, tasks.cancel_scope)
            try:
                async for event in events(reader, self.pace):
                    message = json.loads(event.data) if event.data else {}
                    request_id = message.get("id")
                    if isinstance(request_id, int) and request_id > 0 and "result" in message:
                        tag, finished_ns = echoed(message["result"]["content"][0]["text"])
                        self.record(
                            "result", f"s{request_id}", order=request_id, conn=conn, tag=tag, finished_ns=finished_ns
                        )
            except (httpx2.HTTPError, OSError) as exc:
                self.record("error", detail=f"GET /sse stream {outcome(exc)}")
            tasks.cancel_scope.cancel()

    async def send_until_stopped(self, endpoint: str, scope: anyio.CancelScope) -> None:
        headers = {"Content-Type": "application/json"}
        try:
            initialize = await self.http.post(endpoint, content=initialize_request(), headers=headers)
            if initialize.status_code != 202:
                self.record("error", detail=f"POST /messages initialize {initialize.status_code}")
                scope.cancel()
                return
            await self.http.post(
                endpoint, content=jsonrpc("notifications/initialized", request_id=None), headers=headers
            )
            for n in itertools.count(1):
                if self.pace.stop_sending.is_set():
                    self.stopped.set()  # no request of this client is in flight any more
                    return
                params = {"name": "echo", "arguments": {"message": f"{self.name}|{n}"}}
                try:
                    response = await self.http.post(
                        endpoint, content=jsonrpc("tools/call", params, request_id=n), headers=headers
                    )
                except (httpx2.HTTPError, OSError) as exc:
                    self.record("indeterminate", f"s{n}", order=n, detail=outcome(exc))
                    continue
                if response.status_code == 202:
                    self.record("expect", f"s{n}", order=n)
                elif response.status_code == 404:  # the session ended with its stream
                    scope.cancel()
                    return
                elif response.status_code == 502:  # the proxy lost the backend: accepted or not, unknown
                    self.record("indeterminate", f"s{n}", order=n, detail="502")
                else:
                    self.record("error", detail=f"POST /messages {response.status_code}")
                await self.pace.between_sends(n)
        except (httpx2.HTTPError, OSError) as exc:
            self.record("error", detail=f"POST /messages {outcome(exc)}")
            scope.cancel()


class ModernClient(Client):
    transport = "streamable-http-2026"

    async def loop(self) -> None:
        for n in itertools.count(1):
            if self.pace.stop_sending.is_set():
                self.stopped.set()  # no request of this client is in flight any more
                return
            params = modern_params({"name": "echo", "arguments": {"message": f"{self.name}|{n}"}})
            headers = {
                "MCP-Protocol-Version": "2026-07-28",
                "Mcp-Method": "tools/call",
                "Mcp-Name": "echo",
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
            }
            try:
                response = await self.http.post(
                    "/mcp", content=jsonrpc("tools/call", params, request_id=n), headers=headers
                )
            except (httpx2.HTTPError, OSError) as exc:
                self.record("indeterminate", f"m{n}", order=n, detail=outcome(exc))
            else:
                if response.status_code == 200:
                    tag, finished_ns = echoed(response.json()["result"]["content"][0]["text"])
                    self.record("expect", f"m{n}", order=n)
                    self.record("result", f"m{n}", order=n, tag=tag, finished_ns=finished_ns)
                else:
                    self.record("error", detail=f"POST /mcp 2026 {response.status_code}")
            await anyio.sleep(self.pace.interval_s)


LISTEN_URIS = 64
"""A listen client subscribes to this many URIs and touches them in turn: touch ``n`` updates URI ``n % 64``, so
an update names its touch unambiguously (at most one touch is outstanding at a time)."""


class ListenClient(Client):
    """Holds a ``subscriptions/listen`` stream for its URIs and, while the stream is acknowledged, calls ``touch``
    (stateless, any instance) one after another; each touch's ``notifications/resources/updated`` must reach the
    stream once. The spec gives listen streams no event ids and no resumption, and the change bus no order across
    instances, so order is not checked (``order`` 0), and when a stream ends, the touches it still owed are
    withdrawn (``indeterminate``: the client listens again and refetches). The server ends listen streams when
    its change bus loses Redis (`datapulse.cluster.bus`), so a gap never passes silently."""

    transport = "listen-2026"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listening = anyio.Event()
        self.generation = 0
        self.outstanding: dict[int, int] = {}  # uri index -> the touch whose update has not arrived yet
        self.latest: dict[int, int] = {}  # uri index -> the last touch of it
        self.listens = itertools.count(1)

    def uri(self, index: int) -> str:
        return f"history://listen/{self.name}/{index}"

    async def loop(self) -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self.listen_forever)
            for n in itertools.count(1):
                if self.pace.stop_sending.is_set():
                    self.stopped.set()  # no request of this client is in flight any more
                    break
                with anyio.move_on_after(1):
                    await self.listening.wait()
                if not self.listening.is_set():
                    continue
                await self.touch(n)
                await self.pace.between_sends(n)
            await anyio.sleep_forever()

    async def touch(self, n: int) -> None:
        index, generation, item = n % LISTEN_URIS, self.generation, f"t{n}"
        self.outstanding[index] = self.latest[index] = n
        params = modern_params({"name": "touch", "arguments": {"uri": self.uri(index)}})
        headers = {**MODERN_HEADERS, "Mcp-Method": "tools/call", "Mcp-Name": "touch"}
        try:
            response = await self.http.post(
                "/mcp", content=jsonrpc("tools/call", params, request_id=n), headers=headers
            )
        except (httpx2.HTTPError, OSError) as exc:
            self.record("indeterminate", item, detail=outcome(exc))
            return
        if response.status_code != 200 or "error" in response.json():
            self.record("error", detail=f"POST /mcp 2026 touch {response.status_code}")
            self.outstanding.pop(index, None)
        elif generation == self.generation and self.outstanding.get(index) in (n, None):
            self.record("expect", item)  # published while this stream listened: it must arrive on it
        else:
            self.record("indeterminate", item, detail="listen stream ended meanwhile")

    async def listen_forever(self) -> None:
        uris = [self.uri(index) for index in range(LISTEN_URIS)]
        while True:
            listen_id = next(self.listens)
            params = modern_params({"notifications": {"resourceSubscriptions": uris}})
            headers = {**MODERN_HEADERS, "Mcp-Method": "subscriptions/listen"}
            conn = next(_conn_ids)
            try:
                async with sse_stream(
                    self.http,
                    "POST",
                    "/mcp",
                    content=jsonrpc("subscriptions/listen", params, listen_id),
                    headers=headers,
                ) as reader:
                    if reader.response.status_code != 200:
                        self.record("error", detail=f"listen {reader.response.status_code}")
                    else:
                        async for event in events(reader, self.pace):
                            self.on_message(json.loads(event.data) if event.data else {}, conn)
            except (httpx2.HTTPError, OSError) as exc:
                self.record("error", detail=f"listen {outcome(exc)}")
            finally:
                self.listening = anyio.Event()
                self.generation += 1
                for n in self.outstanding.values():
                    self.record("indeterminate", f"t{n}", detail="listen stream ended")
                self.outstanding.clear()
            await anyio.sleep(RETRY_PAUSE_S)

    def on_message(self, message: dict[str, Any], conn: int) -> None:
        method = message.get("method")
        if method == "notifications/subscriptions/acknowledged":
            self.listening.set()
        elif method == "notifications/resources/updated":
            index = int(str(message["params"]["uri"]).rsplit("/", 1)[1])
            n = self.outstanding.pop(index, None)
            if n is None:
                n = self.latest.get(index, 0)  # nothing owed for this URI: a repeat of its last update
            self.record("result", f"t{n}", conn=conn, stream="listen")


MODERN_HEADERS = {
    "MCP-Protocol-Version": "2026-07-28",
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
}
