#!/usr/bin/env bash
# Cluster benchmarks on loopback (127.0.77.x), one command:  bash bench/cluster.sh
# Prints a table and writes bench/results/cluster-<date>.json.
#   - memory per node in a 5-node cluster, idle and with 20 services (target < 40 MB RSS);
#   - leader failover time: SIGKILL the leader of 3 nodes, time until a survivor knows a
#     new leader (target < 2 s), over several rounds;
#   - replacement: SIGKILL a node holding a replica, time until the service is back to
#     full readiness elsewhere (target < 10 s);
#   - scheduler: 100,000 replicas on 5,000 nodes over 10 sites, with node selectors, site
#     spread and anti-affinity (target < 1 s), and without any constraint.
# Peer figures (defaults, from their documentation): Kubernetes stops routing to a dead
# node after 40-50 s and replaces its pods after ~5 min 40 s; Nomad 20-30 s; Swarm ~15 s.
set -euo pipefail
cd "$(dirname "$0")/.."
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

sched=$("$PWD/target/release/examples/scale" 5000 10000 10 10)
sched_ms=$(echo "$sched" | python3 -c 'import json,sys; print(json.load(sys.stdin)["first_ms"])')
sched_plain_ms=$(echo "$sched" | python3 -c 'import json,sys; print(json.load(sys.stdin)["plain_ms"])')
sched_move_ms=$(echo "$sched" | python3 -c 'import json,sys; d = json.load(sys.stdin); print("%s (%s moved)" % (d["move_ms"], d["moved"]))')

printf '\n%-52s %-26s %s\n' "measure" "holdfast" "target / peers"
printf '%-52s %-26s %s\n' "RSS per node, 5 nodes idle (MB)" "${idle[*]}" "< 40 MB"
printf '%-52s %-26s %s\n' "RSS per node, 5 nodes, 20 services x 2 (MB)" "${busy[*]}" "< 40 MB"
printf '%-52s %-26s %s\n' "leader failover, 3 rounds (s)" "${failovers[*]}" "< 2 s"
printf '%-52s %-26s %s\n' "drill: failed requests (of $drill_total) via a survivor" "$drill_failed" "0; k8s routes to the dead node for 40-50 s"
printf '%-52s %-26s %s\n' "drill: longest request during the kill (s)" "$drill_longest" "< 1.5 s"
printf '%-52s %-26s %s\n' "dead node's replica ready elsewhere (s)" "$replace_s" "< 10 s; k8s ~340 s, Nomad 20-30 s, Swarm ~15 s"
printf '%-52s %-26s %s\n' "schedule 100k replicas on 5k nodes, no rules (ms)" "$sched_plain_ms" "< 1000 ms"
printf '%-52s %-26s %s\n' "... with selectors, site spread, anti-affinity (ms)" "$sched_ms" "< 1000 ms"
printf '%-52s %-26s %s\n' "... then 1% nodes down, 1% relabelled (ms)" "$sched_move_ms" "minimal moves"
out="bench/results/cluster-$(date +%Y%m%d-%H%M%S).json"
printf '{"rss_idle_mb": [%s], "rss_20svc_mb": [%s], "leader_failover_s": [%s], "replacement_s": %s, "drill_requests": %s, "drill_failed": %s, "drill_longest_s": %s, "schedule_100k_ms": %s, "schedule_100k_plain_ms": %s}\n' \
  "$(IFS=,; echo "${idle[*]}")" "$(IFS=,; echo "${busy[*]}")" "$(IFS=,; echo "${failovers[*]}")" "$replace_s" "$drill_total" "$drill_failed" "$drill_longest" "$sched_ms" "$sched_plain_ms" >"$out"
echo "results written to $out"
