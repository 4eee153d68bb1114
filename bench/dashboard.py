# ruff: noqa: RUF001
"""What the dashboard costs: the same DataPulse server with the dashboard off, on and idle, and on with a page
open; and DataPulse API sessions unwatched vs watched (``GET /dashboard/api/watch``). Ratios against a baseline
measured in the same run.

Usage (from the repository root)::

    .venv/bin/python -m bench.dashboard                  # full run: 3 rounds x 5 s cells
    .venv/bin/python -m bench.dashboard --quick          # smoke run (1 round x 2 s cells), < 2 min
    .venv/bin/python -m bench.dashboard --rounds 5 --duration 8 --json out.json --out report.md

Question 1, an idle dashboard: three ``datapulse serve bench.echo_app:app`` processes (static token auth), (A)
``--dashboard off``, (B) ``--dashboard on`` with nobody looking, (C) ``--dashboard on`` with one "page open": a
task that signs in once for a dashboard ticket and then, like the page's script, fetches the sessions, stats and
audit views and waits 2 s after the answers, for as long as question 1 runs. Loads at c=32: DataPulse API
``call_tool`` (echo) and 2026-07-28 stateless ``/mcp`` tools/call, both from `bench.loadgen.run_cell`.
Question 2, a watched session: one fresh ``--dashboard on`` process; 8 DataPulse API sessions with known ids,
each one call at a time, without and with one watcher per session. See the "Dashboard cost" paragraph of
bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/dashboard.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import uvloop

from bench.httpclient import HttpConnection, build_request, connect, post_prefix
from bench.loadgen import (
    IDS,
    SETUP_TIMEOUT_S,
    ApiClient,
    CallFailed,
    CellResult,
    Endpoint,
    gather_limited,
    run_cell,
)
from bench.run import fmt_ratio, log, other_load, spread
from bench.servers import REPO, TOKEN, Server, datapulse_argv, pin_client, raise_fd_limit, versions, wait_idle

IDLE_CONCURRENCY = 32
WATCH_CONCURRENCY = 8
POLL_INTERVAL_S = 2.0
"""The page's ``POLL_MS``: the next refresh starts 2 s after the previous one answered."""
POLL_PATHS = ("/dashboard/api/sessions", "/dashboard/api/stats", "/dashboard/api/audit?limit=200")
"""What the "page open" task fetches on each tick (the audit limit is the page's default, 200)."""
CLOSE_TIMEOUT_S = 10.0

LOADS: dict[str, str] = {
    "api": "DataPulse API call_tool (echo)",
    "modern": "/mcp 2026-07-28 stateless tools/call (echo)",
}


@dataclass(frozen=True)
class Config:
    key: str
    dashboard: str
    page_open: bool
    label: str


CONFIGS: dict[str, Config] = {
    c.key: c
    for c in (
        Config("A", "off", False, "A: --dashboard off (baseline)"),
        Config("B", "on", False, "B: --dashboard on, no page open"),
        Config("C", "on", True, "C: --dashboard on, one page open"),
    )
}


# --- processes ----------------------------------------------------------------------------------------------------
@dataclass
class DashServer(Server):
    """``datapulse serve`` as `bench.servers` starts it (token auth, pinned to the server CPU) plus ``--dashboard``."""

    dashboard: str = "on"

    @property
    def argv(self) -> list[str]:
        return [*datapulse_argv(self.port), "--dashboard", self.dashboard]


def endpoint_of(server: Server, credential: str | None = TOKEN) -> Endpoint:
    return Endpoint("127.0.0.1", server.port, credential)


async def get_json(conn: HttpConnection, ep: Endpoint, method: str, path: str) -> tuple[int, Any]:
    """One request on ``conn`` with ``ep``'s credential; ``(status, parsed JSON body or None)``."""
    request = build_request(method, path, ep.authority, ep.headers(("Accept", "application/json")))
    response = await asyncio.wait_for(conn.request(request), SETUP_TIMEOUT_S)
    try:
        body = json.loads(response.body) if response.body else None
    except ValueError:
        body = None
    return response.status, body


async def one_request(ep: Endpoint, method: str, path: str) -> tuple[int, Any]:
    conn = await connect(ep.host, ep.port)
    try:
        return await get_json(conn, ep, method, path)
    finally:
        conn.close()


async def sign_in(server: Server) -> str:
    """A dashboard ticket for the bench token's principal (``POST /dashboard/api/sign-in``)."""
    status, body = await one_request(endpoint_of(server), "POST", "/dashboard/api/sign-in")
    ticket = body.get("ticket") if isinstance(body, dict) else None
    if status != 200 or not isinstance(ticket, str) or not ticket.startswith("dpt_"):
        raise RuntimeError(f"sign-in on port {server.port}: HTTP {status} {str(body)[:300]}")
    return ticket


