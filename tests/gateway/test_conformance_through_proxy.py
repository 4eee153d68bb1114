"""The official MCP conformance suite against ``datapulse proxy`` in front of the conformance fixture.

The fixture (``tests.conformance.fixture_server:app``) is served as a real upstream in each era the proxy speaks to
(tests/support/http_upstream.py: 2026-07-28 stateless only, 2025 Streamable HTTP sessions only, 2024-11-05 HTTP+SSE
only); ``datapulse proxy --insecure-no-auth`` finds that era at start, and both requirement sets (2025-11-25
sessions, 2026-07-28 stateless) run against the proxy's ``/mcp``. One upstream and one proxy serve both runs of an
era.

Every FAILURE or WARNING check outside the optional tasks extension (tests/conformance/expected-failures.yml) must
be either

* an era boundary: its scenario is in ``conformance-expected-failures-<era>.yml`` next to this file (each entry
  says which message cannot cross which boundary) and its check id in `BOUNDARY_CHECKS`; or
* a known proxy bug of that cell (`KNOWN_PROXY_BUGS`): the cell is then xfail(strict=True), raised only by
  `KnownProxyBug`, so any other failure still fails it, and so does a listed scenario that passes again.

A baselined scenario that passes is stale and fails the test, as the suite's own ``--expected-failures`` does.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from tests.conformance.runner import (
    EXPECTED_FAILURES_FILE,
    ConformanceResult,
    Requirements,
    conformance_unavailable_reason,
    run_conformance,
)
from tests.conformance.test_conformance_datapulse import wait_for_dynamic_tool
from tests.support.http_upstream import Era, spawn_upstream
from tests.support.servers import spawn_datapulse

pytestmark = [pytest.mark.conformance, pytest.mark.anyio]

FIXTURE_APP: Final = "tests.conformance.fixture_server:app"
UPSTREAM_ERAS: Final[tuple[Era, ...]] = ("2026", "2025", "2024")
REQUIREMENTS: Final[tuple[Requirements, ...]] = ("2025-11-25", "2026-07-28")
SUITE_TIMEOUT_S: Final = 600.0
BASELINE_DIR: Final = Path(__file__).resolve().parent

_NO_BACK_CHANNEL: Final[Mapping[str, frozenset[str]]] = {
    "input-required-result-basic-elicitation": frozenset({"sep-2322-elicitation-incomplete"}),
    "input-required-result-basic-sampling": frozenset({"sep-2322-sampling-incomplete"}),
    "input-required-result-basic-list-roots": frozenset({"sep-2322-list-roots-incomplete"}),
    "input-required-result-capability-check": frozenset({"sep-2322-respect-client-capabilities"}),
    "input-required-result-ignore-extra-params": frozenset({"sep-2322-ignore-unexpected-params"}),
    "input-required-result-missing-input-response": frozenset({"sep-2322-missing-response-rerequests"}),
    "input-required-result-multi-round": frozenset({"sep-2322-multi-round-r1"}),
    "input-required-result-multiple-input-requests": frozenset({"sep-2322-multiple-inputs-incomplete"}),
    "input-required-result-non-tool-request": frozenset({"sep-2322-non-tool-incomplete"}),
    "input-required-result-request-state": frozenset({"sep-2322-request-state-incomplete"}),
    "input-required-result-result-type": frozenset({"sep-2322-result-type-included"}),
    "input-required-result-tampered-state": frozenset({"sep-2322-reject-tampered-state"}),
    "server-stateless": frozenset({"sep-2575-http-server-no-independent-requests-on-stream"}),
}
"""A handshake-era upstream asks for input with a request on the call's stream; a 2026-07-28 client has none."""

BOUNDARY_CHECKS: Final[Mapping[Era, Mapping[str, frozenset[str]]]] = {
    "2026": {},
    "2025": _NO_BACK_CHANNEL,
    "2024": _NO_BACK_CHANNEL,
}
"""Per upstream era: the scenarios of its baseline file, and the only checks of each that may fail there."""

KNOWN_PROXY_BUGS: Final[Mapping[tuple[Era, Requirements], tuple[str, frozenset[str]]]] = {}
"""Cells failing because of a proxy gap (something that should work through a proxy), and the scenarios failing
because of it; each cell is xfail(strict=True) until fixed."""


