# ruff: noqa: RUF001
"""What the dashboard costs: the same DataPulse server with the dashboard off, on and idle, and on with a page
open; and DataPulse API sessions unwatched vs watched (``GET /dashboard/api/watch``). Ratios against a baseline
measured in the same run.

Usage (from the repository root)::

    .venv/bin/python -m bench.dashboard                  # full run: 3 rounds x 5 s cells
    .venv/bin/python -m bench.dashboard --quick          # smoke run (1 round x 2 s cells)
    .venv/bin/python -m bench.dashboard --rounds 5 --duration 8 --json out.json --markdown report.md

Question 1 (part ``idle``), an idle dashboard: three ``datapulse serve bench.echo_app:app`` processes as
`bench.servers` starts them, (A) ``--dashboard off``, (B) ``--dashboard on`` with nobody looking, (C) ``--dashboard
on`` with one "page open": a task that signs in once for a dashboard ticket and then, like the page's script,
fetches the sessions, stats and audit views and waits 2 s after the answers, for as long as question 1 runs.
Loads at c=32: DataPulse API ``call_tool`` (echo) and 2026-07-28 stateless ``/mcp`` tools/call.
Question 2 (part ``watched``), a watched session: one fresh ``--dashboard on`` process; 8 DataPulse API sessions
with known ids, each one call at a time, without and with one watcher per session. See the "Dashboard cost"
paragraph of bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/dashboard.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Bench, Column, Compare, Defaults, Phase, Runs, Target, extra_median
from bench.httpclient import HttpConnection, build_request, connect
from bench.loadgen import CLIENTS, SETUP_TIMEOUT_S, ApiClient, CellResult, Endpoint, gather_limited, run_cell
from bench.servers import TOKEN, Server, log

WATCH_CONCURRENCY = 8
POLL_INTERVAL_S = 2.0
"""The page's ``POLL_MS``: the next refresh starts 2 s after the previous one answered."""
POLL_PATHS = ("/dashboard/api/sessions", "/dashboard/api/stats", "/dashboard/api/audit?limit=200")
"""What the "page open" task fetches on each tick (the audit limit is the page's default, 200)."""
CLOSE_TIMEOUT_S = 10.0

LOADS = {"api": "DataPulse API call_tool (echo)", "modern": "/mcp 2026-07-28 stateless tools/call (echo)"}
CONFIGS = {
    "A": ("off", "--dashboard off (baseline)"),
    "B": ("on", "--dashboard on, no page open"),
    "C": ("on", "--dashboard on, one page open"),
}
IDLE_TARGETS = tuple(
    Target(f"{key}-{load}", f"{key}: {text}; {LOADS[load]}", key, load, ("idle",))
    for load in LOADS
    for key, (_state, text) in CONFIGS.items()
)
WATCH_TARGETS = (
    Target("unwatched", "8 API sessions, one call at a time, unwatched (baseline)", "Q2", "api-known", ("watched",)),
    Target("watched", "the same, one `GET /dashboard/api/watch` reader per session", "Q2", "api-known", ("watched",)),
)
COMPARISONS = (
    *(
        Compare(f"{LOADS[load]}: {key} ({CONFIGS[key][1]}) ÷ A", f"{key}-{load}", f"A-{load}")
        for load in LOADS
        for key in ("B", "C")
    ),
    Compare("API sessions: watched ÷ unwatched", "watched", "unwatched"),
)


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


async def check_dashboard_state(server: Server) -> str:
    """``GET /dashboard/api/overview`` must answer 200 with the dashboard on and 404 with it off."""
    status, _body = await one_request(endpoint_of(server), "GET", "/dashboard/api/overview")
    expected = 200 if "on" in server.args else 404
    if status != expected:
        raise SystemExit(f"{server.name} ({' '.join(server.args)}): GET /dashboard/api/overview answered {status}")
    return f"overview HTTP {status}"