async def check_dashboard_state(server: DashServer) -> str:
    """``GET /dashboard/api/overview`` must answer 200 with the dashboard on and 404 with it off."""
    status, _body = await one_request(endpoint_of(server), "GET", "/dashboard/api/overview")
    expected = 200 if server.dashboard == "on" else 404
    if status != expected:
        raise RuntimeError(f"--dashboard {server.dashboard}: GET /dashboard/api/overview answered {status}")
    return f"overview HTTP {status}"


# --- question 1: the "page open" poller ---------------------------------------------------------------------------
def _poll_answer_ok(path: str, body: Any) -> bool:
    if not isinstance(body, dict) or not isinstance(body.get("nodes_unreachable"), list):
        return False
    if path.endswith("/sessions"):
        return isinstance(body.get("sessions"), list)
    if path.endswith("/stats"):
        return isinstance(body.get("tools"), list)
    return isinstance(body.get("enabled"), bool) and isinstance(body.get("records"), list)


@dataclass
class PagePoller:
    """What the page's script does while a live tab is visible: fetch, wait 2 s after the answer, again.

    Every answer is checked (200 and the documented shape); a 401 (ticket expired) signs in again, as a user would.
    """

    server: Server
    ticks: int = 0
    requests: int = 0
    bad: int = 0
    sign_ins: int = 0
    max_sessions_listed: int = 0
    errors: list[str] = field(default_factory=list)
    _ticket: str = ""
    _stopping: bool = False
    _wake: asyncio.Event | None = None

    def _error(self, text: str) -> None:
        self.bad += 1
        if len(self.errors) < 5:
            self.errors.append(text)

    def stop(self) -> None:
        """Ask `run` to return after the request in flight (a flag, not only a cancel: in Python 3.11,
        ``asyncio.wait_for`` can swallow a cancellation that races with its inner future's completion)."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        self._wake = asyncio.Event()
        self._ticket = await sign_in(self.server)
        self.sign_ins = 1
        conn: HttpConnection | None = None
        try:
            while not self._stopping:
                for path in POLL_PATHS:
                    if self._stopping:
                        return
                    if conn is None or conn.closed:
                        conn = await connect("127.0.0.1", self.server.port)
                    try:
                        status, body = await get_json(conn, endpoint_of(self.server, self._ticket), "GET", path)
                        if status == 401:
                            self._ticket = await sign_in(self.server)
                            self.sign_ins += 1
                            status, body = await get_json(conn, endpoint_of(self.server, self._ticket), "GET", path)
                    except (ConnectionError, TimeoutError) as exc:
                        self._error(f"{path}: {exc!r}")
                        conn.close()
                        continue
                    self.requests += 1
                    if status != 200 or not _poll_answer_ok(path, body):
                        self._error(f"{path}: HTTP {status} {str(body)[:200]}")
                    elif path.endswith("/sessions"):
                        self.max_sessions_listed = max(self.max_sessions_listed, len(body["sessions"]))
                self.ticks += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL_S)
        finally:
            if conn is not None:
                conn.close()


@dataclass
class IdleCell:
    config: str
    load: str
    cell: CellResult
    rss: int
    polls: int = 0

    @property
    def cpu_per_1k(self) -> float:
        """Server CPU seconds per 1,000 calls completed in the window."""
        c = self.cell
        return c.server_cpu * c.duration_s / c.calls * 1000.0 if c.calls else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "load": self.load,
            **self.cell.summary(),
            "server_cpu_s_per_1k_calls": round(self.cpu_per_1k, 4),
            "rss_mib": round(self.rss / 2**20, 1),
            "poll_ticks_during_cell": self.polls,
        }


async def idle_dashboard(args: argparse.Namespace, report: dict[str, Any]) -> dict[tuple[str, str], list[IdleCell]]:
    servers = {key: DashServer("datapulse", dashboard=cfg.dashboard) for key, cfg in CONFIGS.items()}
    cells: dict[tuple[str, str], list[IdleCell]] = {(k, load): [] for k in CONFIGS for load in LOADS}
    poller = PagePoller(servers["C"])
    poll_task: asyncio.Task[None] | None = None
    report["q1_servers"] = {}
    for server in servers.values():
        server.start()
    try:
        for key, server in servers.items():
            await server.wait_ready()
            state = await check_dashboard_state(server)
            report["q1_servers"][key] = {"command": server.command(), "fast_stack": server.fast_stack(), "check": state}
        everyone: list[Server] = list(servers.values())
        log("question 1, verify: one client per server and load, every answer checked")
        for key, server in servers.items():
            for load in LOADS:
                cell = await run_cell(load, endpoint_of(server), 1, 0.2)
                failed = f"  FAILED {cell.errors}" if cell.flagged else ""
                log(f"  {key} {load:7} {cell.ok} ok / {cell.bad} bad{failed}")
                if cell.flagged:
                    raise SystemExit(f"{key}/{load} failed verification: {cell.errors}\n{server.log_tail()}")
        poll_task = asyncio.create_task(poller.run())
        await asyncio.sleep(0.5)
        if poll_task.done():
            poll_task.result()  # raises what stopped the poller (sign-in refused)
        if poller.bad:
            raise SystemExit(f"the page poller got bad answers: {poller.errors}")
        log(f"  page poller on C: {poller.requests} requests ok; warm-up {args.warmup:g} s per server and load")
        for warm in everyone:
            for load in LOADS:
                await wait_idle(everyone)
                await run_cell(load, endpoint_of(warm), IDLE_CONCURRENCY, args.warmup)
        keys = list(CONFIGS)
        for rnd in range(args.rounds):
            order = keys[rnd % len(keys) :] + keys[: rnd % len(keys)]
            loads = list(LOADS) if rnd % 2 == 0 else list(reversed(LOADS))
            log(f"question 1, round {rnd + 1}/{args.rounds}: order {' '.join(order)}")
            for load in loads:
                for key in order:
                    server = servers[key]
                    await wait_idle(everyone)
                    ticks = poller.ticks
                    cell = await run_cell(
                        load,
                        endpoint_of(server),
                        IDLE_CONCURRENCY,
                        args.duration,
                        server_cpu_seconds=server.cpu_seconds,
                    )
                    idle = IdleCell(key, load, cell, server.rss(), poller.ticks - ticks if key == "C" else 0)
                    cells[(key, load)].append(idle)
                    flag = "  FLAGGED " + "; ".join(cell.errors[:2]) if cell.flagged else ""
                    log(
                        f"  {load:7} {key} {cell.rate:8,.0f} calls/s  p50 {cell.percentile(0.5):6.1f}  "
                        f"p99 {cell.percentile(0.99):6.1f} ms  srv {cell.server_cpu:4.0%}  "
                        f"{idle.cpu_per_1k:.3f} CPU s/1k  RSS {idle.rss / 2**20:.0f} MiB  "
                        f"{cell.ok} ok/{cell.bad} bad{flag}"
                    )
        if poll_task.done():
            poll_task.result()
        return cells
    finally:
        if poll_task is not None:
            poller.stop()
            done, _ = await asyncio.wait({poll_task}, timeout=SETUP_TIMEOUT_S + 5)
            if not done:
                poll_task.cancel()
                await asyncio.wait({poll_task}, timeout=5)
            if poll_task.done() and not poll_task.cancelled() and poll_task.exception() is not None:
                poller.errors.append(f"the poller stopped: {poll_task.exception()!r}")
                poller.bad += 1
        report["poller"] = {
            "ticks": poller.ticks,
            "requests": poller.requests,
            "bad": poller.bad,
            "sign_ins": poller.sign_ins,
            "max_sessions_listed": poller.max_sessions_listed,
            "errors": poller.errors,
        }
        stop_all(list(servers.values()), report)


def stop_all(servers: list[Server], report: dict[str, Any]) -> None:
    for server in servers:
        server.stop()
    for server in servers:
        if server.log_path is not None and "Traceback" in server.log_tail(200_000):
            report.setdefault("server_tracebacks", []).append(server.log_tail(3000))
            log(f"a server logged a traceback: {server.log_path}")
        server.discard_log()


# --- question 2: watched sessions ---------------------------------------------------------------------------------
class KnownSessionClient(ApiClient):
    """`ApiClient` with a session id chosen here (so that it can be watched) that counts the calls it sends and
    ends its session with ``DELETE /events?session_id=``."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self.session_id = "dash-bench-" + uuid.uuid4().hex
        self.sent = 0

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
        self.sent += 1
        return await super().call(rid)

    async def close_session(self) -> str | None:
        """End the session; returns an error text, or None when the server answered 200."""
        try:
            if self.post is None or self.post.closed:
                self.post = await connect(self.endpoint.host, self.endpoint.port)
            status, _ = await get_json(self.post, self.endpoint, "DELETE", f"/events?session_id={self.session_id}")
        except (ConnectionError, TimeoutError) as exc:
            return f"DELETE /events: {exc!r}"
        return None if status == 200 else f"DELETE /events: HTTP {status}"