class KnownProxyBug(Exception):
    """Raised when every unexplained failure of a cell is one of its `KNOWN_PROXY_BUGS` scenarios."""


def era_baseline_file(era: Era) -> Path:
    return BASELINE_DIR / f"conformance-expected-failures-{era}.yml"


def read_baseline(path: Path) -> list[str]:
    """The scenario names of a suite-format baseline (``server:`` then ``  - name`` lines; comments ignored)."""
    names: list[str] = []
    in_server = False
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line.startswith((" ", "-")):
            in_server = line == "server:"
        elif in_server and line.lstrip().startswith("- "):
            names.append(line.lstrip()[2:].strip())
    return names


@dataclass(frozen=True)
class Proxied:
    """The proxy in front of a fixture upstream of ``era``: its base URL and the merged baseline file."""

    era: Era
    url: str
    baseline: Path


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", params=UPSTREAM_ERAS, ids=lambda era: f"{era}-upstream")
async def proxied(request: pytest.FixtureRequest) -> AsyncIterator[Proxied]:
    reason = conformance_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    era: Era = request.param
    with tempfile.TemporaryDirectory(prefix="datapulse-proxy-conformance-") as workdir:
        merged = Path(workdir) / "expected-failures.yml"
        names = [*read_baseline(EXPECTED_FAILURES_FILE), *read_baseline(era_baseline_file(era))]
        merged.write_text("server:\n" + "".join(f"  - {name}\n" for name in names), encoding="utf-8")
        async with (
            spawn_upstream(era, app=FIXTURE_APP) as upstream,
            # The suite sends no credentials; loopback without auth is allowed (and explicit).
            spawn_datapulse(["--insecure-no-auth", upstream.mcp_url], command="proxy") as proc,
        ):
            await wait_for_dynamic_tool(proc.url)
            yield Proxied(era, proc.url, merged)


def unexplained(result: ConformanceResult, era: Era) -> dict[str, list[str]]:
    """Per scenario, the failing (or warning) check ids that are neither the tasks extension nor a boundary."""
    boundary = BOUNDARY_CHECKS[era]
    left: dict[str, list[str]] = {}
    for name, checks in result.problems.items():
        if name.startswith("tasks-"):
            continue
        ids = [str(check.get("id")) for check in checks if check.get("id") not in boundary.get(name, ())]
        if ids:
            left[name] = ids
    return left


@pytest.mark.parametrize("era", UPSTREAM_ERAS)
def test_each_era_baseline_file_names_exactly_the_boundary_scenarios(era: Era) -> None:
    assert read_baseline(era_baseline_file(era)) == list(BOUNDARY_CHECKS[era])


@pytest.mark.parametrize("requirements", REQUIREMENTS)
async def test_the_conformance_suite_passes_through_the_proxy_but_for_what_cannot_cross_the_upstream_era(
    proxied: Proxied, requirements: Requirements, request: pytest.FixtureRequest
) -> None:
    reason, bug_scenarios = KNOWN_PROXY_BUGS.get((proxied.era, requirements), ("", frozenset[str]()))
    if bug_scenarios:
        request.applymarker(pytest.mark.xfail(strict=True, raises=KnownProxyBug, reason=reason))
    result = await run_conformance(
        f"{proxied.url}/mcp", requirements, expected_failures=proxied.baseline, timeout_s=SUITE_TIMEOUT_S
    )
    assert result.scenarios, result.report()
    stale = [name for name in BOUNDARY_CHECKS[proxied.era] if name in result.scenarios and name not in result.problems]
    assert not stale, f"baselined for the {proxied.era} upstream but passing: {stale}\n{result.report()}"
    left = unexplained(result, proxied.era)
    unknown = {name: ids for name, ids in left.items() if name not in bug_scenarios}
    assert not unknown, f"unexpected failures: {unknown}\n{result.report()}"
    fixed = sorted(bug_scenarios - left.keys())
    assert not fixed, f"known proxy bug scenarios now pass, remove them from KNOWN_PROXY_BUGS: {fixed}"
    if left:
        raise KnownProxyBug(f"{reason}\n{result.report()}")
    assert result.returncode == 0, result.report()
