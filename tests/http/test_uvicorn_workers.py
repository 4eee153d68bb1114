"""DataPulse under ``uvicorn --workers 2 --factory datapulse.app:create_app`` (uvicorn's own supervisor): with
``PROMETHEUS_MULTIPROC_DIR`` set, /metrics on either worker counts the calls both workers served."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest

from tests.cluster.test_workers import calls_until_both_workers_served
from tests.support.prometheus import scrape, value
from tests.support.servers import REPO_ROOT, TOKEN, LineLog, bearer, drain_lines

pytestmark = pytest.mark.anyio

STARTED = "Application startup complete."


@asynccontextmanager
async def uvicorn_workers(socket_path: Path, metrics_dir: Path) -> AsyncIterator[LineLog]:
    """``uvicorn --workers 2`` serving the behaviour app on a Unix socket; its stderr lines; SIGTERM on exit."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DATAPULSE_")}
    env.update(
        {
            "DATAPULSE_APP": "tests.support.apps:BEHAVIOUR_APP",
            "DATAPULSE_TOKEN": TOKEN,
            "DATAPULSE_METRICS_PUBLIC": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    command = [sys.executable, "-m", "uvicorn", "--factory", "datapulse.app:create_app"]
    command += ["--uds", str(socket_path), "--workers", "2", "--timeout-graceful-shutdown", "5"]
    lines = LineLog()
    async with (
        await anyio.open_process(
            command, env=env, cwd=str(REPO_ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        ) as process,
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(drain_lines, process.stderr, lines)
        try:
            first = await lines.wait_for(lambda line: STARTED in line, timeout_s=30)
            await lines.wait_for(lambda line: STARTED in line, start=first + 1, timeout_s=30)
            yield lines
        finally:
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                await process.wait()


async def test_metrics_under_uvicorn_workers_count_the_calls_of_both_workers(tmp_path: Path) -> None:
    socket_path = tmp_path / "datapulse.sock"
    async with uvicorn_workers(socket_path, metrics_dir=tmp_path):  # the socket file is no .db: not read
        limits = httpx2.Limits(max_keepalive_connections=0)  # a new connection per request: either worker
        transport = httpx2.AsyncHTTPTransport(uds=str(socket_path), limits=limits)
        async with httpx2.AsyncClient(
            transport=transport, base_url="http://localhost", headers=bearer(TOKEN), timeout=20
        ) as client:
            calls = await calls_until_both_workers_served(client)
            for _ in range(4):  # either worker answers; each reports the calls of both
                samples = await scrape(client)
                assert value(samples, "datapulse_tool_calls_total", tool="process_id", outcome="ok") == calls