class Watch:
    """A raw reader of ``GET /dashboard/api/watch?session_id=``: counts ``frame`` events by direction without
    decoding them (only the first is parsed and checked), keeps the latest ``dropped`` count, waits for ``closed``."""

    def __init__(self, endpoint: Endpoint, session_id: str) -> None:
        self.endpoint = endpoint
        self.session_id = session_id
        self.conn: HttpConnection | None = None
        self.frames = 0
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = 0
        self.dropped_events = 0
        self.other_events = 0
        self.errors: list[str] = []
        self.closed: asyncio.Future[str] | None = None

    async def open(self) -> None:
        ep = self.endpoint
        self.closed = asyncio.get_running_loop().create_future()
        self.conn = await connect(ep.host, ep.port)
        path = f"/dashboard/api/watch?session_id={self.session_id}"
        await self.conn.open_stream(
            build_request("GET", path, ep.authority, ep.headers(("Accept", "text/event-stream"))), self._on_event
        )

    def _on_event(self, event: bytes, data: bytes, _arrived: float) -> None:
        if event == b"frame":
            self.frames += 1
            head = data[:64]
            if b'"dir":"in"' in head:
                self.frames_in += 1
            elif b'"dir":"out"' in head:
                self.frames_out += 1
            if self.frames == 1:
                self._check_first(data)
        elif event == b"dropped":
            self.dropped_events += 1
            try:
                self.dropped = max(self.dropped, int(json.loads(data)["dropped"]))
            except (ValueError, KeyError, TypeError):
                self.errors.append(f"bad dropped event: {data[:200]!r}")
        elif event == b"closed":
            if self.closed is not None and not self.closed.done():
                self.closed.set_result(data.decode(errors="replace"))
        else:
            self.other_events += 1

    def _check_first(self, data: bytes) -> None:
        try:
            frame = json.loads(data)
            ok = (
                frame["dir"] == "in"
                and frame["kind"] == "request"
                and frame["method"] == "call_tool"
                and frame["message"]["data"]["name"] == "echo"
            )
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            self.errors.append(f"first frame is not the first call_tool: {data[:300]!r}")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


