#!/usr/bin/env bash
# Install the competitor for bench/bridge.py: the PyPI package mcp-proxy, in its own venv.
#
# mcp-proxy depends on the MCP Python SDK 1.x, DataPulse pins mcp 2.x, so the two cannot share a venv.
# This creates .bench-venv/mcp-proxy under the repository root (git-ignored) and installs a pinned mcp-proxy.
# uvloop and httptools are added at the versions the project venv uses: mcp-proxy runs uvicorn with its default
# loop/http "auto", which picks them up when installed, so it gets the same fast stack as the DataPulse side.
#
# Usage (from anywhere):  bash bench/setup-mcp-proxy.sh        (PYTHON=/path/to/python3.11 to choose the interpreter)
set -euo pipefail

MCP_PROXY_VERSION="0.13.0"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.bench-venv/mcp-proxy"
# Default: the interpreter the project venv is built on (python -m venv inside a venv uses the base interpreter).
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"

version_of() {  # the version of a package in the project venv, or empty
    "$REPO/.venv/bin/python" -c "from importlib.metadata import version; print(version('$1'))" 2>/dev/null || true
}
extras=()
for pkg in uvloop httptools; do
    v="$(version_of "$pkg")"
    extras+=("$pkg${v:+==$v}")
done

"$PYTHON" -m venv --clear "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "mcp-proxy==$MCP_PROXY_VERSION" "${extras[@]}"

echo "installed: $("$VENV/bin/python" -m pip list 2>/dev/null | grep -iE '^(mcp|mcp-proxy|uvicorn|uvloop|httptools|starlette) ' | tr -s ' ' | paste -sd ',' -)"
echo "binary:    $VENV/bin/mcp-proxy"
