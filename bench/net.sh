#!/usr/bin/env bash
# holdfast-net benchmark (not part of the tests). One command:
#   bash bench/net.sh
# Prints a table and writes bench/results/net-<date>.json.
#
# Compares holdfast's HTTP ingress, its edge HTTPS and its TCP service proxy with HAProxy on
# loopback, all in front of the same tiny hyper backend (`netbench backend`: 200 "ok"):
#   wrk -> backend directly | HAProxy mode http | holdfast ingress | HAProxy https | holdfast
#   edge https (the same certificate, ECDSA P-256) | HAProxy mode tcp | holdfast proxy
# then dnsperf against holdfast's internal DNS, and against an edge's authoritative DNS and
# NSD serving the same zone (`bench.test`), side by side.
#
# Fairness: HAProxy runs with `nbthread $THREADS` and holdfast on a tokio runtime with
# `$THREADS` worker threads (default 1 for both). HAProxy's http frontend adds
# X-Forwarded-For (`option forwardfor`) as holdfast does; both keep backend connections alive.
# The machine may be shared: the targets are measured in ROUNDS interleaved rounds; the table
# shows each target's median, and the holdfast/HAProxy comparisons are the median of the
# per-round comparisons (the two sides ran back to back), so a burst of load from elsewhere
# does not land on one side only.
# Knobs: THREADS (1), WRK_THREADS (2), CONNECTIONS (50), DURATION (10s), ROUNDS (5).
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${THREADS:-1}
WRK_THREADS=${WRK_THREADS:-2}
CONNECTIONS=${CONNECTIONS:-50}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-5}

