#!/usr/bin/env bash
# The Python clients of the tests and benchmarks (psycopg 3, redis-py and grpcio from PyPI:
# clients from another ecosystem than ours, psycopg with its own libpq; websocket-client
# drives Chromium over the DevTools protocol for the dashboard test) in a virtualenv
# kept outside the repository. Creates or reuses it and prints its python.
#   PY=$(bash scripts/pyenv.sh)
# HOLDFAST_PYENV sets the directory (default /var/tmp/holdfast-pyenv).
set -euo pipefail
dir=${HOLDFAST_PYENV:-/var/tmp/holdfast-pyenv}
want=('psycopg[binary]>=3.1,<3.3' 'redis>=5,<6' 'grpcio>=1.60,<2' 'prometheus-client>=0.19,<1' 'websocket-client>=1.6,<2')
if ! "$dir/bin/python" -c 'import psycopg, redis, grpc, prometheus_client, websocket' >/dev/null 2>&1; then
  base=/usr/bin/python3
  [ -x "$base" ] || base=$(command -v python3)
  if ! "$base" -m venv --help >/dev/null 2>&1 || ! "$base" -c 'import ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
      echo "scripts/pyenv.sh needs python3-venv (install it, or run as root on Debian)" >&2
      exit 1
    fi
  fi
  if [ ! -x "$dir/bin/pip" ]; then
    rm -rf "$dir"
    "$base" -m venv "$dir" >&2
  fi
  "$dir/bin/pip" install -q --disable-pip-version-check "${want[@]}" >&2
fi
echo "$dir/bin/python"
