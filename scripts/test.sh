#!/usr/bin/env bash
# Install everything the test suite needs into project-local folders, then run it:
# lint (ruff), types (mypy --strict), and pytest. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
bash scripts/install-node.sh
if ! command -v redis-server >/dev/null; then  # the cluster tests start real Redis servers
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq redis-server
    service redis-server stop >/dev/null 2>&1 || true  # the tests start their own on free ports
  else
    echo "redis-server is needed by the cluster tests: install it (apt-get install redis-server)" >&2
    exit 1
  fi
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest "$@"
