#!/usr/bin/env bash
# The one test command (README, CI): installs the system packages the tests need,
# then runs every check: formatting, clippy (warnings are errors), build, all tests.
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -- NAME    # only tests matching NAME
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v curl >/dev/null || need_pkgs+=(curl)
command -v dig >/dev/null || need_pkgs+=(dnsutils)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v ping >/dev/null || need_pkgs+=(iputils-ping)
command -v nft >/dev/null || need_pkgs+=(nftables)
command -v iptables >/dev/null || need_pkgs+=(iptables)
command -v openssl >/dev/null || need_pkgs+=(openssl)
# The site address test announces the moving address with gratuitous ARP.
command -v arping >/dev/null || need_pkgs+=(iputils-arping)
# The ACME test's certificate authority.
command -v pebble >/dev/null || need_pkgs+=(pebble)
# Managed PostgreSQL: the server binaries (Debian keeps them in /usr/lib/postgresql/<major>/bin)
# and psql, the client the tests check with.
ls /usr/lib/postgresql/*/bin/pg_rewind >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v psql >/dev/null || need_pkgs+=(postgresql-client)
# Managed Redis: redis-server (and redis-sentinel, the benchmark's peer), redis-cli.
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
command -v redis-sentinel >/dev/null || need_pkgs+=(redis-sentinel)
command -v redis-cli >/dev/null || need_pkgs+=(redis-tools)
# ioredis (npm) is the Redis tests' Node.js client: node and npm.
command -v node >/dev/null || need_pkgs+=(nodejs)
command -v npm >/dev/null || need_pkgs+=(npm)
# The container tests: podman with runc, a registry, and a busybox-static image rootfs.
command -v podman >/dev/null || need_pkgs+=(podman)
command -v runc >/dev/null || need_pkgs+=(runc)
command -v docker-registry >/dev/null || need_pkgs+=(docker-registry)
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
# The dashboard test: a real headless browser, and wrk to saturate the ingress meanwhile.
command -v chromium >/dev/null || need_pkgs+=(chromium)
command -v wrk >/dev/null || need_pkgs+=(wrk)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing ${need_pkgs[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "missing packages: ${need_pkgs[*]} (install them, or run as root on Debian)" >&2
    exit 1
  fi
fi

# psycopg 3 and redis-py from PyPI: the fault tests' writers are clients from another
# ecosystem.
HOLDFAST_TEST_PYTHON=$(bash scripts/pyenv.sh)
export HOLDFAST_TEST_PYTHON

filter=()
if [ "${1:-}" = "--" ]; then shift; filter=("$@"); fi

# A one-shot build (CI, a fresh clone) gains nothing from incremental compilation but
# ~3 GiB of disk; a developer's repeated runs keep it.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build (binaries the end-to-end tests run)"
cargo build --workspace --bins --quiet
echo "== cargo test"
cargo test --workspace --quiet -- "${filter[@]}"
