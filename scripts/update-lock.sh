#!/usr/bin/env bash
# Move uv.lock to the newest versions pyproject.toml's ranges allow (uv lock --upgrade), print what changed
# (paste it into the commit message), then run the whole suite on the new lock with scripts/test.sh.
# Arguments are passed to `uv lock`, e.g. `--upgrade-package redis` to move only one package (the default
# is --upgrade, everything). The Node locks move with `npm install --package-lock-only` in their folders.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/install.sh  # brings the pinned uv
export UV_SYSTEM_CERTS="${UV_SYSTEM_CERTS:-1}" UV_PYTHON_DOWNLOADS="${UV_PYTHON_DOWNLOADS:-never}"
(($#)) || set -- --upgrade
echo "== uv lock $*"
.tools/uv/bin/uv lock "$@" 2>&1 | grep -E '^(Updated|Added|Removed) ' || echo "(no package changed)"
bash scripts/test.sh
