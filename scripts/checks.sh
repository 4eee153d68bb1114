#!/usr/bin/env bash
# The test suite proper, with the tools of one venv (DATAPULSE_VENV, default .venv): lint (ruff), format
# (ruff format --check), types (mypy --strict) and pytest. Extra arguments go to pytest. Installs nothing:
# scripts/test.sh (from the lock) and scripts/test-latest.sh (newest allowed versions) call it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="${DATAPULSE_VENV:-$root/.venv}"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
"$venv/bin/mypy"
"$venv/bin/pytest" "$@"
