#!/usr/bin/env bash
# Managed PostgreSQL failover drill, one command:  bash bench/postgres.sh
# Prints a table and writes bench/results/postgres-<date>.json.
#   - holdfast: 3 nodes on loopback (127.0.78.x), a 3-instance database; a client
#     (bench/pg_writer.py, psycopg 3) inserts one row every 10 ms through the `-rw` URL;
#     the primary's whole machine is SIGKILLed (daemon and every postgres process) and the
#     write-unavailability window (last acknowledged write before the kill to the first
#     after it) and the acknowledged writes missing afterwards are counted; sync: 1 and
#     async, ROUNDS rounds each (default 3), a fresh cluster per round.
#   - pgbench (select-only and simple-update, 4 clients, 10 s) through `-rw` with the
#     primary on the client's node (the local proxy), through `-rw` with the primary on the
#     other node (the mTLS tunnel), straight to the primary's own port (target >= 0.9x),
#     and through HAProxy (tcp mode; installed when missing and root) to the same primary.
#   - Patroni 3.0 + etcd 3.4, when PATRONI=1 and the peer harness is installed
#     (PEERS=/work/shared/peers by default; see its README): the same writer cadence and
#     fault, scenarios A (defaults) and B (tuned), and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
for tool in psql pgbench python3 curl; do command -v "$tool" >/dev/null || { echo "bench/postgres.sh needs $tool"; exit 1; }; done
# The writer is psycopg 3 from PyPI in a virtualenv (scripts/pyenv.sh).
PY=$(bash scripts/pyenv.sh)
cargo build --release --quiet --bins
BIN="$PWD/target/release"
export PATH="$BIN:$PATH"
work=$(mktemp -d "${TMPDIR:-/tmp}/holdfast-pgbench.XXXXXX")
chmod 711 "$work"
cleanup() {
  for d in "$work"/r*/n*; do
    [ -f "$d/holdfast.pid" ] && kill -TERM "$(cat "$d/holdfast.pid")" 2>/dev/null || true
  done
  sleep 3
  pkill -9 -f "postgres -D $work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip() { echo "127.0.78.$1"; }
start_node() { # start_node DIR N SITE [TOKEN]
  local dir=$1 n=$2 site=$3 token=${4:-}
  local cmd=(up); [ -n "$token" ] && cmd=(join "$token")
  holdfast "${cmd[@]}" --data-dir "$dir/n$n" --listen "$(ip "$n"):7946" --name "n$n" --site "$site" \
    --port-range "$((47000 + n * 100))-$((47000 + n * 100 + 99))" --http "$(ip "$n"):8080" --dns "$(ip "$n"):8053" --log-level warn >"$dir/n$n.log" 2>&1 &
  for _ in $(seq 100); do holdfast --data-dir "$dir/n$n" status >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "node $n did not start:"; cat "$dir/n$n.log"; exit 1
}
dbjson() { holdfast --data-dir "$1/n1" db status --json; }
healthy() { # healthy DIR REPLICAS
  dbjson "$1" | python3 -c '
import json,sys
d=json.load(sys.stdin)["databases"][0]; m=d["members"]
p=any(x["role"]=="primary" and x["term"]==d["term"] for x in m)
r=sum(x["role"]=="replica" and x["streaming"] for x in m)
sys.exit(0 if p and r>='"$2"' else 1)' 2>/dev/null
}
drill() { # drill ROUND SYNC -> prints "window lost acked failed"
  local dir="$work/r$1-s$2"; mkdir -p "$dir"; chmod 711 "$dir"
  start_node "$dir" 1 a
  start_node "$dir" 2 a "$(holdfast --data-dir "$dir/n1" token create 2>/dev/null)"
  start_node "$dir" 3 b "$(holdfast --data-dir "$dir/n1" token create 2>/dev/null)"
  printf 'project: bench%s\ndatabases:\n  db:\n    engine: postgres\n    instances: 3\n    sync: %s\n    users: [app]\n    databases: [app]\n' "$1$2" "$2" >"$dir/db.yaml"
  holdfast --data-dir "$dir/n1" deploy "$dir/db.yaml" >/dev/null
  for _ in $(seq 600); do healthy "$dir" 2 && break; sleep 0.2; done
  healthy "$dir" 2 || { echo "round $1: the database did not become healthy" >&2; dbjson "$dir" >&2; exit 1; }
  local url; url=$(holdfast --data-dir "$dir/n1" db url db)
  psql "$url" -qc "CREATE TABLE t (id bigint PRIMARY KEY)"
  local victim; victim=$(dbjson "$dir" | python3 -c 'import json,sys; print(json.load(sys.stdin)["databases"][0]["primary_node"])')
  "$PY" bench/pg_writer.py --dsn "$url" --out "$dir/writer.tsv" --stop "$dir/stop" &
  local writer=$!
  sleep 5
  # Was the Raft leader on the victim's machine too? (Then the failover waits for an
  # election and the new leader's lease: target < 5 s instead of < 3 s.)
  local leader; leader=$(holdfast --data-dir "$dir/n1" nodes --json | python3 -c 'import json,sys; print(next((n["name"] for n in json.load(sys.stdin)["nodes"] if n["role"]=="leader"), "?"))')
  local with_leader=no; [ "$leader" = "$victim" ] && with_leader=yes
  local t0; t0=$(date +%s.%N)
  # The machine dies: its daemon and every postgres process (the postmaster's whole
  # process group: backends and WAL senders too).
  local pm; pm=$(head -1 "$dir/$victim"/databases/db/m*/data/postmaster.pid)
  kill -9 "$(cat "$dir/$victim/holdfast.pid")"
  kill -9 -- "-$pm" 2>/dev/null || true
  # the survivors' view: wait for writes, then a little more
  # Writes are back once one is acknowledged that was sent after the first failure
  # following the kill (writes in flight at the kill may still be acknowledged).
  for _ in $(seq 600); do
    awk -F'\t' -v t0="$t0" '$1=="F" && $3>t0 && !ff {ff=$3} $1=="A" && ff && $3>ff {ok=1} END {exit !ok}' "$dir/writer.tsv" && break
    sleep 0.1
  done
  sleep 3; touch "$dir/stop"; wait "$writer" || true
  local survivor=n1; [ "$victim" = n1 ] && survivor=n2
  url=$(holdfast --data-dir "$dir/$survivor" db url db)
  for _ in $(seq 50); do psql "$url" -Atc "SELECT id FROM t" >"$dir/ids.txt" 2>/dev/null && break; sleep 0.2; done
  python3 - "$dir/writer.tsv" "$dir/ids.txt" "$t0" "$with_leader" >"$work/result-$1-$2" <<'PY'
import sys
acks=[]; fails=0
for l in open(sys.argv[1]):
    f=l.rstrip('\n').split('\t')
    if f[0]=='A': acks.append((int(f[1]), float(f[3])))
    else: fails+=1
t0=float(sys.argv[3]); have={int(x) for x in open(sys.argv[2]).read().split()}
# The window: the longest gap between consecutive acknowledgements that ends after the
# kill (a write in flight at the kill may still be acknowledged just after it).
times=sorted(t for _,t in acks)
gaps=[b-a for a,b in zip(times, times[1:]) if b>t0]
window=max(gaps) if gaps else float('nan')
lost=sum(1 for i,_ in acks if i not in have)
print(f"{window:.2f} {lost} {len(acks)} {fails} {sys.argv[4]}")
PY
  for n in 1 2 3; do [ -f "$dir/n$n/holdfast.pid" ] && kill -TERM "$(cat "$dir/n$n/holdfast.pid")" 2>/dev/null || true; done
  sleep 3; pkill -9 -f "postgres -D $dir" 2>/dev/null || true
}
declare -a sync_w async_w sync_ld async_ld; sync_lost=0; async_lost=0; sync_acked=0; async_acked=0
for r in $(seq 1 "$rounds"); do
  drill "$r" 1 >"$work/drill-$r-1.log" 2>&1 || { cat "$work/drill-$r-1.log"; exit 1; }
  read -r w l a f ld <"$work/result-$r-1"; sync_w+=("$w"); sync_lost=$((sync_lost + l)); sync_acked=$((sync_acked + a)); sync_ld+=("$ld")
  echo "  round $r sync:  window ${w}s, ${l} of ${a} acknowledged writes missing, ${f} failed attempts; Raft leader died too: $ld"
  drill "$r" 0 >"$work/drill-$r-0.log" 2>&1 || { cat "$work/drill-$r-0.log"; exit 1; }
  read -r w l a f ld <"$work/result-$r-0"; async_w+=("$w"); async_lost=$((async_lost + l)); async_acked=$((async_acked + a)); async_ld+=("$ld")
  echo "  round $r async: window ${w}s, ${l} of ${a} acknowledged writes missing, ${f} failed attempts; Raft leader died too: $ld"
done

# pgbench (one cluster of two nodes, sync 0). On loopback both nodes' proxies want the
# same `-rw` address and only one holds it, so the primary is switched over to that node
# for the local case (the client's own node proxies to a local primary) and to the other
# one for the tunnel case (the client's node relays through the mTLS link). Direct: the
# primary's own port. HAProxy (tcp mode, default threads like holdfast's runtime) in
# front of the same primary: what a peer proxy costs on this machine.
dir="$work/rpgb"; mkdir -p "$dir"; chmod 711 "$dir"
start_node "$dir" 1 a
start_node "$dir" 2 a "$(holdfast --data-dir "$dir/n1" token create 2>/dev/null)"
printf 'project: benchpgb\ndatabases:\n  db:\n    engine: postgres\n    instances: 2\n    users: [app]\n    databases: [app]\n' >"$dir/db.yaml"
holdfast --data-dir "$dir/n1" deploy "$dir/db.yaml" >/dev/null
for _ in $(seq 600); do healthy "$dir" 1 && break; sleep 0.2; done
url=$(holdfast --data-dir "$dir/n1" db url db)
rw_ip=$(python3 -c 'import sys,urllib.parse as u; print(u.urlparse(sys.argv[1]).hostname)' "$url")
owner=$(ss -Hltnp "( sport = :5432 )" | grep -F "$rw_ip:5432" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
proxy_node=n1; [ "$(cat "$dir/n2/holdfast.pid")" = "$owner" ] && proxy_node=n2
other_node=n2; [ "$proxy_node" = n2 ] && other_node=n1
primary_on() { # primary_on NODE: switch the primary there (if it is not), wait until healthy
  local p; p=$(dbjson "$dir" | python3 -c 'import json,sys; print(json.load(sys.stdin)["databases"][0]["primary_node"])')
  [ "$p" = "$1" ] || holdfast --data-dir "$dir/n1" db switchover db --to "$1" >/dev/null
  for _ in $(seq 600); do healthy "$dir" 1 && break; sleep 0.2; done
}
direct_url() { # the primary's own port
  local p pport; p=$(dbjson "$dir" | python3 -c 'import json,sys; print(json.load(sys.stdin)["databases"][0]["primary_node"])')
  pport=$(sed -n 4p "$dir/$p"/databases/db/m*/data/postmaster.pid)
  python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(f"postgresql://{p.username}:{p.password}@127.0.0.1:{sys.argv[2]}{p.path}")' "$url" "$pport"
}
tps() { pgbench -n "$@" -c 4 -j 2 -T 10 2>/dev/null | awk '/^tps/ {print int($3)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
primary_on "$proxy_node"
pgbench -q -i -s 5 "$url" >/dev/null 2>&1
direct=$(direct_url)
ro_proxy=$(tps -S "$url"); ro_direct=$(tps -S "$direct")
rw_proxy=$(tps -N "$url"); rw_direct=$(tps -N "$direct")
ro_haproxy=""; rw_haproxy=""; haproxy_version=""
if ! command -v haproxy >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null 2>&1 || true
fi
if command -v haproxy >/dev/null; then
  haproxy_version=$(haproxy -v | head -1 | awk '{print $3}')
  pport=$(python3 -c 'import sys,urllib.parse as u; print(u.urlparse(sys.argv[1]).port)' "$direct")
  cat >"$work/haproxy-pg.cfg" <<CFG
global
  maxconn 1000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend pg
  bind 127.0.0.1:47999
  default_backend primary
backend primary
  server p 127.0.0.1:$pport
CFG
  haproxy -f "$work/haproxy-pg.cfg" -db >"$work/haproxy-pg.log" 2>&1 &
  hap=$!
  sleep 1
  ha_url=$(python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(f"postgresql://{p.username}:{p.password}@127.0.0.1:47999{p.path}")' "$url")
  ro_haproxy=$(tps -S "$ha_url"); rw_haproxy=$(tps -N "$ha_url")
  kill "$hap" 2>/dev/null || true
else
  echo "haproxy is not installed (and could not be): HAProxy not measured"
fi
primary_on "$other_node"
direct=$(direct_url)
ro_tunnel=$(tps -S "$url"); ro_tunnel_direct=$(tps -S "$direct")

patroni_a=""; patroni_b=""
if [ "${PATRONI:-0}" = 1 ]; then
  peers=${PEERS:-/work/shared/peers}/patroni/scripts
  if [ -x "$(command -v patroni)" ] && [ -d "$peers" ]; then
    bash "$peers/net-up.sh" >/dev/null 2>&1 || true
    for s in A B; do
      out=$(bash "$peers/run-one.sh" "$s" 1 elsewhere 2>&1 | tee "$work/patroni-$s.log" | grep -Eo 'window[^0-9]*[0-9.]+' | grep -Eo '[0-9.]+$' | head -1 || true)
      [ "$s" = A ] && patroni_a=$out || patroni_b=$out
    done
    bash "$peers/cluster-down.sh" >/dev/null 2>&1 || true
    bash "$peers/net-down.sh" >/dev/null 2>&1 || true
  else
    echo "PATRONI=1 but patroni or $peers is missing: Patroni not measured"
  fi
fi
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
sm=$(med "${sync_w[@]}"); am=$(med "${async_w[@]}")
echo
printf '%-58s %-24s %s\n' "measure" "holdfast" "target / peers"
printf '%-58s %-24s %s\n' "writes unavailable after the primary's machine dies, sync 1 (s)" "${sync_w[*]} (median $sm)" "< 3 s; Patroni tuned 9.3-10.0, defaults 25.6-28.9 (peer README)${patroni_b:+; this run: B $patroni_b, A $patroni_a}"
printf '%-58s %-24s %s\n' "  rounds where the Raft leader died with the primary" "${sync_ld[*]}" "those: < 5 s"
printf '%-58s %-24s %s\n' "  acknowledged writes missing, sync 1" "$sync_lost of $sync_acked" "0"
printf '%-58s %-24s %s\n' "writes unavailable, async (s)" "${async_w[*]} (median $am)" "< 3 s"
printf '%-58s %-24s %s\n' "  acknowledged writes missing, async" "$async_lost of $async_acked" "reported"
printf '%-58s %-24s %s\n' "pgbench -S (tps): -rw, primary local / direct" "$ro_proxy / $ro_direct ($(ratio "$ro_proxy" "$ro_direct")x)" ">= 0.9x${ro_haproxy:+; HAProxy $haproxy_version $ro_haproxy ($(ratio "$ro_haproxy" "$ro_direct")x)}"
printf '%-58s %-24s %s\n' "pgbench -N (tps): -rw, primary local / direct" "$rw_proxy / $rw_direct ($(ratio "$rw_proxy" "$rw_direct")x)" ">= 0.9x${rw_haproxy:+; HAProxy $haproxy_version $rw_haproxy ($(ratio "$rw_haproxy" "$rw_direct")x)}"
printf '%-58s %-24s %s\n' "pgbench -S (tps): -rw, primary on the other node / direct" "$ro_tunnel / $ro_tunnel_direct ($(ratio "$ro_tunnel" "$ro_tunnel_direct")x)" "(through the mTLS tunnel)"
[ -n "$ro_haproxy" ] && printf '%-58s %-24s %s\n' "ratio: holdfast -rw / HAProxy (local primary), -S and -N" "$(ratio "$ro_proxy" "$ro_haproxy")x, $(ratio "$rw_proxy" "$rw_haproxy")x" ">= 1.0x"
[ -n "$patroni_b" ] && printf '%-58s %-24s %s\n' "ratio: Patroni tuned window / holdfast sync window" "$(ratio "$patroni_b" "$sm")x" ""
mkdir -p bench/results
res="bench/results/postgres-$(date +%Y%m%d-%H%M%S).json"
printf '{"sync_window_s": [%s], "sync_lost": %s, "sync_acked": %s, "async_window_s": [%s], "async_lost": %s, "async_acked": %s, "pgbench_select_proxy_tps": %s, "pgbench_select_direct_tps": %s, "pgbench_update_proxy_tps": %s, "pgbench_update_direct_tps": %s, "raft_leader_died_too_sync": "%s", "raft_leader_died_too_async": "%s", "pgbench_select_haproxy_tps": "%s", "pgbench_update_haproxy_tps": "%s", "haproxy": "%s", "pgbench_select_tunnel_tps": %s, "pgbench_select_tunnel_direct_tps": %s, "patroni_defaults_window_s": "%s", "patroni_tuned_window_s": "%s"}\n' \
  "$(IFS=,; echo "${sync_w[*]}")" "$sync_lost" "$sync_acked" "$(IFS=,; echo "${async_w[*]}")" "$async_lost" "$async_acked" \
  "${ro_proxy:-0}" "${ro_direct:-0}" "${rw_proxy:-0}" "${rw_direct:-0}" "${sync_ld[*]}" "${async_ld[*]}" "$ro_haproxy" "$rw_haproxy" "$haproxy_version" "${ro_tunnel:-0}" "${ro_tunnel_direct:-0}" "$patroni_a" "$patroni_b" >"$res"
echo "results written to $res"
