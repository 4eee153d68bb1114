"""A wheel, and a clean first run: ``uv build`` makes a wheel that installs into a fresh venv outside the
repository (with exactly the locked dependencies) and serves from there; on a terminal the first run shows the
banner and human-readable log lines, not JSON.

uv is the pinned one ``scripts/install.sh`` puts in ``.tools/uv``; packages come from its cache (or the index).
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx2
import pytest

from datapulse import __version__
from tests.support.mcp_http import legacy_call, legacy_initialize
from tests.support.servers import REPO_ROOT, TOKEN, bearer, spawn_datapulse

pytestmark = pytest.mark.anyio

UV = REPO_ROOT / ".tools" / "uv" / "bin" / "uv"
STEP_TIMEOUT_S = 300.0
UV_ENV = {"UV_SYSTEM_CERTS": "1", "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}


def uv(*args: str, cwd: Path = REPO_ROOT) -> str:
    """Run the pinned uv; its stdout. Fails the test with uv's stderr when it fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_PROJECT", "VIRTUAL_ENV"))} | UV_ENV
    done = subprocess.run(
        [str(UV), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, f"uv {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``datapulse`` of a fresh venv outside the repository: the built wheel plus the locked dependencies."""
    if not UV.exists():
        pytest.skip("the pinned uv is missing: run scripts/install.sh (it installs uv into .tools/uv)")
    work = tmp_path_factory.mktemp("wheel")
    uv("build", "--wheel", "--out-dir", str(work / "dist"))
    (wheel,) = (work / "dist").glob("datapulse-*.whl")
    requirements = work / "requirements.txt"
    uv("export", "--frozen", "--no-default-groups", "--no-emit-project", "--format", "requirements-txt",
       "--output-file", str(requirements))  # fmt: skip
    venv = work / "venv"
    uv("venv", "--python", sys.executable, str(venv), cwd=work)
    python = str(venv / "bin" / "python")
    uv("pip", "install", "--python", python, "--require-hashes", "-r", str(requirements), cwd=work)
    uv("pip", "install", "--python", python, "--no-deps", str(wheel), cwd=work)
    return venv / "bin" / "datapulse"


def test_the_wheel_holds_the_package_but_no_tests(tmp_path: Path) -> None:
    if not UV.exists():
        pytest.skip("the pinned uv is missing: run scripts/install.sh (it installs uv into .tools/uv)")
    uv("build", "--wheel", "--out-dir", str(tmp_path))
    (wheel,) = tmp_path.glob(f"datapulse-{__version__}-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "datapulse/__init__.py" in names
    assert "datapulse/cluster/node.py" in names
    for name in ("index.html", "app.css", "app.js"):  # the dashboard's files are package data
        assert f"datapulse/dashboard/static/{name}" in names
    assert not [name for name in names if name.startswith("tests/")], "tests are not shipped"
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    assert "datapulse = " in zipfile.ZipFile(wheel).read(entry_points).decode(), "the datapulse command"


def test_the_installed_command_reports_the_version(installed: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(installed), "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"datapulse, version {__version__}"


async def test_the_installed_server_serves_the_demo_tools_from_outside_the_repository(
    installed: Path, tmp_path: Path
) -> None:
    async with (
        spawn_datapulse(env={"DATAPULSE_TOKEN": TOKEN}, executable=installed, cwd=tmp_path) as server,
        httpx2.AsyncClient(base_url=server.url, headers=bearer(), timeout=10.0) as http,
    ):
        assert (await http.get("/health")).json()["status"] == "ok"
        session_id = await legacy_initialize(http)
        answer = await legacy_call(http, session_id, "tools/list", {})
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"]["tools"], "the demo tools are served"
        page = await http.get("/dashboard/")
        assert page.status_code == 200, "the dashboard is served from the installed package"
        assert "app.js" in page.text


def test_on_a_terminal_the_first_run_shows_the_banner_and_readable_log_lines_not_json(tmp_path: Path) -> None:
    """``datapulse serve`` with its output on a terminal (a pseudo-terminal here), as a first run is."""
    program = Path(sys.executable).parent / "datapulse"
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAPULSE_")} | {"PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [str(program), "serve", "--port", "0"], cwd=tmp_path, env=env, stdout=secondary, stderr=secondary
    )
    os.close(secondary)
    output = b""
    try:
        deadline = time.monotonic() + 30
        while b"Client configuration" not in output or b"startup complete" not in output.lower():
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no banner and startup line within 30 s:\n{output.decode()}"
            readable, _, _ = select.select([primary], [], [], remaining)
            if not readable:
                continue
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break  # the server exited: its output is complete
            if not chunk:
                break
            output += chunk
    finally:
        process.terminate()
        process.wait(timeout=15)
        os.close(primary)
    text = re.sub(r"\x1b\[[0-9;]*m", "", output.decode(errors="replace"))  # the console renderer's colours
    lines = [line for line in text.splitlines() if line.strip()]
    assert any(line.startswith("DataPulse ") and " listening on http://" in line for line in lines), text
    assert "Authorization: Bearer" in text, "a first run shows the generated token once"
    assert not [line for line in lines if line.lstrip().startswith('{"')], "no JSON log lines on a terminal"
    assert any(re.search(r"\[\s*info\s*\]", line) for line in lines), "console-rendered log lines"
