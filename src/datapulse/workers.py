"""``datapulse serve --workers N``: N worker processes on one listening socket, under a supervisor.

Each worker is a whole DataPulse instance: it builds its own app with `create_app` and serves it with
`DataPulseServer`, so the drain order of one process (streams ended with ``retry:``, in-flight calls
finished, bounded) holds in every worker. Any worker may accept any connection, so consecutive requests of
one session reach different workers: the workers share sessions through Redis exactly as separate machines
do, and `Supervisor` requires cluster mode (``redis_url``).

The supervisor (the process that ran ``datapulse serve``) serves nothing itself. It

- binds the socket once (uvicorn's ``Config.bind_socket``) and hands a duplicate to every worker;
- starts workers with the ``spawn`` start method (a fresh interpreter: no inherited event loop, threads or
  locks); each reports over a pipe once its server listens;
- calls ``on_ready`` with the bound URL when every worker has started, or stops them all and returns
  `STARTUP_FAILURE` when one exits before starting;
- replaces a worker that dies, after a backoff of `RESTART_BACKOFF_S` doubling up to `MAX_RESTART_BACKOFF_S`
  (reset once a worker has lived `STABLE_AFTER_S`);
- on SIGINT or SIGTERM sends SIGTERM to every worker (each drains, see `datapulse.app.shutdown`), waits up
  to ``graceful_shutdown_timeout_s`` + `STOP_GRACE_S`, then kills what is left; a second signal kills at
  once;
- runs prometheus-client's multiprocess mode (https://prometheus.github.io/client_python/multiprocess/):
  the workers write to ``PROMETHEUS_MULTIPROC_DIR`` if set (emptied first), else to a temporary directory
  removed at exit, so ``/metrics`` on any worker reports all of them; a dead worker's live gauges are
  dropped with ``mark_process_dead``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Final

from prometheus_client import multiprocess

from datapulse.config import ConfigurationError, Settings
from datapulse.metrics import MULTIPROC_DIR_ENV

__all__ = [
    "MAX_RESTART_BACKOFF_S",
    "RESTART_BACKOFF_S",
    "STABLE_AFTER_S",
    "STARTUP_FAILURE",
    "STOP_GRACE_S",
    "Supervisor",
]

log = logging.getLogger("datapulse.workers")

STARTUP_FAILURE: Final = 3
"""Exit status of a worker that never started serving, and of the supervisor when one did (uvicorn's value)."""
RESTART_BACKOFF_S: Final = 0.5
"""Delay before replacing a worker that died; doubled for each further death in a row."""
MAX_RESTART_BACKOFF_S: Final = 30.0
STABLE_AFTER_S: Final = 60.0
"""A worker that lived this long resets its slot's backoff."""
STOP_GRACE_S: Final = 5.0
"""At shutdown, how long past ``graceful_shutdown_timeout_s`` a worker may take before it is killed."""

_READY: Final = "ready"
_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def run_worker(
    settings: Settings, sockets: list[socket.socket], ready: Connection, lifeline: Connection, json_logs: bool | None
) -> None:
    """One worker process: build the app, serve it on ``sockets`` until SIGTERM, report start-up on ``ready``.

    ``lifeline`` is the read end of a pipe only the supervisor writes to (it never does): when the supervisor
    dies, even by SIGKILL, the read ends with EOF and the worker drains and exits as on SIGTERM, so no worker
    outlives its supervisor.

    Exits with `STARTUP_FAILURE` when the app cannot be built or the server does not start.
    """
    threading.Thread(target=_exit_with_supervisor, args=(lifeline,), name="supervisor-lifeline", daemon=True).start()
    from datapulse.app import create_app, runtime_of
    from datapulse.logs import configure_logging
    from datapulse.server import DataPulseServer, uvicorn_config
    from datapulse.tracing import configure_tracing

    configure_logging(settings.log_level, json=json_logs)
    try:
        app = create_app(settings)
        runtime = runtime_of(app)
        configure_logging(settings.log_level, json=json_logs, node_id=runtime.node_id)
        configure_tracing(settings.otlp_endpoint, runtime.server.name)
    except (ConfigurationError, RuntimeError) as exc:
        log.error("worker cannot start: %s", exc)
        sys.exit(STARTUP_FAILURE)

    def report(_url: str) -> None:
        ready.send(_READY)

    server = DataPulseServer(
        uvicorn_config(app, settings),
        app,
        on_started=report,
        freeze_gc=True,
        gc_gen0_threshold=settings.gc_gen0_threshold,
    )
    server.run(sockets)
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _exit_with_supervisor(lifeline: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        while True:
            lifeline.recv()
    log.warning("the supervisor is gone; draining and exiting")
    os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class _Slot:
    """One worker position: its current process (None while waiting to be replaced) and restart backoff."""

    index: int
    process: BaseProcess | None = None
    ready_conn: Connection | None = None
    lifeline: Connection | None = None
    """The write end of the worker's lifeline pipe (see `run_worker`), held open while the worker lives."""
    started_at: float = 0.0
    ready: bool = False
    failures: int = 0
    restart_at: float | None = None


@dataclass
class _MetricsDirectory:
    path: str
    owned: bool

    @classmethod
    def prepare(cls) -> _MetricsDirectory:
        """``PROMETHEUS_MULTIPROC_DIR`` emptied (created if missing), else a new temporary directory; the
        variable is set in this process's environment so the workers inherit it."""
        configured = os.environ.get(MULTIPROC_DIR_ENV)
        if configured:
            os.makedirs(configured, exist_ok=True)
            for name in os.listdir(configured):
                if name.endswith(".db"):
                    os.remove(os.path.join(configured, name))
            return cls(configured, owned=False)
        path = tempfile.mkdtemp(prefix="datapulse-metrics-")
        os.environ[MULTIPROC_DIR_ENV] = path
        return cls(path, owned=True)

    def process_died(self, pid: int) -> None:
        multiprocess.mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]

    def remove(self) -> None:
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)
            os.environ.pop(MULTIPROC_DIR_ENV, None)


