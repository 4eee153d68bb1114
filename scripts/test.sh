#!/usr/bin/env bash
# README's test command. Install everything the suite needs exactly as the locks say (scripts/install.sh
# --test: uv.lock for Python, scripts/lock/node and tests/interop/js package-lock.json files for Node and the
# JavaScript clients, and redis-server), then run it (scripts/checks.sh: ruff, mypy --strict, pytest).
# Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/install.sh" --test
bash "$root/scripts/checks.sh" "$@"
