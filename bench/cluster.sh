#!/usr/bin/env bash
# Cluster benchmarks on loopback (127.0.77.x), one command:  bash bench/cluster.sh
# Prints a table and writes bench/results/cluster-<date>.json.
#   - memory per node in a 5-node cluster, idle and with 20 services (target < 30 MB RSS:
#     Raspberry Pis; pass/fail printed beside it);
#   - leader failover time: SIGKILL the leader of 3 nodes, time until a survivor knows a
#     new leader (target < 2 s), over several rounds;
#   - replacement: SIGKILL a node holding a replica, time until the service is back to
#     full readiness elsewhere (target < 10 s);
#   - drain: a node holding 2 of 6 replicas drained under steady HTTP load (failed
#     requests, target 0; time until the node is empty);
#   - frozen node: a follower SIGSTOPped under steady HTTP load; latency of the requests
#     after the survivor's link to it is down (p99 and max, target < 300 ms);
#   - scheduler: 100,000 replicas on 5,000 nodes over 10 sites, with node selectors, site
#     spread and anti-affinity (target < 1 s), and without any constraint.
#   - tunnel: HTTP through a node's ingress to a replica on that node (local) and to the
#     same replica from the other node's ingress (through the multiplexed mTLS tunnel):
#     req/s and p99 with wrk, 3 interleaved rounds, medians. On loopback both nodes share
#     this machine's cores, so the tunnel's TLS and framing cost shows in full; and one
#     200 MB download each way (MB/s).
# Peer figures (defaults, from their documentation): Kubernetes stops routing to a dead
# node after 40-50 s and replaces its pods after ~5 min 40 s; Nomad 20-30 s; Swarm ~15 s.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk curl python3; do # a missing one would end the run silently (set -e)
  command -v "$tool" >/dev/null || { echo "bench/cluster.sh needs $tool (apt-get install $tool)"; exit 1; }
