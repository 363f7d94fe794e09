#!/usr/bin/env bash
# holdfast benchmarks (not part of the test run). One command:
#   bash bench/run.sh
# Prints a table and writes bench/results/node-<date>.json.
#
# Measures, on a fresh one-node cluster on loopback:
#   - daemon RSS idle with 0 services, and with 10 services x 2 replicas (target < 30 MB);
#   - deploy-to-healthy time of 10 services x 3 replicas with HTTP health checks;
# then runs bench/footprint.sh (idle disk writes and CPU, binary size, static build; its
# own table and bench/results/footprint-<date>.json).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bins
BIN="$PWD/target/release"
export PATH="$BIN:$PATH"
work=$(mktemp -d /tmp/holdfast-bench.XXXXXX)
port=$(( 17000 + RANDOM % 1000 ))
dd="$work/data"
cleanup() {
  if [ -n "${daemon:-}" ] && kill -0 "$daemon" 2>/dev/null; then
    kill -TERM "$daemon"; wait "$daemon" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hf() { holdfast --data-dir "$dd" "$@"; }

holdfast up --data-dir "$dd" --listen "127.0.0.1:$port" --port-range 40000-40999 --http off --dns off --log-level warn >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do hf status >/dev/null 2>&1 && break; sleep 0.1; done
sleep 3
idle0=$(rss_kb "$daemon")

spec() { # spec NAME SERVICES REPLICAS RUN HEALTH
  {
    echo "project: $1"
    echo "services:"
    for i in $(seq 1 "$2"); do
      echo "  $1-$i:"
      echo "    run: $4"
      echo "    replicas: $3"
      echo "    ports: {http: $((8000 + i))}"
      [ -n "$5" ] && echo "    health: {http: /healthz, interval: 500ms, timeout: 500ms}"
    done
  } >"$work/$1.yaml"
  echo "$work/$1.yaml"
}

# 10 x 2 idle services
hf deploy "$(spec idle 10 2 '[sleep, "100000"]' '')" --timeout 60s >/dev/null
sleep 3
idle20=$(rss_kb "$daemon")
hf rm idle-1 >/dev/null # exercise a change, then remove the project
for i in $(seq 2 10); do hf rm "idle-$i" >/dev/null; done

# deploy-to-healthy: 10 x 3 demo web apps with HTTP health checks
start=$(date +%s.%N)
hf deploy "$(spec web 10 3 '["holdfast-demo-web"]' yes)" --timeout 120s >/dev/null
end=$(date +%s.%N)
deploy_s=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.2f", b - a}')
busy30=$(rss_kb "$daemon")

printf '\n%-48s %12s %12s\n' "measure" "holdfast" "target/peer"
printf '%-48s %9.1f MB %12s\n' "daemon RSS, idle, 0 services" "$(awk -v k="$idle0" 'BEGIN {print k/1024}')" "< 30 MB"
printf '%-48s %9.1f MB %12s\n' "daemon RSS, 10 services x 2 replicas" "$(awk -v k="$idle20" 'BEGIN {print k/1024}')" "< 30 MB"
printf '%-48s %9.1f MB %12s\n' "daemon RSS, 10 x 3 web with health checks" "$(awk -v k="$busy30" 'BEGIN {print k/1024}')" "k3s ~1600 MB"
printf '%-48s %10.2f s %12s\n' "deploy-to-healthy, 10 services x 3 replicas" "$deploy_s" "-"
out="bench/results/node-$(date +%Y%m%d-%H%M%S).json"
cat >"$out" <<JSON
{"machine": "$(uname -m) $(nproc) cores", "rss_idle_0_kb": $idle0, "rss_10x2_kb": $idle20, "rss_10x3_health_kb": $busy30, "deploy_to_healthy_10x3_s": $deploy_s}
JSON
echo "results written to $out"

# Footprint on small hardware: idle disk writes and CPU of a 3-node cluster (5 minutes;
# FOOTPRINT_IDLE_S shortens it), binary size, static build running the demo. The daemon
# above and its 30 instances stop first.
cleanup
trap - EXIT
bash bench/footprint.sh