@dataclass
class WatchCell:
    watched: bool
    cell: CellResult
    rss: int = 0
    sessions: int = 0
    expected_frames: int = 0
    frames: int = 0
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    dropped_events: int = 0
    closed: int = 0
    watch_errors: list[str] = field(default_factory=list)

    @property
    def cpu_per_1k(self) -> float:
        c = self.cell
        return c.server_cpu * c.duration_s / c.calls * 1000.0 if c.calls else float("nan")

    @property
    def frames_accounted(self) -> bool:
        """Every frame the watched sessions produced was seen or reported dropped, and every stream closed."""
        if not self.watched:
            return True
        return (
            self.frames + self.dropped == self.expected_frames
            and self.closed == self.sessions
            and not self.watch_errors
        )

    @property
    def flagged(self) -> bool:
        return self.cell.flagged or not self.frames_accounted

    def summary(self) -> dict[str, Any]:
        return {
            "watched": self.watched,
            **self.cell.summary(),
            "server_cpu_s_per_1k_calls": round(self.cpu_per_1k, 4),
            "rss_mib": round(self.rss / 2**20, 1),
            "expected_frames": self.expected_frames,
            "frames_seen": self.frames,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "frames_dropped": self.dropped,
            "dropped_events": self.dropped_events,
            "closed_events": self.closed,
            "watch_errors": self.watch_errors[:5],
        }


async def api_sessions_cell(
    server: Server,
    ticket: str,
    concurrency: int,
    duration_s: float,
    *,
    watched: bool,
    grace_s: float = 15.0,
) -> WatchCell:
    """Like `bench.loadgen.run_cell` for the DataPulse API, with session ids known in advance and, when
    ``watched``, one watcher per session opened before the window. Every session is ended (DELETE) afterwards;
    a watcher must then see ``event: closed``, and its frames seen + dropped must equal 2 x the calls its
    session sent (one ``in`` and one ``out`` frame per call)."""
    ep = endpoint_of(server)
    clients = [KnownSessionClient(ep) for _ in range(concurrency)]
    out = WatchCell(watched, CellResult(concurrency, duration_s), sessions=concurrency if watched else 0)
    result = out.cell
    watches = [Watch(endpoint_of(server, ticket), c.session_id) for c in clients] if watched else []
    outcomes = await gather_limited([asyncio.wait_for(c.setup(), SETUP_TIMEOUT_S) for c in clients], 64)
    if not any(isinstance(o, BaseException) for o in outcomes):
        outcomes += await gather_limited([asyncio.wait_for(w.open(), SETUP_TIMEOUT_S) for w in watches], 64)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    if failed:
        result.setup_failed = len(failed)
        result.errors.append(f"setup: {failed[0]!r}")
        await finish_api_cell(out, clients, watches)
        return out

    latencies = result.latencies_ms
    start = time.perf_counter()
    end = start + duration_s
    cpu_start = time.process_time()
    server_start = server.cpu_seconds()
    per_cpu_start = psutil.cpu_times(percpu=True)

    async def sample() -> None:
        await asyncio.sleep(duration_s)
        result.client_cpu = (time.process_time() - cpu_start) / duration_s
        result.server_cpu = (server.cpu_seconds() - server_start) / duration_s
        out.rss = server.rss()
        for before, after in zip(per_cpu_start, psutil.cpu_times(percpu=True), strict=True):
            total = sum(after) - sum(before)
            idle = (after.idle + after.iowait) - (before.idle + before.iowait)
            result.cpu_busy.append((total - idle) / total if total > 0 else 0.0)

    async def worker(client: KnownSessionClient) -> None:
        while time.perf_counter() < end:
            try:
                ok, latency, completed = await client.call(next(IDS))
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

    sampler = asyncio.create_task(sample())
    tasks = [asyncio.create_task(worker(c)) for c in clients]
    _done, pending = await asyncio.wait(tasks, timeout=duration_s + grace_s)
    for task in pending:
        task.cancel()
    result.timeouts = len(pending)
    await sampler
    await finish_api_cell(out, clients, watches)
    return out


