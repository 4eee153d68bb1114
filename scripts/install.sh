#!/usr/bin/env bash
# Install DataPulse into .venv exactly as uv.lock says (versions and sha256 hashes), with uv itself pinned
# by hash in scripts/lock/uv.txt. Idempotent: a second run checks and changes nothing.
#
#   bash scripts/install.sh          the server and its dependencies (what `datapulse serve` needs)
#   bash scripts/install.sh --test   also the test tools (dependency group "test"), Node 22 and the
#                                    JavaScript clients (scripts/install-node.sh), redis-server, nginx and
#                                    chromium
#
# Environment: PYTHON (default python3, >= 3.11) is the interpreter the venv is made from;
# DATAPULSE_VENV (default .venv) is where it goes.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
with_tests=0
for arg in "$@"; do
  case "$arg" in
    --test) with_tests=1 ;;
    *) echo "install.sh: unknown argument $arg (use --test)" >&2; exit 2 ;;
  esac
done
python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "install.sh: $python not found: install Python >= 3.11" >&2; exit 1; }
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "install.sh: $("$python" --version 2>&1) is too old: DataPulse needs Python >= 3.11" >&2; exit 1; }

# uv, pinned by hash, in a venv of its own (so `uv sync` never removes it from the project's venv).
uv_home="$root/.tools/uv"
uv="$uv_home/bin/uv"
uv_stamp="$(sha256sum scripts/lock/uv.txt | cut -d' ' -f1)"
if [ "$(cat "$uv_home/.installed" 2>/dev/null)" != "$uv_stamp" ]; then
  rm -rf "$uv_home"
  "$python" -m venv "$uv_home"
  "$uv_home/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
    -r scripts/lock/uv.txt
  echo "$uv_stamp" > "$uv_home/.installed"
fi

# Registries reached through a site's own certificate authority (as on our CI machines) are trusted when
# the system store trusts them; uv otherwise uses its bundled Mozilla roots.
export UV_SYSTEM_CERTS="${UV_SYSTEM_CERTS:-1}"
export UV_PYTHON_DOWNLOADS="${UV_PYTHON_DOWNLOADS:-never}"
export UV_PROJECT_ENVIRONMENT="${DATAPULSE_VENV:-$root/.venv}"
groups=(--no-default-groups)
((with_tests)) && groups+=(--group test)
# --frozen: install exactly what uv.lock says and never re-resolve; --exact removes anything else.
"$uv" sync --quiet --frozen --exact "${groups[@]}" --python "$(command -v "$python")"

if ((with_tests)); then
  bash scripts/install-node.sh
  # The cluster tests start real Redis servers and sentinels; tests/deploy/test_nginx.py a real nginx (found on
  # PATH or in /usr/sbin, where Debian puts it); tests/dashboard/test_browser.py Debian's chromium (Playwright's
  # own browser builds cannot be downloaded everywhere).
  if ! command -v redis-server >/dev/null || ! command -v redis-sentinel >/dev/null \
    || ! PATH="$PATH:/usr/sbin" command -v nginx >/dev/null || ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-sentinel nginx chromium >/dev/null
      service redis-server stop >/dev/null 2>&1 || true  # the tests start their own on free ports
      service redis-sentinel stop >/dev/null 2>&1 || true
      service nginx stop >/dev/null 2>&1 || true
    else
      echo "install.sh: redis-server, redis-sentinel, nginx and chromium are needed by the cluster, deploy and dashboard tests: install them (apt-get install redis-server redis-sentinel nginx chromium)" >&2
      exit 1
    fi
  fi
fi
