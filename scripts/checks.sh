#!/usr/bin/env bash
# The test suite proper, with the tools of one venv (DATAPULSE_VENV, default .venv): lint (ruff), format
# (ruff format --check), types (mypy --strict) and pytest (on DATAPULSE_TEST_WORKERS workers, default 2). Extra
# arguments go to pytest. Installs nothing:
# scripts/test.sh (from the lock) and scripts/test-latest.sh (newest allowed versions) call it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="${DATAPULSE_VENV:-$root/.venv}"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
"$venv/bin/mypy"
# Two workers by default (pytest-xdist): most tests wait on real servers and processes, so the suite takes about
# 11 minutes instead of 18 on two cores. DATAPULSE_TEST_WORKERS=0 runs it in one process.
"$venv/bin/pytest" -n "${DATAPULSE_TEST_WORKERS:-2}" "$@"