async def finish_api_cell(out: WatchCell, clients: list[KnownSessionClient], watches: list[Watch]) -> None:
    """End every session, wait for each watcher's ``closed`` event, count frames, close every connection."""
    result = out.cell
    for error in await asyncio.gather(*(c.close_session() for c in clients if c.stream is not None)):
        if error is not None:
            result.bad += 1
            if len(result.errors) < 5:
                result.errors.append(error)
    opened = [w for w in watches if w.closed is not None and w.conn is not None]
    if opened:
        closed = [w.closed for w in opened if w.closed is not None]
        _done, _pending = await asyncio.wait(closed, timeout=CLOSE_TIMEOUT_S)
    out.expected_frames = 2 * sum(c.sent for c in clients) if watches else 0
    for watch in watches:
        out.frames += watch.frames
        out.frames_in += watch.frames_in
        out.frames_out += watch.frames_out
        out.dropped += watch.dropped
        out.dropped_events += watch.dropped_events
        out.closed += 1 if watch.closed is not None and watch.closed.done() else 0
        out.watch_errors += watch.errors[:2]
        if watch.other_events:
            out.watch_errors.append(f"{watch.other_events} unexpected events on a watch stream")
        watch.close()
    if watches and out.closed < len(watches):
        out.watch_errors.append(f"{len(watches) - out.closed} watch stream(s) never sent event: closed")
    for client in clients:
        await client.teardown()
        result.errors += client.errors[: max(0, 5 - len(result.errors))]
        result.bad += client.unexpected


async def watched_sessions(args: argparse.Namespace, report: dict[str, Any]) -> dict[bool, list[WatchCell]]:
    server = DashServer("datapulse", dashboard="on")
    cells: dict[bool, list[WatchCell]] = {False: [], True: []}
    server.start()
    try:
        await server.wait_ready()
        state = await check_dashboard_state(server)
        report["q2_server"] = {"command": server.command(), "fast_stack": server.fast_stack(), "check": state}
        ticket = await sign_in(server)
        log("question 2, verify: one session unwatched and one watched, every answer and frame checked")
        for watched in (False, True):
            cell = await api_sessions_cell(server, ticket, 1, 0.2, watched=watched)
            log(
                f"  {'watched' if watched else 'unwatched':9} {cell.cell.ok} ok / {cell.cell.bad} bad, frames "
                f"{cell.frames}+{cell.dropped} dropped of {cell.expected_frames}"
            )
            if cell.flagged:
                raise SystemExit(f"verification failed: {cell.cell.errors} {cell.watch_errors}\n{server.log_tail()}")
        for watched in (False, True):
            await wait_idle([server])
            await api_sessions_cell(server, ticket, WATCH_CONCURRENCY, args.warmup, watched=watched)
        for rnd in range(args.rounds):
            order = [False, True] if rnd % 2 == 0 else [True, False]
            log(f"question 2, round {rnd + 1}/{args.rounds}: {' '.join('W' if w else 'U' for w in order)}")
            for watched in order:
                await wait_idle([server])
                cell = await api_sessions_cell(server, ticket, WATCH_CONCURRENCY, args.duration, watched=watched)
                cells[watched].append(cell)
                c = cell.cell
                flag = "  FLAGGED " + "; ".join((c.errors + cell.watch_errors)[:2]) if cell.flagged else ""
                log(
                    f"  {'watched' if watched else 'unwatched':9} {c.rate:8,.0f} calls/s  p50 {c.percentile(0.5):6.1f}"
                    f"  p99 {c.percentile(0.99):6.1f} ms  srv {c.server_cpu:4.0%}  {cell.cpu_per_1k:.3f} CPU s/1k  "
                    f"RSS {cell.rss / 2**20:.0f} MiB  frames {cell.frames:,} + {cell.dropped:,} dropped of "
                    f"{cell.expected_frames:,}  {c.ok} ok/{c.bad} bad{flag}"
                )
        return cells
    finally:
        stop_all([server], report)


# --- report -------------------------------------------------------------------------------------------------------
Measured = IdleCell | WatchCell
Getter = Callable[[Measured], float]


def rate_of(x: Measured) -> float:
    return x.cell.rate


def p50_of(x: Measured) -> float:
    return x.cell.percentile(0.5)


def p99_of(x: Measured) -> float:
    return x.cell.percentile(0.99)


def cpu1k_of(x: Measured) -> float:
    return x.cpu_per_1k


def rss_of(x: Measured) -> float:
    return x.rss / 2**20