done
cargo build --release --quiet --bins
cargo build --release --quiet -p holdfast-placement --example scale
BIN="$PWD/target/release"
export PATH="$BIN:$PATH"
work=$(mktemp -d /tmp/holdfast-cbench.XXXXXX)
pids=()
cleanup() {
  for d in "$work"/n*; do
    [ -f "$d/holdfast.pid" ] && kill -TERM "$(cat "$d/holdfast.pid")" 2>/dev/null || true
  done
  sleep 2
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
rss_mb() { awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
hf() { local n=$1; shift; holdfast --data-dir "$work/n$n" "$@"; }
start_node() { # start_node N SITE [TOKEN]
  local n=$1 site=$2 token=${3:-}
  local cmd=(up); [ -n "$token" ] && cmd=(join "$token")
  holdfast "${cmd[@]}" --data-dir "$work/n$n" --listen "127.0.77.$n:7946" --name "n$n" --site "$site" \
    --port-range "$((41000 + n * 100))-$((41000 + n * 100 + 99))" --http "127.0.77.$n:8080" --dns "127.0.77.$n:8053" --log-level warn >"$work/n$n.log" 2>&1 &
  for _ in $(seq 100); do hf "$n" status >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "node $n did not start:"; cat "$work/n$n.log"; exit 1
}
leader_id() { hf "$1" nodes --json 2>/dev/null | python3 -c 'import json,sys; print(next((n["id"] for n in json.load(sys.stdin)["nodes"] if n["role"]=="leader"), ""))' 2>/dev/null || true; }
node_of_id() { hf "$1" nodes --json | python3 -c "import json,sys; print(next(n['name'] for n in json.load(sys.stdin)['nodes'] if n['id']==$2))"; }

# --- 5-node cluster memory
start_node 1 a
for n in 2 3 4 5; do start_node "$n" $([ "$n" -le 3 ] && echo a || echo b) "$(hf 1 token create --ttl 5m 2>/dev/null)"; done
sleep 5
idle=(); for n in 1 2 3 4 5; do idle+=("$(rss_mb "$(cat "$work/n$n/holdfast.pid")")"); done
{
  echo "project: bench"; echo "services:"
  for i in $(seq 1 20); do echo "  s$i:"; echo "    run: [sleep, '100000']"; echo "    replicas: 2"; done
} >"$work/svc.yaml"
hf 1 deploy "$work/svc.yaml" --timeout 60s >/dev/null
sleep 5
busy=(); for n in 1 2 3 4 5; do busy+=("$(rss_mb "$(cat "$work/n$n/holdfast.pid")")"); done

for n in 1 2 3 4 5; do kill -TERM "$(cat "$work/n$n/holdfast.pid")"; done
sleep 3; rm -rf "$work"/n*

# --- leader failover rounds (fresh 3-node cluster each round)
failovers=()
for round in 1 2 3; do
  start_node 1 a
  start_node 2 a "$(hf 1 token create --ttl 5m 2>/dev/null)"
  start_node 3 b "$(hf 1 token create --ttl 5m 2>/dev/null)"
  for _ in $(seq 100); do [ "$(hf 1 nodes --json | grep -c '"role": "voter"')" = 2 ] && break; sleep 0.1; done
  old=$(leader_id 1)
  victim=$(node_of_id 1 "$old"); vn=${victim#n}
  other=$([ "$vn" = 1 ] && echo 2 || echo 1)
  t0=$(now); kill -9 "$(cat "$work/n$vn/holdfast.pid")"
  while :; do l=$(leader_id "$other"); [ -n "$l" ] && [ "$l" != "$old" ] && break; done
  t1=$(now)
  failovers+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')")
  for n in 1 2 3; do [ -f "$work/n$n/holdfast.pid" ] && kill -TERM "$(cat "$work/n$n/holdfast.pid")" 2>/dev/null || true; done
  sleep 3; rm -rf "$work"/n*
done

# --- stateless failover drill: steady HTTP load through n1's ingress, SIGKILL a node
start_node 1 a
start_node 2 a "$(hf 1 token create --ttl 5m 2>/dev/null)"
start_node 3 b "$(hf 1 token create --ttl 5m 2>/dev/null)"
sleep 2
printf 'project: r\nservices:\n  web:\n    run: ["holdfast-demo-web"]\n    replicas: 3\n    ports: {http: 8080}\n    health: {http: /healthz, interval: 300ms, timeout: 300ms}\nroutes:\n  - {host: drill.localhost, service: web}\n' >"$work/web.yaml"
hf 1 deploy "$work/web.yaml" --timeout 30s >/dev/null
sleep 1
lid=$(leader_id 1); lname=$(node_of_id 1 "$lid")
victim=n3; [ "$lname" = n3 ] && victim=n2
vn=${victim#n}
wpids=$(hf 1 status --json | python3 -c "import json,sys; print(' '.join(str(i['pid']) for s in json.load(sys.stdin)['services'] for i in s['instances'] if i['node']=='$victim'))")
( end=$(( $(date +%s) + 12 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 5 -H 'Host: drill.localhost' http://127.0.77.1:8080/
  done >"$work/drill.txt" ) &
load=$!
sleep 3
t0=$(now); kill -9 "$(cat "$work/n$vn/holdfast.pid")" $wpids
while :; do
  ok=$(hf 1 status --json | python3 -c "import json,sys; s=json.load(sys.stdin)['services'][0]; print(int(s['ready']==3 and all(i['node']!='$victim' for i in s['instances'])))" 2>/dev/null || echo 0)
  [ "$ok" = 1 ] && break; sleep 0.1
done
t1=$(now); replace_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
wait "$load"
drill_total=$(wc -l <"$work/drill.txt")
drill_failed=$(awk '$1 != 200' "$work/drill.txt" | wc -l)
drill_longest=$(awk 'BEGIN {m = 0} $2 > m {m = $2} END {printf "%.3f", m}' "$work/drill.txt")

for n in 1 2 3; do [ -f "$work/n$n/holdfast.pid" ] && kill -TERM "$(cat "$work/n$n/holdfast.pid")" 2>/dev/null || true; done
sleep 3; rm -rf "$work"/n*

# --- zero-downtime drain: steady HTTP load through n1's ingress, drain n3 (2 replicas)
start_node 1 a
start_node 2 a "$(hf 1 token create --ttl 5m 2>/dev/null)"
start_node 3 b "$(hf 1 token create --ttl 5m 2>/dev/null)"
sleep 2
sed 's/replicas: 3/replicas: 6/; s/drill.localhost/drain.localhost/' "$work/web.yaml" >"$work/drain.yaml"
hf 1 deploy "$work/drain.yaml" --timeout 30s >/dev/null
sleep 1
( end=$(( $(date +%s) + 10 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 5 -H 'Host: drain.localhost' http://127.0.77.1:8080/
  done >"$work/drain.txt" ) &
load=$!
sleep 2
t0=$(now); hf 1 drain n3 --timeout 60s >/dev/null 2>&1; t1=$(now)
drain_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
wait "$load"
drain_total=$(wc -l <"$work/drain.txt")
drain_failed=$(awk '$1 != 200' "$work/drain.txt" | wc -l)
drain_left=$(hf 1 nodes --json | python3 -c "import json,sys; print(next(n['instances'] for n in json.load(sys.stdin)['nodes'] if n['name']=='n3'))")
for n in 1 2 3; do [ -f "$work/n$n/holdfast.pid" ] && kill -TERM "$(cat "$work/n$n/holdfast.pid")" 2>/dev/null || true; done
sleep 3; rm -rf "$work"/n*

# --- frozen node: steady HTTP load through n1's ingress, SIGSTOP a follower (its TCP
# stays up, it answers nothing); once n1's link to it is down, how long requests take
# (the end-to-end test only checks they never wait for the frozen node's 1 s open timeout)
start_node 1 a
start_node 2 a "$(hf 1 token create --ttl 5m 2>/dev/null)"
start_node 3 b "$(hf 1 token create --ttl 5m 2>/dev/null)"
sleep 2
sed 's/drill.localhost/frz.localhost/' "$work/web.yaml" >"$work/frz.yaml"
hf 1 deploy "$work/frz.yaml" --timeout 30s >/dev/null
sleep 1
lid=$(leader_id 1); lname=$(node_of_id 1 "$lid")
fvictim=3; [ "$lname" = n3 ] && fvictim=2
( end=$(( $(date +%s) + 8 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    printf '%s ' "$(now)"
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 5 -H 'Host: frz.localhost' http://127.0.77.1:8080/
  done >"$work/frz.txt" ) &
load=$!
sleep 2
kill -STOP "$(cat "$work/n$fvictim/holdfast.pid")"
link_up() { curl -s --max-time 2 --cacert "$work/n1/ca.pem" --cert "$work/n1/node.pem" --key "$work/n1/node.key" "https://127.0.77.1:7946/cluster/links" | python3 -c "import json,sys; print(next((int(l['up']) for l in json.load(sys.stdin)['links'] if l['peer']=='127.0.77.$fvictim:7946'), 1))" 2>/dev/null || echo 1; }
while [ "$(link_up)" = 1 ]; do sleep 0.02; done
link_down_at=$(now)
wait "$load"
kill -CONT "$(cat "$work/n$fvictim/holdfast.pid")"
frz_after=$(awk -v t="$link_down_at" '$1 > t + 0.1 {print $3}' "$work/frz.txt" | sort -n)
frz_n=$(echo "$frz_after" | grep -c . || true)
frz_failed=$(awk '$2 != 200' "$work/frz.txt" | wc -l)
frz_p99_ms=$(echo "$frz_after" | awk '{v[NR] = $1} END {i = int(NR * 0.99); if (i < 1) i = 1; printf "%.0f", v[i] * 1000}')
frz_max_ms=$(echo "$frz_after" | awk 'END {printf "%.0f", $1 * 1000}')
for n in 1 2 3; do [ -f "$work/n$n/holdfast.pid" ] && kill -TERM "$(cat "$work/n$n/holdfast.pid")" 2>/dev/null || true; done
sleep 3; rm -rf "$work"/n*

# --- tunnel throughput: one replica, wrk through its own node's ingress and the other's
start_node 1 a
start_node 2 a "$(hf 1 token create --ttl 5m 2>/dev/null)"
sleep 2
printf 'project: tp\nservices:\n  one:\n    run: ["holdfast-demo-web"]\n    ports: {http: 8080}\n    health: {http: /healthz, interval: 300ms, timeout: 300ms}\nroutes:\n  - {host: tp.localhost, service: one}\n' >"$work/tp.yaml"
hf 1 deploy "$work/tp.yaml" --timeout 30s >/dev/null
home=$(hf 1 status --json | python3 -c "import json,sys; print(json.load(sys.stdin)['services'][0]['instances'][0]['node'])")
hn=${home#n}; on=$([ "$hn" = 1 ] && echo 2 || echo 1)
for n in "$hn" "$on"; do # both ingresses answer before measuring
  for _ in $(seq 100); do curl -sf -H 'Host: tp.localhost' "http://127.0.77.$n:8080/" >/dev/null && break; sleep 0.1; done
done
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v } else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 } else printf "%.3f", v }'; }
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
tun_wrk() { # name node -> appends "rps p99_ms" to $work/tun-<name>
  wrk -t2 -c32 -d8s --latency -H 'Host: tp.localhost' "http://127.0.77.$2:8080/" >"$work/wrk.txt"
  grep -q 'Non-2xx\|Socket errors' "$work/wrk.txt" && { echo "warning: $1 had errors:" >&2; grep 'Non-2xx\|Socket errors' "$work/wrk.txt" >&2; }
  echo "$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$work/wrk.txt") $(to_ms "$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")")" >>"$work/tun-$1"
}
wrk -t2 -c32 -d2s -H 'Host: tp.localhost' "http://127.0.77.$on:8080/" >/dev/null 2>&1
for round in 1 2 3; do tun_wrk local "$hn"; tun_wrk tunnel "$on"; done
tun_local_rps=$(awk '{print $1}' "$work/tun-local" | median); tun_local_p99=$(awk '{print $2}' "$work/tun-local" | median)
tun_rps=$(awk '{print $1}' "$work/tun-tunnel" | median); tun_p99=$(awk '{print $2}' "$work/tun-tunnel" | median)
# bulk: one 200 MB download through each ingress (python http.server), median of 3, MB/s
mkdir -p "$work/files"; head -c 200M /dev/zero >"$work/files/big"
printf 'project: tpb\nservices:\n  files:\n    run: "exec python3 -m http.server $PORT --bind 127.0.0.1"\n    workdir: %s\n    ports: {http: 8080}\n    health: {tcp: http}\nroutes:\n  - {host: tpb.localhost, service: files}\n' "$work/files" >"$work/tpb.yaml"
hf 1 deploy "$work/tpb.yaml" --timeout 30s >/dev/null
bhome=$(hf 1 status --json | python3 -c "import json,sys; print(next(s for s in json.load(sys.stdin)['services'] if s['name']=='files')['instances'][0]['node'])")
bhn=${bhome#n}; bon=$([ "$bhn" = 1 ] && echo 2 || echo 1)
for _ in $(seq 100); do curl -sf -o /dev/null -H 'Host: tpb.localhost' "http://127.0.77.$bon:8080/" && break; sleep 0.1; done
mbps() { curl -s -o /dev/null -w '%{speed_download}\n' -H 'Host: tpb.localhost' "http://127.0.77.$1:8080/big" | awk '{printf "%.0f\n", $1 / 1e6}'; }
for _ in 1 2 3; do mbps "$bhn" >>"$work/bulk-local"; mbps "$bon" >>"$work/bulk-tunnel"; done
bulk_local=$(median <"$work/bulk-local"); bulk_tunnel=$(median <"$work/bulk-tunnel")
tun_links=$(curl -s --cacert "$work/n$on/ca.pem" --cert "$work/n$on/node.pem" --key "$work/n$on/node.key" "https://127.0.77.$on:7946/cluster/links" | python3 -c 'import json,sys; print(" ".join("%s:connects=%d,streams=%d" % (l["peer"], l["connects"], l["streams_opened"]) for l in json.load(sys.stdin)["links"]))')

sched=$("$PWD/target/release/examples/scale" 5000 10000 10 10)
sched_ms=$(echo "$sched" | python3 -c 'import json,sys; print(json.load(sys.stdin)["first_ms"])')
sched_plain_ms=$(echo "$sched" | python3 -c 'import json,sys; print(json.load(sys.stdin)["plain_ms"])')
sched_move_ms=$(echo "$sched" | python3 -c 'import json,sys; d = json.load(sys.stdin); print("%s (%s moved)" % (d["move_ms"], d["moved"]))')

printf '\n%-52s %-26s %s\n' "measure" "holdfast" "target / peers"
under30() { printf '%s\n' "$@" | sort -n | tail -1 | awk '{print ($1 < 30) ? "< 30 MB: pass" : "< 30 MB: FAIL"}'; }
printf '%-52s %-26s %s\n' "RSS per node, 5 nodes idle (MB)" "${idle[*]}" "$(under30 "${idle[@]}")"
printf '%-52s %-26s %s\n' "RSS per node, 5 nodes, 20 services x 2 (MB)" "${busy[*]}" "$(under30 "${busy[@]}")"
printf '%-52s %-26s %s\n' "leader failover, 3 rounds (s)" "${failovers[*]}" "< 2 s"
printf '%-52s %-26s %s\n' "drill: failed requests (of $drill_total) via a survivor" "$drill_failed" "0; k8s routes to the dead node for 40-50 s"
printf '%-52s %-26s %s\n' "drill: longest request during the kill (s)" "$drill_longest" "< 1.5 s"
printf '%-52s %-26s %s\n' "dead node's replica ready elsewhere (s)" "$replace_s" "< 10 s; k8s ~340 s, Nomad 20-30 s, Swarm ~15 s"
printf '%-52s %-26s %s\n' "drain of a node with 2 replicas: time (s), left" "$drain_s, $drain_left left" "one move per service, start before stop"
printf '%-52s %-26s %s\n' "drain: failed requests (of $drain_total) via n1" "$drain_failed" "0"
printf '%-52s %-26s %s\n' "frozen node: requests after its link is down (p99, max ms)" "$frz_p99_ms, $frz_max_ms ($frz_n req, $frz_failed failed)" "< 300 ms; never the 1 s open timeout"

printf '%-52s %-26s %s\n' "schedule 100k replicas on 5k nodes, no rules (ms)" "$sched_plain_ms" "< 1000 ms"
printf '%-52s %-26s %s\n' "... with selectors, site spread, anti-affinity (ms)" "$sched_ms" "< 1000 ms"
printf '%-52s %-26s %s\n' "... then 1% nodes down, 1% relabelled (ms)" "$sched_move_ms" "minimal moves"
printf '%-52s %-26s %s\n' "ingress -> replica on the same node (req/s, p99 ms)" "$tun_local_rps, $tun_local_p99" "wrk -c32, median of 3"
printf '%-52s %-26s %s\n' "ingress -> replica on another node (req/s, p99 ms)" "$tun_rps, $tun_p99" "through the mTLS tunnel: one HTTP/2 link per node pair"
printf '%-52s %-26s %s\n' "one 200 MB download, same node / other node (MB/s)" "$bulk_local / $bulk_tunnel" "one tunneled stream: TLS + HTTP/2 framing"
echo "  links of n$on after the run: $tun_links"
out="bench/results/cluster-$(date +%Y%m%d-%H%M%S).json"
printf '{"rss_idle_mb": [%s], "rss_20svc_mb": [%s], "leader_failover_s": [%s], "replacement_s": %s, "drill_requests": %s, "drill_failed": %s, "drill_longest_s": %s, "schedule_100k_ms": %s, "schedule_100k_plain_ms": %s, "ingress_local_rps": %s, "ingress_local_p99_ms": %s, "ingress_tunnel_rps": %s, "ingress_tunnel_p99_ms": %s, "bulk_local_mb_s": %s, "bulk_tunnel_mb_s": %s, "drain_s": %s, "drain_requests": %s, "drain_failed": %s, "frozen_after_link_down_p99_ms": %s, "frozen_after_link_down_max_ms": %s, "frozen_failed": %s}\n' \
  "$(IFS=,; echo "${idle[*]}")" "$(IFS=,; echo "${busy[*]}")" "$(IFS=,; echo "${failovers[*]}")" "$replace_s" "$drill_total" "$drill_failed" "$drill_longest" "$sched_ms" "$sched_plain_ms" \
  "$tun_local_rps" "$tun_local_p99" "$tun_rps" "$tun_p99" "$bulk_local" "$bulk_tunnel" "$drain_s" "$drain_total" "$drain_failed" "$frz_p99_ms" "$frz_max_ms" "$frz_failed" >"$out"
echo "results written to $out"
