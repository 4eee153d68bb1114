#!/usr/bin/env bash
# Run the same suite against the newest versions pyproject.toml's ranges allow, instead of uv.lock's: an early
# warning that an upstream release will break us when the lock is next updated. Not part of CI (its result
# changes with every release upstream). The venv goes to .venv-latest; uv.lock is not touched.
# Extra arguments go to pytest. After it, scripts/update-lock.sh moves the lock forward.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/install.sh --test  # uv, Node, the JavaScript clients and redis-server, as for test.sh
latest="$root/.venv-latest"
export UV_SYSTEM_CERTS="${UV_SYSTEM_CERTS:-1}" UV_PYTHON_DOWNLOADS="${UV_PYTHON_DOWNLOADS:-never}"
rm -rf "$latest"
.tools/uv/bin/uv venv --quiet --python "$(command -v "${PYTHON:-python3}")" "$latest"
# --resolution highest ignores uv.lock; --exclude-newer is not set, so this is today's newest.
.tools/uv/bin/uv pip install --quiet --python "$latest/bin/python" --resolution highest -e . --group test
echo "== newest versions that differ from uv.lock:"
.tools/uv/bin/uv pip freeze --python "$latest/bin/python" --exclude-editable | sort > "$latest/freeze.txt"
.tools/uv/bin/uv pip freeze --python .venv/bin/python --exclude-editable | sort > "$latest/locked.txt"
diff "$latest/locked.txt" "$latest/freeze.txt" | sed -n 's/^> /  /p' || true
DATAPULSE_VENV="$latest" bash scripts/checks.sh "$@"
