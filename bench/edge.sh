#!/usr/bin/env bash
# How fast a dead edge leaves the DNS answers, one command:  bash bench/edge.sh
# Prints a table and writes bench/results/edge-<date>.json.
#   - holdfast: 3 nodes on loopback, n1 a plain node, n2 and n3 edges on their own public
#     addresses (127.0.81.22, .23) answering the zone `bench.test` with a routed host.
#   - Each round (ROUNDS, default 5) SIGKILLs one edge and polls the other edge's DNS (dig,
#     every 20 ms) until `www.bench.test A` names only the survivor: that is the time the
#     dead edge took to leave the answers (target < 2 s; Route53's fast health checks need
#     about 30 s plus the TTL, PowerDNS Lua records check every 5 s). Then the edge is
#     started again and the time until both are answered again is measured too.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
for tool in dig curl; do
  command -v "$tool" >/dev/null || { echo "bench/edge.sh needs $tool (dnsutils, curl)"; exit 1; }
done
cargo build --release --quiet --bins
BIN="$PWD/target/release"
export PATH="$BIN:$PATH"
work=$(mktemp -d "${TMPDIR:-/tmp}/holdfast-edgebench.XXXXXX")

hf_pid() {
  local p; p=$(cat "$1/holdfast.pid" 2>/dev/null) || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "--data-dir $1 " || return 1
  echo "$p"
}
cleanup() {
  local d p
  for d in "$work"/n*; do p=$(hf_pid "$d") && { kill -TERM "$p" 2>/dev/null || true; }; done
  sleep 1
  for d in "$work"/n*; do p=$(hf_pid "$d") && { kill -9 "$p" 2>/dev/null || true; }; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip() { echo "127.0.81.2$1"; }
HTTP=48901 HTTPS=48902 DNS=48903
edge_flags() { echo "--edge --public-address $(ip "$1") --edge-http-port $HTTP --edge-https-port $HTTPS --edge-dns-port $DNS"; }
start_node() { # start_node N [TOKEN]
  local n=$1 token=${2:-}
  local cmd=(up); [ -n "$token" ] && cmd=(join "$token")
  local extra=""; [ "$n" != 1 ] && extra=$(edge_flags "$n")
  # shellcheck disable=SC2086
  holdfast "${cmd[@]}" --data-dir "$work/n$n" --listen "$(ip "$n"):7946" --name "n$n" \
    --port-range "$((47100 + n * 100))-$((47100 + n * 100 + 99))" --http off --dns off $extra --log-level warn >>"$work/n$n.log" 2>&1 &
  disown
  for _ in $(seq 100); do holdfast --data-dir "$work/n$n" status >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "node $n did not start:"; cat "$work/n$n.log"; exit 1
}
hf() { holdfast --data-dir "$work/n1" "$@"; }
answer() { dig +short +time=1 +tries=1 @"$(ip "$1")" -p "$DNS" www.bench.test A | sort | paste -sd' '; }
now_ms() { date +%s%3N; }

echo "starting n1 and two edges (n2 $(ip 2), n3 $(ip 3))..."
start_node 1
for n in 2 3; do start_node "$n" "$(hf token create --ttl 5m 2>/dev/null)"; done
cat >"$work/bench.yaml" <<YAML
project: edgebench
services:
  web:
    run: ["holdfast-demo-web"]
    ports: {http: 8080}
routes:
  - {host: www.bench.test, service: web}
dns:
  zones:
    - {name: bench.test, ttl: 5}
YAML
for _ in $(seq 100); do hf deploy "$work/bench.yaml" >/dev/null 2>&1 && break; sleep 0.2; done
both="$(ip 2) $(ip 3)"
for _ in $(seq 200); do [ "$(answer 2)" = "$both" ] && break; sleep 0.1; done
[ "$(answer 2)" = "$both" ] || { echo "the edges do not answer both addresses: $(answer 2)"; exit 1; }

leave=() back=()
for round in $(seq "$rounds"); do
  victim=$(( round % 2 == 1 ? 3 : 2 )); other=$(( victim == 3 ? 2 : 3 ))
  p=$(hf_pid "$work/n$victim")
  t0=$(now_ms); kill -9 "$p"
  until [ "$(answer "$other")" = "$(ip "$other")" ]; do
    [ $(( $(now_ms) - t0 )) -gt 20000 ] && { echo "round $round: the dead edge never left"; exit 1; }
    sleep 0.02
  done
  l=$(( $(now_ms) - t0 )); leave+=("$l")
  t1=$(now_ms); start_node "$victim"
  until [ "$(answer "$other")" = "$both" ]; do
    [ $(( $(now_ms) - t1 )) -gt 30000 ] && { echo "round $round: the edge never came back"; exit 1; }
    sleep 0.02
  done
  b=$(( $(now_ms) - t1 )); back+=("$b")
  printf '  round %s  n%s killed: left the answers after %5s ms; restarted: answered again after %5s ms\n' "$round" "$victim" "$l" "$b"
done

stats() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {printf "%d %d %d", v[1], v[int((NR+1)/2)], v[NR]}'; }
read -r lmin lmed lmax <<<"$(stats "${leave[@]}")"
read -r bmin bmed bmax <<<"$(stats "${back[@]}")"
echo
printf '%-52s %8s %8s %8s\n' "edge DNS ($rounds rounds)" "min ms" "median" "max ms"
printf '%-52s %8s %8s %8s\n' "a SIGKILLed edge leaves the answers (target < 2000)" "$lmin" "$lmed" "$lmax"
printf '%-52s %8s %8s %8s\n' "a restarted edge is answered again (incl. its start)" "$bmin" "$bmed" "$bmax"
echo "(peers, from their documentation: Route53 fast health checks 30 s + TTL; PowerDNS Lua ifportup every 5 s)"
mkdir -p bench/results
out="bench/results/edge-$(date +%Y%m%d-%H%M%S).json"
cat >"$out" <<JSON
{
  "machine": "$(uname -m) $(nproc) cores", "rounds": $rounds, "probe_every_ms": 300, "fail_after_probes": 2,
  "leave_ms": {"min": $lmin, "median": $lmed, "max": $lmax, "all": [$(IFS=,; echo "${leave[*]}")]},
  "back_ms": {"min": $bmin, "median": $bmed, "max": $bmax, "all": [$(IFS=,; echo "${back[*]}")]}
}
JSON
echo "results written to $out"
