#!/usr/bin/env bash
# The Node.js client of the Redis tests (ioredis from npm: seed 000's own client, from
# another ecosystem than ours), installed into a directory kept outside the repository.
# Creates or reuses it and prints the directory to put in NODE_PATH.
#   NODE_PATH=$(bash scripts/nodeenv.sh) node -e 'require("ioredis")'
# HOLDFAST_NODEENV sets the directory (default /var/tmp/holdfast-nodeenv).
set -euo pipefail
dir=${HOLDFAST_NODEENV:-/var/tmp/holdfast-nodeenv}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "scripts/nodeenv.sh needs node and npm (install them, or run as root on Debian)" >&2
    exit 1
  fi
fi
if ! NODE_PATH="$dir/node_modules" node -e 'require("ioredis")' >/dev/null 2>&1; then
  mkdir -p "$dir"
  (cd "$dir" && npm install --silent --no-audit --no-fund 'ioredis@^5' >&2)
fi
echo "$dir/node_modules"
