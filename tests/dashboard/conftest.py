"""The dashboard's browser tests drive Debian's chromium (``/usr/bin/chromium``) with Playwright's async API in the
test's own event loop; screenshots go to `ARTIFACTS` (``DATAPULSE_TEST_ARTIFACTS``, default
``test-artifacts/dashboard`` under the repository), printed at the end of the run."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from tests.support.servers import REPO_ROOT

ARTIFACTS = Path(os.environ.get("DATAPULSE_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts")) / "dashboard"
CHROMIUM = os.environ.get("DATAPULSE_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def artifacts() -> Path:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail("chromium is needed by the dashboard's browser tests: apt-get install chromium (install.sh --test)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
async def browser(artifacts: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if ARTIFACTS.exists() and any(ARTIFACTS.iterdir()):
        terminalreporter.write_line(f"dashboard screenshots: {ARTIFACTS}")