@dataclass
class Supervisor:
    """Run ``settings.workers`` worker processes serving ``settings`` on one socket until SIGINT/SIGTERM.

    Args:
        settings: the settings every worker builds its app from (cluster mode required).
        json_logs: the workers' log format (`datapulse.logs.configure_logging`'s ``json``).
        on_ready: called once with ``http://host:port`` when every worker serves.

    Raises:
        ConfigurationError: from the constructor, when ``settings.workers`` > 1 without ``redis_url``.
    """

    settings: Settings
    json_logs: bool | None = None
    on_ready: Callable[[str], None] | None = None
    _slots: list[_Slot] = field(default_factory=list, init=False)
    _signals: list[int] = field(default_factory=list, init=False)
    _wake_read: int = field(default=-1, init=False)
    _wake_write: int = field(default=-1, init=False)

    def __post_init__(self) -> None:
        if self.settings.workers > 1 and not self.settings.cluster:
            raise ConfigurationError(
                f"--workers {self.settings.workers} needs cluster mode (--redis-url / DATAPULSE_REDIS_URL): "
                "each worker is a separate process and any of them may receive any request of a session, "
                "so sessions must be shared through Redis"
            )
        self._context = multiprocessing.get_context("spawn")

    def run(self) -> int:
        """Serve until a stop signal; returns the exit status (0, or `STARTUP_FAILURE`)."""
        from datapulse.server import uvicorn_config

        sock = uvicorn_config(None, self.settings).bind_socket()
        metrics_dir = _MetricsDirectory.prepare()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        try:
            self._slots = [_Slot(index) for index in range(self.settings.workers)]
            for slot in self._slots:
                self._start(slot, sock)
            if self._await_startup(metrics_dir):
                if self.on_ready is not None:
                    self.on_ready(_url_of(sock, tls=self.settings.tls))
                self._supervise(sock, metrics_dir)
            status = 0 if self._signals else STARTUP_FAILURE  # stopped by a signal, or a worker failed to start
            self._stop(metrics_dir)
            return status
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._wake_read)
            os.close(self._wake_write)
            sock.close()
            metrics_dir.remove()

    # --- signals --------------------------------------------------------------------------------------------------

    def _on_signal(self, sig: int, _frame: FrameType | None) -> None:
        self._signals.append(sig)
        with contextlib.suppress(BlockingIOError):  # when full, the pipe already holds a wake-up
            os.write(self._wake_write, b"\0")

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_read, 4096)

    # --- workers ----------------------------------------------------------------------------------------------

    def _start(self, slot: _Slot, sock: socket.socket) -> None:
        ready_read, ready_write = self._context.Pipe(duplex=False)
        lifeline_read, lifeline_write = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=run_worker,
            args=(self.settings, [sock], ready_write, lifeline_read, self.json_logs),
            name=f"datapulse-worker-{slot.index}",
        )
        process.start()
        ready_write.close()
        lifeline_read.close()
        slot.process, slot.ready_conn, slot.lifeline = process, ready_read, lifeline_write
        slot.started_at, slot.ready, slot.restart_at = time.monotonic(), False, None
        log.info("worker %d started", slot.index, extra={"worker": slot.index, "pid": process.pid})

    def _waitables(self) -> list[object]:
        waitables: list[object] = [self._wake_read]
        for slot in self._slots:
            if slot.process is not None:
                waitables.append(slot.process.sentinel)
                if slot.ready_conn is not None and not slot.ready:
                    waitables.append(slot.ready_conn)
        return waitables

    def _collect_ready(self) -> None:
        for slot in self._slots:
            conn = slot.ready_conn
            if conn is None or slot.ready or not conn.poll():
                continue
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = None
            if message == _READY:
                slot.ready = True
                pid = slot.process.pid if slot.process is not None else None
                log.info("worker %d ready", slot.index, extra={"worker": slot.index, "pid": pid})
            conn.close()
            slot.ready_conn = None

    def _reap(self, slot: _Slot, metrics_dir: _MetricsDirectory) -> int | None:
        """If ``slot``'s process has exited: forget it, drop its live gauges, return its exit status."""
        process = slot.process
        if process is None or process.is_alive():
            return None
        process.join()
        status = process.exitcode if process.exitcode is not None else -1
        if process.pid is not None:
            metrics_dir.process_died(process.pid)
        for conn in (slot.ready_conn, slot.lifeline):
            if conn is not None:
                conn.close()
        slot.process, slot.ready_conn, slot.lifeline = None, None, None
        return status

    def _await_startup(self, metrics_dir: _MetricsDirectory) -> bool:
        """Wait until every worker reports it serves (True), or one exits or a stop signal arrives (False)."""
        while not all(slot.ready for slot in self._slots):
            wait(self._waitables())  # type: ignore[arg-type]
            self._drain_wakeups()
            self._collect_ready()
            if self._signals:
                return False
            for slot in self._slots:
                status = self._reap(slot, metrics_dir)
                if status is not None and not slot.ready:
                    log.error(
                        "worker %d exited with status %d before it started serving; stopping",
                        slot.index,
                        status,
                        extra={"worker": slot.index, "exit_status": status},
                    )
                    return False
        return True

    def _supervise(self, sock: socket.socket, metrics_dir: _MetricsDirectory) -> None:
        """Replace workers that die (with backoff) until a stop signal arrives."""
        while not self._signals:
            now = time.monotonic()
            pending = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
            timeout = max(0.0, min(pending) - now) if pending else None
            wait(self._waitables(), timeout)  # type: ignore[arg-type]
            self._drain_wakeups()
            if self._signals:
                return
            self._collect_ready()
            now = time.monotonic()
            for slot in self._slots:
                self._restart_if_dead(slot, sock, metrics_dir, now)

    def _restart_if_dead(self, slot: _Slot, sock: socket.socket, metrics_dir: _MetricsDirectory, now: float) -> None:
        if slot.restart_at is not None:
            if now >= slot.restart_at:
                self._start(slot, sock)
            return
        lived_s = now - slot.started_at
        status = self._reap(slot, metrics_dir)
        if status is None:
            return
        if lived_s >= STABLE_AFTER_S:
            slot.failures = 0
        delay_s = min(MAX_RESTART_BACKOFF_S, RESTART_BACKOFF_S * 2**slot.failures)
        slot.failures += 1
        slot.restart_at = now + delay_s
        log.error(
            "worker %d exited with status %d; replacing it in %.1f s",
            slot.index,
            status,
            delay_s,
            extra={"worker": slot.index, "exit_status": status},
        )

    def _stop(self, metrics_dir: _MetricsDirectory) -> None:
        """SIGTERM every worker, wait for them (bounded), SIGKILL what is left (or all, on a further signal)."""
        handled = len(self._signals)
        live = [slot.process for slot in self._slots if slot.process is not None and slot.process.is_alive()]
        for process in live:
            if process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.graceful_shutdown_timeout_s + STOP_GRACE_S
        while live:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or len(self._signals) > handled:
                for process in live:
                    log.warning("worker pid %s did not stop in time; killing it", process.pid)
                    process.kill()
                break
            wait([self._wake_read, *(process.sentinel for process in live)], remaining)
            self._drain_wakeups()
            live = [process for process in live if process.is_alive()]
        for slot in self._slots:
            if slot.process is not None:
                slot.process.join()
                self._reap(slot, metrics_dir)


def _url_of(sock: socket.socket, *, tls: bool) -> str:
    """``http://host:port`` of the shared listening socket (``https://`` when the workers serve TLS)."""
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{host}:{port}"