need_pkgs=()
command -v haproxy >/dev/null || need_pkgs+=(haproxy)
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v dnsperf >/dev/null || need_pkgs+=(dnsperf)
command -v nsd >/dev/null || need_pkgs+=(nsd)
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v curl >/dev/null || need_pkgs+=(curl)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing ${need_pkgs[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "missing packages: ${need_pkgs[*]} (install them, or run as root on Debian)" >&2
    exit 1
  fi
fi

echo "== building netbench (release)"
cargo build --release --quiet -p holdfast-net --example netbench
BIN="$PWD/target/release/examples/netbench"

work=$(mktemp -d /tmp/holdfast-netbench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

base=$(( 21000 + RANDOM % 20000 ))
BACKEND="127.0.0.1:$base"
HF_HTTP="127.0.0.1:$((base + 1))"
HF_DNS="127.0.0.1:$((base + 2))"
HF_SVC="127.77.250.1:$((base + 3))"
HA_HTTP="127.0.0.1:$((base + 4))"
HA_TCP="127.0.0.1:$((base + 5))"
HF_HTTPS="127.0.0.1:$((base + 6))"
HA_HTTPS="127.0.0.1:$((base + 7))"
HF_EDGE_DNS="127.0.0.1:$((base + 8))"
NSD_DNS="127.0.0.1:$((base + 9))"

# One certificate for both HTTPS frontends (wrk sends SNI `localhost`).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" >"$work/combined.pem"

"$BIN" backend "$BACKEND" --threads 1 2>"$work/backend.log" &
pids+=($!)
"$BIN" node --threads "$THREADS" --backend "$BACKEND" --http "$HF_HTTP" --dns "$HF_DNS" --service "$HF_SVC" \
  --https "$HF_HTTPS" --cert "$work/cert.pem" --key "$work/key.pem" --edge-dns "$HF_EDGE_DNS" 2>"$work/node.log" &
pids+=($!)

cat >"$work/haproxy.cfg" <<CFG
global
  nbthread $THREADS
  maxconn 4096
defaults
  timeout connect 1s
  timeout client 30s
  timeout server 30s
frontend fe_http
  mode http
  option forwardfor
  bind $HA_HTTP
  default_backend be_http
backend be_http
  mode http
  server s1 $BACKEND
frontend fe_https
  mode http
  option forwardfor
  bind $HA_HTTPS ssl crt $work/combined.pem alpn h2,http/1.1
  default_backend be_http
frontend fe_tcp
  mode tcp
  bind $HA_TCP
  default_backend be_tcp
backend be_tcp
  mode tcp
  server s1 $BACKEND
CFG
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)

# NSD with the zone netbench's edge DNS answers (same names, same answers).
cat >"$work/bench.test.zone" <<ZONE
\$ORIGIN bench.test.
\$TTL 15
@     IN SOA ns1.bench.test. hostmaster.bench.test. 1 3600 600 86400 15
@     IN NS  ns1.bench.test.
@     IN NS  ns2.bench.test.
ns1   IN A   192.0.2.1
ns2   IN A   192.0.2.2
www   IN A   192.0.2.1
www   IN A   192.0.2.2
@     300 IN MX 10 mail.bench.test.
@     300 IN TXT "v=spf1 -all"
mail  300 IN A 192.0.2.25
ZONE
cat >"$work/nsd.conf" <<NSD
server:
  ip-address: ${NSD_DNS%:*}@${NSD_DNS##*:}
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "$work"
  pidfile: "$work/nsd.pid"
  zonelistfile: "$work/zone.list"
  xfrdfile: "$work/xfrd.state"
  xfrdir: "$work"
  verbosity: 0
  hide-version: yes
  # Response rate limiting (on by default, 200 q/s per client /24) off: a benchmark
  # client is one address.
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: bench.test
  zonefile: bench.test.zone
NSD
nsd -d -c "$work/nsd.conf" >"$work/nsd.log" 2>&1 &
pids+=($!)

for url in "http://$BACKEND/" "http://$HF_HTTP/" "http://$HA_HTTP/" "http://$HA_TCP/" "http://$HF_SVC/" \
  "https://localhost:${HF_HTTPS##*:}/" "https://localhost:${HA_HTTPS##*:}/"; do
  for _ in $(seq 100); do
    curl -sf --cacert "$work/cert.pem" -H 'Host: bench.localhost' "$url" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -sf --cacert "$work/cert.pem" -H 'Host: bench.localhost' "$url" >/dev/null || { echo "not answering: $url" >&2; cat "$work"/*.log >&2; exit 1; }
done
for _ in $(seq 100); do dig +short @"${NSD_DNS%:*}" -p "${NSD_DNS##*:}" www.bench.test A | grep -q 192.0.2.1 && break; sleep 0.1; done
haproxy_version=$(haproxy -v | head -1 | awk '{print $3}')

# to_ms VALUE_WITH_UNIT -> milliseconds
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "%.3f", v }'
}

declare -A RPS P50 P99
run_wrk() { # name url round -> one line "rps p50_ms p99_ms" appended to $work/runs-<name>
  wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H 'Host: bench.localhost' "$2" >"$work/wrk-$1-$3.txt"
  if grep -q 'Non-2xx\|Socket errors' "$work/wrk-$1-$3.txt"; then
    echo "warning: $1 had errors:" >&2; grep 'Non-2xx\|Socket errors' "$work/wrk-$1-$3.txt" >&2
  fi
  local rps p50 p99
  rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$work/wrk-$1-$3.txt")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$work/wrk-$1-$3.txt")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$work/wrk-$1-$3.txt")")
  echo "$rps $p50 $p99" >>"$work/runs-$1"
  printf '   round %s  %-18s %8s req/s  p50 %7s ms  p99 %7s ms\n' "$3" "$1" "$rps" "$p50" "$p99"
}
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

TARGETS="backend haproxy_http holdfast_ingress haproxy_https holdfast_https haproxy_tcp holdfast_proxy"
declare -A URL=([backend]="http://$BACKEND/" [haproxy_http]="http://$HA_HTTP/" [holdfast_ingress]="http://$HF_HTTP/"
  [haproxy_https]="https://localhost:${HA_HTTPS##*:}/" [holdfast_https]="https://localhost:${HF_HTTPS##*:}/"
  [haproxy_tcp]="http://$HA_TCP/" [holdfast_proxy]="http://$HF_SVC/")
echo "== wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS interleaved rounds, median per target (proxies on $THREADS thread(s); $(nproc) cores)"
for t in $TARGETS; do # warm-up
  wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d2s -H 'Host: bench.localhost' "${URL[$t]}" >/dev/null 2>&1
done
for round in $(seq "$ROUNDS"); do
  for t in $TARGETS; do run_wrk "$t" "${URL[$t]}" "$round"; done
done
for t in $TARGETS; do
  RPS[$t]=$(awk '{print $1}' "$work/runs-$t" | median)
  P50[$t]=$(awk '{print $2}' "$work/runs-$t" | median)
  P99[$t]=$(awk '{print $3}' "$work/runs-$t" | median)
done

echo "== dnsperf against holdfast DNS ($DURATION)"
for _ in $(seq 100); do echo "web.bench.internal A"; echo "_http._tcp.web.bench.internal SRV"; done >"$work/queries.txt"
dnsperf -s "${HF_DNS%:*}" -p "${HF_DNS##*:}" -d "$work/queries.txt" -l "${DURATION%s}" -c 4 -T 1 -q 200 >"$work/dnsperf.txt" 2>&1 || true
dns_qps=$(awk '/Queries per second:/ {printf "%.0f", $4}' "$work/dnsperf.txt")
dns_lat_ms=$(awk '/Average Latency/ {printf "%.3f", $4 * 1000}' "$work/dnsperf.txt")
dns_lost=$(awk '/Queries lost:/ {print $3}' "$work/dnsperf.txt")
dns_qps=${dns_qps:-0}; dns_lat_ms=${dns_lat_ms:-0}; dns_lost=${dns_lost:-?}

echo "== dnsperf: the edge's authoritative DNS vs NSD $(nsd -v 2>&1 | head -1 | awk '{print $3}'), same zone ($DURATION each, $ROUNDS rounds)"
for _ in $(seq 100); do
  echo "www.bench.test A"; echo "bench.test MX"; echo "bench.test TXT"; echo "nope.bench.test A"; echo "bench.test NS"
done >"$work/zone-queries.txt"
dnsperf_qps() { # addr -> q/s
  dnsperf -s "${1%:*}" -p "${1##*:}" -d "$work/zone-queries.txt" -l "${DURATION%s}" -c 4 -T 1 -q 200 2>&1 |
    awk '/Queries per second:/ {printf "%.0f", $4}'
}
: >"$work/runs-edge_dns"; : >"$work/runs-nsd"
for round in $(seq "$ROUNDS"); do
  e=$(dnsperf_qps "$HF_EDGE_DNS"); n=$(dnsperf_qps "$NSD_DNS")
  echo "${e:-0}" >>"$work/runs-edge_dns"; echo "${n:-0}" >>"$work/runs-nsd"
  printf '   round %s  edge dns %8s q/s   nsd %8s q/s\n' "$round" "${e:-0}" "${n:-0}"
done
edge_dns_qps=$(median <"$work/runs-edge_dns")
nsd_qps=$(median <"$work/runs-nsd")
r_dns=$(paste -d' ' "$work/runs-edge_dns" "$work/runs-nsd" | awk '{ printf "%.2f\n", ($2 > 0 ? $1 / $2 : 0) }' | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')

# Per-round comparisons (the two sides ran back to back), then their median: robust to
# load from elsewhere that changes between rounds.
per_round() { # holdfast_target haproxy_target column(1=rps ratio, 3=p99 diff)
  paste -d' ' "$work/runs-$1" "$work/runs-$2" | awk -v c="$3" '{ if (c == 1) printf "%.2f\n", ($4 > 0 ? $1 / $4 : 0); else printf "%+.2f\n", $3 - $6 }'
}
median_signed() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
r_http=$(per_round holdfast_ingress haproxy_http 1 | median_signed)
r_tcp=$(per_round holdfast_proxy haproxy_tcp 1 | median_signed)
r_https=$(per_round holdfast_https haproxy_https 1 | median_signed)
d_https=$(per_round holdfast_https haproxy_https 3 | median_signed)
rounds_https=$(per_round holdfast_https haproxy_https 1 | paste -sd' ')
d_http=$(per_round holdfast_ingress haproxy_http 3 | median_signed)
d_tcp=$(per_round holdfast_proxy haproxy_tcp 3 | median_signed)
rounds_http=$(per_round holdfast_ingress haproxy_http 1 | paste -sd' ')
rounds_tcp=$(per_round holdfast_proxy haproxy_tcp 1 | paste -sd' ')

echo
printf '%-26s %12s %10s %10s   (median of %s rounds)\n' "target" "req/s" "p50 ms" "p99 ms" "$ROUNDS"
for k in $TARGETS; do
  printf '%-26s %12s %10s %10s\n' "$k" "${RPS[$k]}" "${P50[$k]}" "${P99[$k]}"
done
printf '%-26s %12s %10s %10s\n' "holdfast dns (udp)" "$dns_qps q/s" "avg $dns_lat_ms" "lost $dns_lost"
echo "  (dnsperf: 4 clients, 200 queries in flight, A and SRV names; avg latency is mostly queueing)"
echo
printf '%-52s %8s %12s   %s\n' "holdfast vs HAProxy $haproxy_version (median per round)" "req/s x" "p99 diff ms" "req/s x by round"
printf '%-52s %8s %12s   %s\n' "http: ingress / mode http (target >= 1.0x, <= +1 ms)" "$r_http" "$d_http" "$rounds_http"
printf '%-52s %8s %12s   %s\n' "https: edge / HAProxy ssl (target >= 1.0x, <= +1 ms)" "$r_https" "$d_https" "$rounds_https"
printf '%-52s %8s %12s   %s\n' "tcp:  service proxy / mode tcp" "$r_tcp" "$d_tcp" "$rounds_tcp"
printf '%-52s %8s   edge %s q/s, nsd %s q/s\n' "dns: edge authoritative / NSD (target >= 0.5x)" "$r_dns" "$edge_dns_qps" "$nsd_qps"

mkdir -p bench/results
out="bench/results/net-$(date +%Y%m%d-%H%M%S).json"
{
  echo "{"
  echo "  \"machine\": \"$(uname -m) $(nproc) cores\", \"haproxy\": \"$haproxy_version\", \"proxy_threads\": $THREADS,"
  echo "  \"wrk\": \"-t$WRK_THREADS -c$CONNECTIONS -d$DURATION\", \"rounds\": $ROUNDS, \"statistic\": \"median\","
  for k in $TARGETS; do
    echo "  \"$k\": {\"rps\": ${RPS[$k]}, \"p50_ms\": ${P50[$k]}, \"p99_ms\": ${P99[$k]}},"
  done
  echo "  \"holdfast_dns\": {\"qps\": $dns_qps, \"avg_latency_ms_200_in_flight\": $dns_lat_ms, \"lost\": \"$dns_lost\"},"
  echo "  \"ratio_http_rps\": $r_http, \"p99_diff_http_ms\": ${d_http#+}, \"ratio_http_rps_by_round\": [$(echo "$rounds_http" | tr ' ' ',')],"
  echo "  \"edge_dns_qps\": $edge_dns_qps, \"nsd_qps\": $nsd_qps, \"ratio_dns_qps\": $r_dns,"
  echo "  \"ratio_https_rps\": $r_https, \"p99_diff_https_ms\": ${d_https#+}, \"ratio_https_rps_by_round\": [$(echo "$rounds_https" | tr ' ' ',')],"
  echo "  \"ratio_tcp_rps\": $r_tcp, \"p99_diff_tcp_ms\": ${d_tcp#+}, \"ratio_tcp_rps_by_round\": [$(echo "$rounds_tcp" | tr ' ' ',')]"
  echo "}"
} >"$out"
echo "results written to $out"