def per_round(mine: Sequence[Measured], base: Sequence[Measured], get: Getter) -> list[float]:
    """``get(mine) / get(base)`` for each round (the cells of one round are paired)."""
    return [get(a) / get(b) for a, b in zip(mine, base, strict=True) if get(b) > 0]


def med(cells: Sequence[Measured], get: Getter) -> float:
    return statistics.median(get(c) for c in cells) if cells else float("nan")


def ratio_short(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}×" if values else "n/a"


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count()
    return f"{platform.platform()}; {cores} cores{f' ({model})' if model else ''}; Python {platform.python_version()}"


def okbad(cells: Sequence[Measured]) -> str:
    bad = sum(c.cell.bad + c.cell.timeouts + c.cell.setup_failed for c in cells)
    return f"{sum(c.cell.ok for c in cells):,}/{bad}"


def q1_table(q1: dict[tuple[str, str], list[IdleCell]]) -> list[str]:
    lines = [
        "| load (c=32) | configuration | calls/s [min–max] | ÷A calls/s [min–max] | p50 / p99 ms | ÷A p50 / p99 "
        "| server CPU s / 1k calls | ÷A | RSS MiB | ÷A | other load CPU0 / CPU1 | ok/bad |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for load, load_label in LOADS.items():
        base = q1[("A", load)]
        for key, cfg in CONFIGS.items():
            runs = q1[(key, load)]
            if not runs:
                continue
            rate, lo, hi = spread([r.cell.rate for r in runs])
            flag = " ⚠" if any(r.cell.flagged for r in runs) else ""
            if key == "A":
                ratio_cols = ["baseline", "—", "—", "—"]
            else:
                ratio_cols = [
                    fmt_ratio(per_round(runs, base, rate_of)),
                    f"{ratio_short(per_round(runs, base, p50_of))} / {ratio_short(per_round(runs, base, p99_of))}",
                    ratio_short(per_round(runs, base, cpu1k_of)),
                    ratio_short(per_round(runs, base, rss_of)),
                ]
            lines.append(
                f"| {load_label} | {cfg.label}{flag} | {rate:,.0f} [{lo:,.0f}–{hi:,.0f}] | {ratio_cols[0]} "
                f"| {med(runs, p50_of):.1f} / {med(runs, p99_of):.1f} | {ratio_cols[1]} | {med(runs, cpu1k_of):.3f} "
                f"| {ratio_cols[2]} | {med(runs, rss_of):.0f} | {ratio_cols[3]} | {other_load([r.cell for r in runs])} "
                f"| {okbad(runs)} |"
            )
    return lines


def q1_interpretation(q1: dict[tuple[str, str], list[IdleCell]], rounds: int) -> str:
    parts = []
    for key in ("B", "C"):
        figures = []
        for load in LOADS:
            runs, base = q1[(key, load)], q1[("A", load)]
            rates = per_round(runs, base, rate_of)
            if not rates:
                continue
            band = f" [{min(rates):.2f}–{max(rates):.2f}]" if len(rates) > 1 else ""
            figures.append(
                f"{load} throughput {ratio_short(rates)}{band}, "
                f"CPU/1k calls {ratio_short(per_round(runs, base, cpu1k_of))}, "
                f"RSS {ratio_short(per_round(runs, base, rss_of))}"
            )
        parts.append(f"{key}÷A: " + "; ".join(figures))
    unity = []
    for key in ("B", "C"):
        for load in LOADS:
            rates = per_round(q1[(key, load)], q1[("A", load)], rate_of)
            if len(rates) > 1:
                inside = min(rates) <= 1.0 <= max(rates)
                unity.append(f"{key}/{load} {'includes' if inside else 'excludes'} 1.00")
    noise = (
        f" Per-round range of the throughput ratio: {', '.join(unity)}."
        if unity
        else f" {rounds} round: no per-round range, so no noise band."
    )
    return "**Reading:** " + " | ".join(parts) + "." + noise


def q2_table(q2: dict[bool, list[WatchCell]]) -> list[str]:
    lines = [
        "| sessions (c=8, one call at a time) | calls/s [min–max] | ÷unwatched calls/s [min–max] | p50 / p99 ms "
        "| ÷unwatched p50 / p99 | server CPU s / 1k calls | ÷unwatched | RSS MiB (end of window) | ÷unwatched "
        "| frames seen / dropped / expected | other load CPU0 / CPU1 | ok/bad |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = q2[False]
    for watched in (False, True):
        runs = q2[watched]
        if not runs:
            continue
        rate, lo, hi = spread([r.cell.rate for r in runs])
        flag = " ⚠" if any(r.flagged for r in runs) else ""
        label = "watched: one `GET /dashboard/api/watch` reader per session" if watched else "unwatched (baseline)"
        if watched:
            cols = [
                fmt_ratio(per_round(runs, base, rate_of)),
                f"{ratio_short(per_round(runs, base, p50_of))} / {ratio_short(per_round(runs, base, p99_of))}",
                ratio_short(per_round(runs, base, cpu1k_of)),
                ratio_short(per_round(runs, base, rss_of)),
            ]
            frames = (
                f"{sum(r.frames for r in runs):,} / {sum(r.dropped for r in runs):,} / "
                f"{sum(r.expected_frames for r in runs):,}"
            )
        else:
            cols = ["baseline", "—", "—", "—"]
            frames = "—"
        lines.append(
            f"| {label}{flag} | {rate:,.0f} [{lo:,.0f}–{hi:,.0f}] | {cols[0]} | {med(runs, p50_of):.1f} / "
            f"{med(runs, p99_of):.1f} | {cols[1]} | {med(runs, cpu1k_of):.3f} | {cols[2]} "
            f"| {med(runs, rss_of):.0f} | {cols[3]} "
            f"| {frames} | {other_load([r.cell for r in runs])} | {okbad(runs)} |"
        )
    return lines


def q2_interpretation(q2: dict[bool, list[WatchCell]]) -> str:
    runs, base = q2[True], q2[False]
    if not runs or not base:
        return "**Reading:** no cells."
    rates = per_round(runs, base, rate_of)
    band = f" [{min(rates):.2f}–{max(rates):.2f}]" if len(rates) > 1 else ""
    seen = sum(r.frames for r in runs)
    dropped = sum(r.dropped for r in runs)
    expected = sum(r.expected_frames for r in runs)
    accounted = "all accounted for" if seen + dropped == expected else f"{expected - seen - dropped:,} unaccounted"
    return (
        f"**Reading:** watched ÷ unwatched: throughput {ratio_short(rates)}{band}, "
        f"p50 {ratio_short(per_round(runs, base, p50_of))}, p99 {ratio_short(per_round(runs, base, p99_of))}, "
        f"server CPU per 1k calls {ratio_short(per_round(runs, base, cpu1k_of))}, "
        f"RSS {ratio_short(per_round(runs, base, rss_of))}; "
        f"the watchers saw {seen:,} of {expected:,} frames and were told of {dropped:,} dropped ({accounted})."
    )


def render(
    args: argparse.Namespace,
    report: dict[str, Any],
    q1: dict[tuple[str, str], list[IdleCell]],
    q2: dict[bool, list[WatchCell]],
) -> str:
    v = report["versions"]
    out = [
        "# Dashboard cost: same-run benchmark",
        "",
        f"* Command: `{report['command']}`",
        f"* Machine: {report['machine']}",
        "* Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"* Rounds: {args.rounds} × {args.duration:g} s per cell (warm-up {args.warmup:g} s per server and load, "
        "not counted); configuration order rotated each round (round 1: A B C), load order alternated; idle wait "
        "before every cell; every response checked (id, echo text, no error)",
        f"* Pinning: {report['pinning']} (`taskset -c 0` on every server, as `bench/servers.py` does); "
        f"fd limit {report['fd_limit']}",
    ]
    for key, info in report.get("q1_servers", {}).items():
        out.append(f"* Server {key}: `{info['command']}` ({info['fast_stack']} loaded; {info['check']})")
    if "q2_server" in report:
        info = report["q2_server"]
        out.append(f"* Question 2 server (fresh): `{info['command']}` ({info['fast_stack']} loaded)")
    poller = report.get("poller", {})
    out += [
        "",
        "## 1. An idle dashboard (c=32 closed loop; ratios ÷A per round, median over rounds)",
        "",
        'C\'s "page open": one keep-alive connection, dashboard ticket from one `POST /dashboard/api/sign-in`; each '
        f"tick `GET {', '.join(p.removeprefix('/dashboard/api/') for p in POLL_PATHS)}`, then 2 s after the answers, "
        f"for the whole of question 1: {poller.get('ticks', 0)} ticks, {poller.get('requests', 0)} requests, "
        f"{poller.get('bad', 0)} bad, {poller.get('sign_ins', 0)} sign-in(s), up to "
        f"{poller.get('max_sessions_listed', 0)} sessions listed; ticks inside C's cells: "
        f"{', '.join(str(c.polls) for load in LOADS for c in q1.get(('C', load), []))}.",
        "",
        *q1_table(q1),
        "",
        q1_interpretation(q1, args.rounds),
        "",
        f"## 2. A watched session ({WATCH_CONCURRENCY} DataPulse API sessions; ratios ÷unwatched per round)",
        "",
        "Each session: `GET /events?session_id=` held, `POST /message?session_id=` call_tool echo, one call at a "
        "time; ended with `DELETE /events?session_id=` after the window. Watched: one `GET /dashboard/api/watch` "
        "reader per session (dashboard ticket), opened before the window; expected frames = 2 × calls sent "
        "(one `in`, one `out`); seen + dropped must equal expected, and each stream must end with `event: closed`.",
        "",
        *q2_table(q2),
        "",
        q2_interpretation(q2),
        "",
        "## Notes",
        "",
        "* The page's own script refreshes only the visible tab's view every 2 s; C fetches three views per tick "
        "(sessions, stats, audit), so it is heavier than one open page.",
        "* No audit sink is configured (as in `bench/servers.py`), so the audit view answers `enabled: false` with "
        "no records: its cost here is that of an empty view.",
        "* Question 1's API sessions (from `bench.loadgen`) are not ended after their cell; they stay open on every "
        "server alike (32 per API cell), so the sessions view lists more of them as the run goes on.",
        "* Server CPU s / 1k calls = server process CPU (user + system, psutil) over the window ÷ calls completed "
        "in it × 1000; C's includes the page's requests. RSS: question 1 after each cell, question 2 at the end of "
        "the window (sessions and watchers open). Other load: CPU used by other processes on the server core / "
        "the client core (the noise on a shared machine).",
    ]
    q1_bad = sum(c.cell.bad + c.cell.timeouts + c.cell.setup_failed for runs in q1.values() for c in runs)
    q2_bad = sum(c.cell.bad + c.cell.timeouts + c.cell.setup_failed for runs in q2.values() for c in runs)
    q1_ok = sum(c.cell.ok for runs in q1.values() for c in runs)
    q2_ok = sum(c.cell.ok for runs in q2.values() for c in runs)
    unaccounted = [c for c in q2[True] if not c.frames_accounted]
    out += [
        "",
        f"Correctness: {q1_ok + q2_ok:,} calls checked ok, {q1_bad + q2_bad} bad; page poller {poller.get('bad', 0)} "
        f"bad answers; watched cells with frames unaccounted for: {len(unaccounted)}."
        + (" **⚠ FLAGGED**" if report["flagged"] else ""),
        f"Wall time: {report['wall_s']:.0f} s.",
    ]
    return "\n".join(out)


# --- main ---------------------------------------------------------------------------------------------------------
def python_shown() -> str:
    """The interpreter as typed from the repository root (``.venv/bin/python``), else its full path."""
    exe = Path(sys.executable)
    return str(exe.relative_to(REPO)) if exe.is_relative_to(REPO) else sys.executable


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="measurement rounds (default 3; quick: 1)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per cell (default 5; quick: 2)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per cell kind (default 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run (1 round, 2 s cells), not for conclusions")
    parser.add_argument("--json", type=Path, default=None, help="also write every raw figure to this JSON file")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown report to this file")
    args = parser.parse_args(argv)
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    args.duration = args.duration if args.duration is not None else (2.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0)
    if args.rounds < 1 or args.duration <= 0:
        parser.error("--rounds must be ≥ 1 and --duration > 0")
    return args


async def main_async(
    args: argparse.Namespace, report: dict[str, Any]
) -> tuple[dict[tuple[str, str], list[IdleCell]], dict[bool, list[WatchCell]]]:
    q1 = await idle_dashboard(args, report)
    q2 = await watched_sessions(args, report)
    return q1, q2


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    report: dict[str, Any] = {
        "command": shlex.join([python_shown(), "-m", "bench.dashboard", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine(),
        "versions": versions(),
        "pinning": pin_client(),
        "fd_limit": raise_fd_limit()[0],
        "config": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "idle_concurrency": IDLE_CONCURRENCY,
            "watch_concurrency": WATCH_CONCURRENCY,
            "poll_interval_s": POLL_INTERVAL_S,
            "poll_paths": list(POLL_PATHS),
        },
    }
    q1, q2 = uvloop.run(main_async(args, report))
    report["wall_s"] = time.monotonic() - started
    report["flagged"] = (
        any(c.cell.flagged for runs in q1.values() for c in runs)
        or any(c.flagged for runs in q2.values() for c in runs)
        or bool(report.get("poller", {}).get("bad"))
        or bool(report.get("server_tracebacks"))
    )
    text = render(args, report, q1, q2)
    print(text, flush=True)
    if args.out is not None:
        args.out.write_text(text + "\n")
    if args.json is not None:
        report["q1_cells"] = {f"{key}@{load}": [c.summary() for c in runs] for (key, load), runs in q1.items()}
        report["q1_ratios"] = {
            f"{key}/A@{load}": {
                name: per_round(q1[(key, load)], q1[("A", load)], get)
                for name, get in (
                    ("calls_per_s", rate_of),
                    ("p50", p50_of),
                    ("p99", p99_of),
                    ("cpu_per_1k", cpu1k_of),
                    ("rss", rss_of),
                )
            }
            for key in ("B", "C")
            for load in LOADS
        }
        report["q2_cells"] = {("watched" if w else "unwatched"): [c.summary() for c in runs] for w, runs in q2.items()}
        report["q2_ratios"] = {
            name: per_round(q2[True], q2[False], get)
            for name, get in (
                ("calls_per_s", rate_of),
                ("p50", p50_of),
                ("p99", p99_of),
                ("cpu_per_1k", cpu1k_of),
                ("rss", rss_of),
            )
        }
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if report["flagged"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
