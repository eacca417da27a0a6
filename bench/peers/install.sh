#!/usr/bin/env bash
# Installs the pinned peers (package-lock.json) into bench/peers/node_modules. Idempotent: does
# nothing when node_modules already matches the lock. Needs Node.js >= 20 and npm.
set -euo pipefail
cd "$(dirname "$0")"
command -v node >/dev/null || { echo "install.sh: node (>= 20) is not installed" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || { echo "install.sh: node $major found, >= 20 needed" >&2; exit 1; }
# npm records what it installed in node_modules/.package-lock.json; reinstall only when the lock
# changed since.
if [ -f node_modules/.package-lock.json ] && [ node_modules/.package-lock.json -nt package-lock.json ] \
   && [ -d node_modules/graphile-worker ] && [ -d node_modules/pg-boss ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "install.sh: npm is not installed (it comes with Node.js >= 20)" >&2; exit 1; }
npm ci --no-audit --no-fund --loglevel=error --omit=dev >/dev/null