def dash_server(name: str, state: str) -> Server:
    return Server("datapulse", name=name, args=("--dashboard", state))


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

    def summary(self) -> dict[str, Any]:
        return {
            "ticks": self.ticks,
            "requests": self.requests,
            "bad": self.bad,
            "sign_ins": self.sign_ins,
            "max_sessions_listed": self.max_sessions_listed,
            "errors": self.errors,
        }


class RssProbe:
    """`run_cell`'s ``server_cpu_seconds`` that also samples RSS at its second call (the end of the window)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.calls = 0
        self.rss = 0

    def __call__(self) -> float:
        self.calls += 1
        if self.calls == 2:
            self.rss = self.server.rss()
        return self.server.cpu_seconds()


class IdlePhase(Phase):
    """Question 1: A, B, C; C has the page poller running from verification to the end."""

    async def started(self) -> None:
        for name, server in self.servers.items():
            self.bench.report["servers"][name]["note"] = await check_dashboard_state(server)
        self.poller = PagePoller(self.servers["C"]) if "C" in self.servers else None
        self.poll_task: asyncio.Task[None] | None = None

    async def before_rounds(self) -> None:
        if self.poller is None:
            return
        self.poll_task = asyncio.create_task(self.poller.run())
        await asyncio.sleep(0.5)
        if self.poll_task.done():
            self.poll_task.result()  # raises what stopped the poller (sign-in refused)
        if self.poller.bad:
            raise SystemExit(f"the page poller got bad answers: {self.poller.errors}")
        log(f"  page poller on C: {self.poller.requests} requests ok")

    async def cell(self, target: Target, conc: int, duration_s: float, timed: bool) -> CellResult:
        ticks = self.poller.ticks if self.poller is not None else 0
        server = self.servers[target.server]
        result = await super().cell(target, conc, duration_s, timed)
        result.extra["rss_mib"] = server.rss() / 2**20
        if target.server == "C" and self.poller is not None:
            result.extra["page_polls"] = self.poller.ticks - ticks
        return result

    async def finished(self) -> None:
        if self.poll_task is not None and self.poll_task.done():
            self.poll_task.result()

    async def stopping(self) -> None:
        poller, task = getattr(self, "poller", None), getattr(self, "poll_task", None)
        if poller is None:
            return
        if task is not None:
            poller.stop()
            done, _ = await asyncio.wait({task}, timeout=SETUP_TIMEOUT_S + 5)
            if not done:
                task.cancel()
                await asyncio.wait({task}, timeout=5)
            if task.done() and not task.cancelled() and task.exception() is not None:
                poller.errors.append(f"the poller stopped: {task.exception()!r}")
                poller.bad += 1
        self.bench.report["poller"] = poller.summary()


# --- question 2: watched sessions ---------------------------------------------------------------------------------
class KnownSessionClient(ApiClient):
    """`ApiClient` (its session id is known before setup, so it can be watched) that counts the calls it sends and
    ends its session with ``DELETE /events?session_id=`` at teardown."""

    kind = "api-known"

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self.session_id = "dash-bench-" + self.session_id
        self.sent = 0
        self.close_error: str | None = None

    async def call(self, rid: int) -> tuple[bool, float, float]:
        self.sent += 1
        return await super().call(rid)

    async def teardown(self) -> None:
        if self.stream is not None:
            try:
                if self.post is None or self.post.closed:
                    self.post = await connect(self.endpoint.host, self.endpoint.port)
                path = f"/events?session_id={self.session_id}"
                status, _ = await get_json(self.post, self.endpoint, "DELETE", path)
                self.close_error = None if status == 200 else f"DELETE /events: HTTP {status}"
            except (ConnectionError, TimeoutError) as exc:
                self.close_error = f"DELETE /events: {exc!r}"
        await super().teardown()


CLIENTS[KnownSessionClient.kind] = KnownSessionClient


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


class WatchPhase(Phase):
    """Question 2: a fresh ``--dashboard on`` server, API sessions unwatched vs watched."""

    async def started(self) -> None:
        server = self.servers["Q2"]
        self.bench.report["servers"]["Q2"]["note"] = await check_dashboard_state(server)
        self.ticket = await sign_in(server)

    async def cell(self, target: Target, conc: int, duration_s: float, timed: bool) -> CellResult:
        """`run_cell` with, when watched, one watcher per session opened before the window. Every session is ended
        (DELETE) at teardown; a watcher must then see ``event: closed``, and its frames seen + dropped must equal
        2 x the calls its session sent (one ``in`` and one ``out`` frame per call)."""
        server = self.servers["Q2"]
        watches: list[Watch] = []

        async def prepare(clients: list[KnownSessionClient]) -> None:
            if target.key == "watched":
                watches.extend(Watch(endpoint_of(server, self.ticket), c.session_id) for c in clients)
                for outcome in await gather_limited([asyncio.wait_for(w.open(), SETUP_TIMEOUT_S) for w in watches], 64):
                    if isinstance(outcome, BaseException):
                        raise outcome

        async def finish(clients: list[KnownSessionClient], result: CellResult) -> None:
            for client in clients:
                if client.close_error is not None:
                    result.bad += 1
                    result.errors.append(client.close_error)
            opened = [w.closed for w in watches if w.closed is not None and w.conn is not None]
            if opened:
                await asyncio.wait(opened, timeout=CLOSE_TIMEOUT_S)
            if not watches:
                return
            problems: list[str] = []
            closed = sum(1 for w in watches if w.closed is not None and w.closed.done())
            for watch in watches:
                problems += watch.errors[:2]
                if watch.other_events:
                    problems.append(f"{watch.other_events} unexpected events on a watch stream")
                watch.close()
            if closed < len(watches):
                problems.append(f"{len(watches) - closed} watch stream(s) never sent event: closed")
            e = result.extra
            e["expected_frames"] = 2 * sum(c.sent for c in clients)
            e["frames_seen"] = sum(w.frames for w in watches)
            e["frames_in"] = sum(w.frames_in for w in watches)
            e["frames_out"] = sum(w.frames_out for w in watches)
            e["frames_dropped"] = sum(w.dropped for w in watches)
            e["dropped_events"] = sum(w.dropped_events for w in watches)
            e["closed_events"] = closed
            if e["frames_seen"] + e["frames_dropped"] != e["expected_frames"]:
                problems.append(f"frames seen + dropped ≠ 2 × calls sent ({e['expected_frames']})")
            e["watch_errors"] = problems[:5]
            result.check_failures += len(problems)
            result.errors += problems[:2]

        probe = RssProbe(server)
        result = await run_cell(
            target.kind,
            endpoint_of(server),
            conc,
            duration_s,
            server_cpu_seconds=probe,
            prepare=prepare,
            finish=finish,
        )
        result.extra["rss_mib"] = probe.rss / 2**20
        return result

    def describe(self, cell: CellResult) -> str:
        e = cell.extra
        if "expected_frames" not in e:
            return ""
        return f"  frames {e['frames_seen']:,} + {e['frames_dropped']:,} dropped of {e['expected_frames']:,}"


FRAME_KEYS = ("frames_seen", "frames_dropped", "expected_frames")


def frames(runs: Runs) -> str:
    if not any("expected_frames" in c.extra for c in runs):
        return "—"
    seen, dropped, expected = (sum(c.extra.get(k, 0) for c in runs) for k in FRAME_KEYS)
    return f"{seen:,} / {dropped:,} / {expected:,}"


class Dashboard(Bench):
    prog = "bench.dashboard"
    title = "Dashboard cost: same-run benchmark"
    defaults = Defaults(rounds=3, duration=5.0, warmup=1.0, concurrency="32")
    quick = Defaults(rounds=1, duration=2.0, warmup=0.3)
    parts = ("idle", "watched")
    comparisons = COMPARISONS
    ours, theirs, ratio_header = "measured", "baseline", "÷baseline"
    ratio_extras = (("server CPU µs/call", "cpu_per_call_us"), ("RSS", "rss_mib"))
    columns = (
        Column("RSS MiB", extra_median("rss_mib", "{:.0f}")),
        Column("page polls in the window", extra_median("page_polls", "{:.0f}")),
        Column("frames seen / dropped / expected", frames),
    )
    order_note = "; the three servers of a load run back to back"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", dest="markdown", type=Path, help=argparse.SUPPRESS)  # the former name

    def phases(self) -> list[Phase]:
        return [
            IdlePhase(
                self,
                IDLE_TARGETS,
                servers={key: dash_server(key, state) for key, (state, _text) in CONFIGS.items()},
                blocks=[[f"{key}-{load}" for key in CONFIGS] for load in LOADS],
                title="question 1, ",
            ),
            WatchPhase(
                self,
                WATCH_TARGETS,
                servers={"Q2": dash_server("Q2", "on")},
                concurrencies=[WATCH_CONCURRENCY],
                title="question 2, ",
            ),
        ]

    def header_lines(self) -> list[str]:
        poller = self.report.get("poller")
        lines = [
            "* Question 1 (`idle`, servers A, B, C; loads at the `--concurrency`): the same server with the "
            "dashboard off (A, the baseline), on with nobody looking (B), on with one page open (C)."
        ]
        if poller:
            lines.append(
                '* C\'s "page open": one keep-alive connection, a dashboard ticket from one `POST '
                "/dashboard/api/sign-in`; each tick `GET "
                f"{', '.join(p.removeprefix('/dashboard/api/') for p in POLL_PATHS)}`, then 2 s after the answers, "
                f"for the whole of question 1: {poller['ticks']} ticks, {poller['requests']} requests, "
                f"{poller['bad']} bad, {poller['sign_ins']} sign-in(s), up to {poller['max_sessions_listed']} "
                "sessions listed. The page's own script refreshes only the visible tab's view every 2 s, so C is "
                "an upper bound."
            )
        lines += [
            f"* Question 2 (`watched`, server Q2, fresh; c={WATCH_CONCURRENCY}): DataPulse API sessions "
            "(`GET /events?session_id=` held, `POST /message?session_id=` call_tool echo, one call at a time, ended "
            "with `DELETE /events?session_id=` after the window), unwatched vs one `GET /dashboard/api/watch` "
            "reader per session (dashboard ticket) opened before the window; expected frames = 2 × calls sent; "
            "seen + dropped must equal expected, and each watch stream must end with `event: closed`.",
            "* Every server has the audit file sink on (`bench/servers.py`), so the audit view reads real records. "
            "Question 1's API sessions are not ended after their cell; they stay open on every server alike, so "
            "the sessions view lists more of them as the run goes on. RSS: question 1 after each cell, question 2 "
            "at the end of the window (sessions and watchers open). C's server CPU includes the page's requests.",
        ]
        return lines

    def footer_lines(self) -> list[str]:
        watched = [c for (key, _), runs in self.results.cells.items() if key == "watched" for c in runs]
        if not watched:
            return []
        seen, dropped, expected = (sum(c.extra.get(k, 0) for c in watched) for k in FRAME_KEYS)
        unaccounted = sum(1 for c in watched if c.check_failures)
        return [
            f"Watchers: saw {seen:,} of {expected:,} frames and were told of {dropped:,} dropped; watched cells with "
            f"frames unaccounted for or a stream not closed: {unaccounted}."
        ]

    def problems(self) -> list[str]:
        poller = self.report.get("poller")
        return [f"the page poller got bad answers: {poller['errors']}"] if poller and poller["bad"] else []


def main(argv: list[str] | None = None) -> None:
    Dashboard.main(argv)


if __name__ == "__main__":
    main()
