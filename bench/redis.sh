#!/usr/bin/env bash
# Managed Redis failover drill and proxy throughput, one command:  bash bench/redis.sh
# Prints a table and writes bench/results/redis-<date>.json.
#   - holdfast: 3 nodes on loopback (127.0.79.21-23; sites a, a, b), a 3-instance Redis
#     database (persistence: aof); a client (bench/redis_writer.py, redis-py) does one
#     `SET w:<id>` every 10 ms through the master URL; the master's whole machine is
#     SIGKILLed (the daemon and its redis-server) and the write-unavailability window (last
#     acknowledged write before the kill to the first after it), the time from the kill to
#     the first acknowledged write, and the acknowledged writes missing afterwards are
#     counted; durability none and replicated, ROUNDS rounds each (default 3), a fresh
#     cluster per round.
#   - redis-benchmark (GET and SET, 16 clients, REQUESTS requests (default 200000); and
#     pipelined -P 16 with REQUESTS_P (default 10 x REQUESTS)) through the master URL with
#     the master on the proxy's own node (the local proxy) and straight to the master's own
#     port (target >= 0.9x); the same through the proxy with durability: replicated (its
#     RESP relay adds one WAIT per batch of writes; reported).
#   - Redis 7.0 Sentinel, when SENTINEL=1 (the default when the peer harness is installed:
#     PEERS=/work/shared/peers by default; see its README): its drill.sh, scenarios D
#     (defaults) and T (tuned) with the same rounds, writer cadence and fault, and the
#     ratios holdfast / Sentinel of the median windows.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
requests=${REQUESTS:-200000}
requests_p=${REQUESTS_P:-$((requests * 10))}
peers=${PEERS:-/work/shared/peers}/sentinel/scripts
sentinel=${SENTINEL:-$([ -f "$peers/drill.sh" ] && echo 1 || echo 0)}
for tool in redis-server redis-cli redis-benchmark python3 ss; do
  command -v "$tool" >/dev/null || { echo "bench/redis.sh needs $tool (apt-get install redis-server redis-tools iproute2)"; exit 1; }
done
# The writer is redis-py from PyPI in a virtualenv (scripts/pyenv.sh).
PY=$(bash scripts/pyenv.sh)
cargo build --release --quiet --bins
BIN="$PWD/target/release"
export PATH="$BIN:$PATH"
work=$(mktemp -d "${TMPDIR:-/tmp}/holdfast-redisbench.XXXXXX")
chmod 711 "$work" # the redis user must reach the members' directories below
writer=""; peer_pid=""

# The daemon pid of node DIR (a node's data directory), only while that daemon runs.
hf_pid() {
  local p; p=$(cat "$1/holdfast.pid" 2>/dev/null) || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "--data-dir $1 " || return 1
  echo "$p"
}
# SIGKILL every redis-server whose working directory is under PREFIX (the members chdir
# to their data directory under the node's). Redis rewrites its process title to
# "redis-server 127.0.0.1:<port>", so the config path is not on its command line.
kill_redis_under() {
  local p
  for p in $(pgrep -x redis-server || true); do
    case "$(readlink "/proc/$p/cwd" 2>/dev/null)" in "$1"/*) kill -9 "$p" 2>/dev/null || true ;; esac
  done
}
# Stops the nodes of cluster DIR: SIGTERM (each daemon stops its instances), a bounded
# wait, then SIGKILL for whatever is left.
stop_cluster() {
  local d p pids=()
  for d in "$1"/n*; do p=$(hf_pid "$d") && { kill -TERM "$p" 2>/dev/null || true; pids+=("$p"); }; done
  for _ in $(seq 100); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.2
  done
  for d in "$1"/n*; do p=$(hf_pid "$d") && { kill -9 "$p" 2>/dev/null || true; }; done
  kill_redis_under "$1"
}
cleanup() {
  [ -n "$writer" ] && kill -9 "$writer" 2>/dev/null || true
  if [ -n "$peer_pid" ] && kill -0 "$peer_pid" 2>/dev/null; then
    kill -TERM "$peer_pid" 2>/dev/null || true # drill.sh stops its runs and removes its network
    for _ in $(seq 150); do kill -0 "$peer_pid" 2>/dev/null || break; sleep 0.2; done
  fi
  local c
  for c in "$work"/*/; do [ -d "$c/n1" ] && stop_cluster "${c%/}"; done
  kill_redis_under "$work"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip() { echo "127.0.79.2$1"; } # own loopback addresses: not those of bench/footprint.sh (127.0.79.1-9)
start_node() { # start_node DIR N SITE [TOKEN]
  local dir=$1 n=$2 site=$3 token=${4:-}
  local cmd=(up); [ -n "$token" ] && cmd=(join "$token")
  holdfast "${cmd[@]}" --data-dir "$dir/n$n" --listen "$(ip "$n"):7946" --name "n$n" --site "$site" \
    --port-range "$((45000 + n * 100))-$((45000 + n * 100 + 99))" --http "$(ip "$n"):8080" --dns "$(ip "$n"):8053" --log-level warn >"$dir/n$n.log" 2>&1 &
  disown # no job notices: some of these daemons get SIGKILLed on purpose
  for _ in $(seq 100); do holdfast --data-dir "$dir/n$n" status >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "node $n did not start:"; cat "$dir/n$n.log"; exit 1
}
dbjson() { holdfast --data-dir "$1/n1" db status --json; }
healthy() { # healthy DIR DB REPLICAS [MASTER_NODE]
  dbjson "$1" | python3 -c '
import json,sys
d=next(x for x in json.load(sys.stdin)["databases"] if x["name"]==sys.argv[1]); m=d["members"]
p=any(x["role"]=="primary" and x["term"]==d["term"] and x["answering"] for x in m)
r=sum(x["role"]=="replica" and x["streaming"] for x in m)
sys.exit(0 if p and r>=int(sys.argv[2]) and sys.argv[3] in ("", d["primary_node"]) and not d["switchover"] else 1)' "$2" "$3" "${4:-}" 2>/dev/null
}
master_node() { dbjson "$1" | python3 -c 'import json,sys; print(next(x for x in json.load(sys.stdin)["databases"] if x["name"]==sys.argv[1])["primary_node"])' "$2"; }
wait_healthy() { # wait_healthy DIR DB REPLICAS [MASTER_NODE] (at most 2 minutes)
  for _ in $(seq 600); do healthy "$@" && return 0; sleep 0.2; done
  echo "the database $2 did not become healthy in $1:" >&2; dbjson "$1" >&2; exit 1
}

drill() { # drill ROUND DURABILITY: writes "window resume lost acked failed leader_died" to $work/result-ROUND-DURABILITY
  local dir="$work/r$1-$2"; mkdir -p "$dir"; chmod 711 "$dir"
  start_node "$dir" 1 a
  start_node "$dir" 2 a "$(holdfast --data-dir "$dir/n1" token create 2>/dev/null)"
  start_node "$dir" 3 b "$(holdfast --data-dir "$dir/n1" token create 2>/dev/null)"
  printf 'project: bench%s\ndatabases:\n  cache:\n    engine: redis\n    instances: 3\n    durability: %s\n    persistence: aof\n' "$1$2" "$2" >"$dir/db.yaml"
  holdfast --data-dir "$dir/n1" deploy "$dir/db.yaml" >"$dir/deploy.log"
  wait_healthy "$dir" cache 2
  local url; url=$(holdfast --data-dir "$dir/n1" db url cache)
  local victim; victim=$(master_node "$dir" cache)
  "$PY" bench/redis_writer.py --dsn "$url" --out "$dir/writer.tsv" --stop "$dir/stop" --max-seconds 150 2>"$dir/writer.err" &
  writer=$!
  sleep 5
  grep -q '^A' "$dir/writer.tsv" || { echo "round $1 $2: no acknowledged write before the kill" >&2; cat "$dir/writer.tsv" "$dir/writer.err" >&2; exit 1; }
  # Was the Raft leader on the victim's machine too? (Then the failover also waits for an
  # election and the new leader's lease.)
  local leader; leader=$(holdfast --data-dir "$dir/n1" nodes --json | python3 -c 'import json,sys; print(next((n["name"] for n in json.load(sys.stdin)["nodes"] if n["role"]=="leader"), "?"))')
  local with_leader=no; [ "$leader" = "$victim" ] && with_leader=yes
  # The machine dies: its daemon and every process it runs (each instance's process group,
  # from the agent's records: the redis-server and any fork of it), in one kill call.
  local dpid; dpid=$(hf_pid "$dir/$victim") || { echo "round $1 $2: the master's daemon is not running" >&2; exit 1; }
  local groups; groups=$(python3 -c '
import glob,json,sys
for f in glob.glob(sys.argv[1]+"/agent/instances/*.json"):
    r=json.load(open(f)); g=r.get("pgid") or r.get("pid")
    if g: print(-int(g))' "$dir/$victim")
  local t0; t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  kill -9 -- "$dpid" $groups 2>/dev/null || true
  kill_redis_under "$dir/$victim" # anything the records missed
  # Writes are back once one is acknowledged that was sent after the first failure
  # following the kill (a write in flight at the kill may still be acknowledged).
  for _ in $(seq 600); do
    awk -F'\t' -v t0="$t0" '$1=="F" && $3>t0 && !ff {ff=$3} $1=="A" && ff && $3>ff {ok=1} END {exit !ok}' "$dir/writer.tsv" && break
    sleep 0.1
  done
  sleep 3; touch "$dir/stop"; wait "$writer" || true; writer=""
  local survivor=n1; [ "$victim" = n1 ] && survivor=n2
  url=$(holdfast --data-dir "$dir/$survivor" db url cache)
  local ok=0
  for _ in $(seq 50); do
    if timeout 30 redis-cli --no-auth-warning -u "$url" --scan --pattern 'w:*' >"$dir/keys.txt" 2>"$dir/keys.err" &&
      [ -s "$dir/keys.txt" ] && ! grep -qv '^w:[0-9]*$' "$dir/keys.txt"; then ok=1; break; fi
    sleep 0.2
  done
  [ "$ok" = 1 ] || { echo "round $1 $2: could not read the keys back:" >&2; cat "$dir/keys.txt" "$dir/keys.err" >&2; exit 1; }
  python3 - "$dir/writer.tsv" "$dir/keys.txt" "$t0" "$with_leader" >"$work/result-$1-$2" <<'PY'
import sys
acks=[]; fails=[]
for l in open(sys.argv[1]):
    f=l.rstrip('\n').split('\t')
    if len(f)<4: continue
    if f[0]=='A': acks.append((int(f[1]), float(f[2]), float(f[3])))
    else: fails.append((int(f[1]), float(f[2]), float(f[3])))
t0=float(sys.argv[3])
have={int(x.split(':',1)[1]) for x in open(sys.argv[2]).read().split()}
# The window: the longest gap between consecutive acknowledgements that ends after the
# kill (a write in flight at the kill may still be acknowledged just after it).
times=sorted(t for _,_,t in acks)
gaps=[b-a for a,b in zip(times, times[1:]) if b>t0]
window=max(gaps) if gaps else float('nan')
# Kill -> first acknowledged write sent after the first failure following the kill (the
# peer harness's window_s: kill -> first ack from another server).
ff=min((s for _,s,_ in fails if s>t0), default=None)
after=[a for _,s,a in acks if (s>ff if ff is not None else a>t0)]
resume=(min(after)-t0) if after else float('nan')
lost=sum(1 for i,_,_ in acks if i not in have)
print(f"{window:.2f} {resume:.2f} {lost} {len(acks)} {len(fails)} {sys.argv[4]}")
PY
  stop_cluster "$dir"
}
declare -a none_w none_r none_ld repl_w repl_r repl_ld
none_lost=0; none_acked=0; repl_lost=0; repl_acked=0
for r in $(seq 1 "$rounds"); do
  for dur in none replicated; do
    drill "$r" "$dur"
    read -r w rs l a f ld <"$work/result-$r-$dur"
    if [ "$dur" = none ]; then
      none_w+=("$w"); none_r+=("$rs"); none_ld+=("$ld"); none_lost=$((none_lost + l)); none_acked=$((none_acked + a))
    else
      repl_w+=("$w"); repl_r+=("$rs"); repl_ld+=("$ld"); repl_lost=$((repl_lost + l)); repl_acked=$((repl_acked + a))
    fi
    printf '  round %s %-10s window %ss (kill -> first ack %ss), %s of %s acknowledged writes missing, %s failed attempts; Raft leader died too: %s\n' \
      "$r" "$dur:" "$w" "$rs" "$l" "$a" "$f" "$ld"
  done
done

# redis-benchmark (one cluster of two nodes, two databases: durability none and
# replicated). On loopback every node's proxy wants the same master address and only one
# holds it, so each database's master is switched over to the node whose proxy holds its
# address: the client's own node proxies to a local master. Direct: the master's own port.
dir="$work/rtp"; mkdir -p "$dir"; chmod 711 "$dir"
start_node "$dir" 1 a
start_node "$dir" 2 a "$(holdfast --data-dir "$dir/n1" token create 2>/dev/null)"
printf 'project: benchtp\ndatabases:\n  cache:\n    engine: redis\n    instances: 2\n    persistence: aof\n  cacher:\n    engine: redis\n    instances: 2\n    durability: replicated\n    persistence: aof\n' >"$dir/db.yaml"
holdfast --data-dir "$dir/n1" deploy "$dir/db.yaml" >"$dir/deploy.log"
wait_healthy "$dir" cache 1
wait_healthy "$dir" cacher 1
local_master() { # local_master DB: puts DB's master on the node whose proxy holds its address; prints the URL
  local db=$1 url addr owner node="" n p
  url=$(holdfast --data-dir "$dir/n1" db url "$db")
  addr=$(python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(f"{p.hostname}:{p.port}")' "$url")
  for _ in $(seq 50); do
    owner=$(ss -Hltnp "( sport = :${addr##*:} )" | grep -F " $addr " | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
    [ -n "$owner" ] && break; sleep 0.2
  done
  for n in n1 n2; do p=$(hf_pid "$dir/$n") && [ "$p" = "$owner" ] && node=$n; done
  [ -n "$node" ] || { echo "no node's proxy listens on $addr" >&2; exit 1; }
  [ "$(master_node "$dir" "$db")" = "$node" ] || holdfast --data-dir "$dir/n1" db switchover "$db" --to "$node" >"$dir/switchover-$db.log"
  wait_healthy "$dir" "$db" 1 "$node"
  echo "$url"
}
direct_url() { # direct_url DB URL: the master's own port (from the agent's record of the member)
  local node port
  node=$(master_node "$dir" "$1")
  port=$(python3 -c '
import glob,json,sys
for f in glob.glob(sys.argv[1]+"/agent/instances/redis_"+sys.argv[2]+"-*.json"):
    print(json.load(open(f))["ports"]["redis"])' "$dir/$node" "$1")
  python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(f"redis://{p.username}:{p.password}@127.0.0.1:{sys.argv[2]}")' "$2" "$port"
}
rb() { # rb URL REQUESTS PIPELINE -> "SET_rps GET_rps"
  timeout 900 redis-benchmark -u "$1" -c 16 -n "$2" -P "$3" -t set,get --csv 2>>"$work/redis-benchmark.err" |
    awk -F'"' '$2=="SET" {s=$4} $2=="GET" {g=$4} END {printf "%d %d\n", s, g}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
url=$(local_master cache); direct=$(direct_url cache "$url")
[ "$(redis-cli --no-auth-warning -u "$direct" ROLE | head -1)" = master ] || { echo "$direct is not the master" >&2; exit 1; }
read -r set_proxy get_proxy < <(rb "$url" "$requests" 1)
read -r set_direct get_direct < <(rb "$direct" "$requests" 1)
read -r setp_proxy getp_proxy < <(rb "$url" "$requests_p" 16)
read -r setp_direct getp_direct < <(rb "$direct" "$requests_p" 16)
# HAProxy (tcp mode) in front of the same master: what a peer proxy costs on this machine.
get_ha=""; set_ha=""; getp_ha=""; setp_ha=""; haproxy_version=""
if ! command -v haproxy >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null 2>&1 || true
fi
if command -v haproxy >/dev/null; then
  haproxy_version=$(haproxy -v | head -1 | awk '{print $3}')
  dport=$(python3 -c 'import sys,urllib.parse as u; print(u.urlparse(sys.argv[1]).port)' "$direct")
  printf 'global\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nfrontend rd\n  bind 127.0.0.1:45499\n  default_backend master\nbackend master\n  server m 127.0.0.1:%s\n' "$dport" >"$work/haproxy-redis.cfg"
  haproxy -f "$work/haproxy-redis.cfg" -db >"$work/haproxy-redis.log" 2>&1 &
  hap=$!
  sleep 1
  ha_url=$(python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(f"redis://{p.username}:{p.password}@127.0.0.1:45499")' "$url")
  read -r set_ha get_ha < <(rb "$ha_url" "$requests" 1)
  read -r setp_ha getp_ha < <(rb "$ha_url" "$requests_p" 16)
  kill "$hap" 2>/dev/null || true
  wait "$hap" 2>/dev/null || true
else
  echo "haproxy is not installed (and could not be): HAProxy not measured"
fi
rurl=$(local_master cacher); rdirect=$(direct_url cacher "$rurl")
read -r set_repl get_repl < <(rb "$rurl" "$requests" 1)
read -r set_repl_direct get_repl_direct < <(rb "$rdirect" "$requests" 1)
read -r setp_repl getp_repl < <(rb "$rurl" "$requests_p" 16)
read -r setp_repl_direct getp_repl_direct < <(rb "$rdirect" "$requests_p" 16)
stop_cluster "$dir"

# Redis Sentinel (the peer harness: its own network namespaces, Debian's python3-redis).
declare -a sd_w sd_g sd_l st_w st_g st_l; sentinel_note=""
if [ "$sentinel" = 1 ]; then
  if [ -f "$peers/drill.sh" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      missing=()
      /usr/bin/python3 -c 'import redis' 2>/dev/null || missing+=(python3-redis)
      command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)
      command -v bc >/dev/null || missing+=(bc)
      [ ${#missing[@]} = 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || true
    fi
    if [ "$(id -u)" = 0 ] && /usr/bin/python3 -c 'import redis' 2>/dev/null && command -v redis-sentinel >/dev/null && command -v bc >/dev/null; then
      mkdir -p "$work/peer"
      # Bounded: D waits 30 s per run for down-after; drill.sh cleans up on TERM.
      PEER_REDIS_BASE="$work/peer" timeout $((rounds * 2 * 150 + 300)) bash "$peers/drill.sh" "D T" "$rounds" >"$work/sentinel.log" 2>&1 &
      peer_pid=$!
      prc=0; wait "$peer_pid" || prc=$?
      peer_pid=""
      [ "$prc" = 0 ] || echo "the Sentinel drill exited with $prc (a run failed or timed out); the runs it finished are counted"
      for s in D T; do
        read -r w g l < <(python3 - "$work/peer/runs" "$s" "$rounds" <<'PY'
import json,os,sys
w=[];g=[];l=[]
for n in range(1, int(sys.argv[3])+1):
    f=os.path.join(sys.argv[1], f"{sys.argv[2]}-{n}", "result.json")
    if not os.path.exists(f): continue
    r=json.load(open(f))
    if r.get("window_s") is None: continue
    w.append(f'{r["window_s"]:.2f}'); g.append(f'{r["gap_s"]:.2f}' if r.get("gap_s") is not None else "nan")
    l.append(str(r["lost_acked"]) if r.get("lost_acked") is not None else "nan")
print(",".join(w) or "-", ",".join(g) or "-", ",".join(l) or "-")
PY
        )
        [ "$w" = - ] && continue
        IFS=, read -r -a wa <<<"$w"; IFS=, read -r -a ga <<<"$g"; IFS=, read -r -a la <<<"$l"
        if [ "$s" = D ]; then sd_w=("${wa[@]}"); sd_g=("${ga[@]}"); sd_l=("${la[@]}"); else st_w=("${wa[@]}"); st_g=("${ga[@]}"); st_l=("${la[@]}"); fi
      done
      [ ${#st_w[@]} -gt 0 ] || { sentinel_note="no Sentinel results: Sentinel not measured; the end of its log:"; tail -20 "$work/sentinel.log"; }
    else
      sentinel_note="the peer harness needs root, /usr/bin/python3 with python3-redis, redis-sentinel and bc: Sentinel not measured"
    fi
  else
    sentinel_note="SENTINEL=1 but $peers/drill.sh is missing: Sentinel not measured"
  fi
  [ -n "$sentinel_note" ] && echo "$sentinel_note"
fi

med() { [ $# -gt 0 ] && printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
sum() { [ $# -gt 0 ] && printf '%s\n' "$@" | awk '{s+=$1} END {print s}'; }
nw=$(med "${none_w[@]}"); nr=$(med "${none_r[@]}"); rw=$(med "${repl_w[@]}"); rr=$(med "${repl_r[@]}")
stw=$(med "${st_w[@]}" || true); stg=$(med "${st_g[@]}" || true); sdw=$(med "${sd_w[@]}" || true); sdg=$(med "${sd_g[@]}" || true)
echo
printf '%-64s %-30s %s\n' "measure" "holdfast" "target / peers"
printf '%-64s %-30s %s\n' "writes unavailable after the master's machine dies, none (s)" "${none_w[*]} (median $nw)" "< 2 s; Sentinel tuned 2.24-2.28 (peer README)${stg:+; this run: T median $stg}"
printf '%-64s %-30s %s\n' "  kill -> first acknowledged write, none (s)" "${none_r[*]} (median $nr)" "< 2 s${stw:+; Sentinel T ${st_w[*]}${sdw:+, D ${sd_w[*]}}}"
printf '%-64s %-30s %s\n' "  rounds where the Raft leader died with the master" "${none_ld[*]}" ""
printf '%-64s %-30s %s\n' "  acknowledged writes missing, none" "$none_lost of $none_acked" "reported${stw:+; Sentinel T $(sum "${st_l[@]}"), D $(sum "${sd_l[@]}" || echo -)}"
printf '%-64s %-30s %s\n' "writes unavailable, durability replicated (s)" "${repl_w[*]} (median $rw)" "< 2 s"
printf '%-64s %-30s %s\n' "  kill -> first acknowledged write, replicated (s)" "${repl_r[*]} (median $rr)" "< 2 s"
printf '%-64s %-30s %s\n' "  rounds where the Raft leader died with the master" "${repl_ld[*]}" ""
printf '%-64s %-30s %s\n' "  acknowledged writes missing, replicated" "$repl_lost of $repl_acked" "0"
ha() { [ -n "$1" ] && echo "; HAProxy $haproxy_version $1 ($(ratio "$1" "$2")x)"; }
printf '%-64s %-30s %s\n' "redis-benchmark GET (rps): master URL, local proxy / direct" "$get_proxy / $get_direct ($(ratio "$get_proxy" "$get_direct")x)" ">= 0.9x$(ha "$get_ha" "$get_direct")"
printf '%-64s %-30s %s\n' "redis-benchmark SET (rps): master URL, local proxy / direct" "$set_proxy / $set_direct ($(ratio "$set_proxy" "$set_direct")x)" ">= 0.9x$(ha "$set_ha" "$set_direct")"
printf '%-64s %-30s %s\n' "redis-benchmark GET -P 16 (rps): local proxy / direct" "$getp_proxy / $getp_direct ($(ratio "$getp_proxy" "$getp_direct")x)" ">= 0.9x$(ha "$getp_ha" "$getp_direct")"
printf '%-64s %-30s %s\n' "redis-benchmark SET -P 16 (rps): local proxy / direct" "$setp_proxy / $setp_direct ($(ratio "$setp_proxy" "$setp_direct")x)" ">= 0.9x$(ha "$setp_ha" "$setp_direct")"
[ -n "$get_ha" ] && printf '%-64s %-30s %s\n' "ratio holdfast / HAProxy: GET, SET, GET -P 16, SET -P 16" "$(ratio "$get_proxy" "$get_ha")x, $(ratio "$set_proxy" "$set_ha")x, $(ratio "$getp_proxy" "$getp_ha")x, $(ratio "$setp_proxy" "$setp_ha")x" ">= 1.0x"
printf '%-64s %-30s %s\n' "replicated, GET (rps): local proxy (relay) / direct" "$get_repl / $get_repl_direct ($(ratio "$get_repl" "$get_repl_direct")x)" "reported"
printf '%-64s %-30s %s\n' "replicated, SET (rps): local proxy (relay, WAIT) / direct" "$set_repl / $set_repl_direct ($(ratio "$set_repl" "$set_repl_direct")x)" "reported"
printf '%-64s %-30s %s\n' "replicated, GET -P 16 (rps): local proxy (relay) / direct" "$getp_repl / $getp_repl_direct ($(ratio "$getp_repl" "$getp_repl_direct")x)" "reported"
printf '%-64s %-30s %s\n' "replicated, SET -P 16 (rps): local proxy (relay, WAIT) / direct" "$setp_repl / $setp_repl_direct ($(ratio "$setp_repl" "$setp_repl_direct")x)" "reported"
if [ -n "$stw" ]; then
  printf '%-64s %-30s %s\n' "Sentinel T (tuned), kill -> first ack; window (s)" "${st_w[*]}; ${st_g[*]}" "lost: ${st_l[*]}"
  [ -n "$sdw" ] && printf '%-64s %-30s %s\n' "Sentinel D (defaults), kill -> first ack; window (s)" "${sd_w[*]}; ${sd_g[*]}" "lost: ${sd_l[*]}"
  printf '%-64s %-30s %s\n' "ratio holdfast / Sentinel T, medians (kill -> ack, window)" "none $(ratio "$nr" "$stw")x, $(ratio "$nw" "$stg")x" "replicated $(ratio "$rr" "$stw")x, $(ratio "$rw" "$stg")x (< 1.0x)"
  [ -n "$sdw" ] && printf '%-64s %-30s %s\n' "ratio holdfast / Sentinel D, medians (kill -> ack, window)" "none $(ratio "$nr" "$sdw")x, $(ratio "$nw" "$sdg")x" "replicated $(ratio "$rr" "$sdw")x, $(ratio "$rw" "$sdg")x"
fi
mkdir -p bench/results
res="bench/results/redis-$(date +%Y%m%d-%H%M%S).json"
list() { local IFS=,; echo "[$*]"; }
python3 - "$res" \
  "machine=\"$(uname -m) $(nproc) cores\"" "redis=\"$(redis-server --version | grep -o 'v=[0-9.]*' | cut -d= -f2)\"" "rounds=$rounds" \
  "none_window_s=$(list "${none_w[@]}")" "none_kill_to_ack_s=$(list "${none_r[@]}")" "none_lost=$none_lost" "none_acked=$none_acked" \
  "raft_leader_died_too_none=\"${none_ld[*]}\"" \
  "replicated_window_s=$(list "${repl_w[@]}")" "replicated_kill_to_ack_s=$(list "${repl_r[@]}")" "replicated_lost=$repl_lost" "replicated_acked=$repl_acked" \
  "raft_leader_died_too_replicated=\"${repl_ld[*]}\"" \
  "benchmark_clients=16" "benchmark_requests=$requests" "benchmark_requests_pipelined=$requests_p" \
  "haproxy=\"$haproxy_version\"" "get_haproxy_rps=${get_ha:-0}" "set_haproxy_rps=${set_ha:-0}" "get_p16_haproxy_rps=${getp_ha:-0}" "set_p16_haproxy_rps=${setp_ha:-0}" \
  "get_proxy_rps=${get_proxy:-0}" "get_direct_rps=${get_direct:-0}" "set_proxy_rps=${set_proxy:-0}" "set_direct_rps=${set_direct:-0}" \
  "get_p16_proxy_rps=${getp_proxy:-0}" "get_p16_direct_rps=${getp_direct:-0}" "set_p16_proxy_rps=${setp_proxy:-0}" "set_p16_direct_rps=${setp_direct:-0}" \
  "replicated_get_proxy_rps=${get_repl:-0}" "replicated_get_direct_rps=${get_repl_direct:-0}" "replicated_set_proxy_rps=${set_repl:-0}" "replicated_set_direct_rps=${set_repl_direct:-0}" \
  "replicated_get_p16_proxy_rps=${getp_repl:-0}" "replicated_get_p16_direct_rps=${getp_repl_direct:-0}" "replicated_set_p16_proxy_rps=${setp_repl:-0}" "replicated_set_p16_direct_rps=${setp_repl_direct:-0}" \
  "sentinel_tuned_window_s=$(list "${st_w[@]}")" "sentinel_tuned_gap_s=$(list "${st_g[@]}")" "sentinel_tuned_lost=$(list "${st_l[@]}")" \
  "sentinel_defaults_window_s=$(list "${sd_w[@]}")" "sentinel_defaults_gap_s=$(list "${sd_g[@]}")" "sentinel_defaults_lost=$(list "${sd_l[@]}")" <<'PY'
import json,sys
out={}
for kv in sys.argv[2:]:
    k,v=kv.split('=',1)
    try: out[k]=json.loads(v)
    except ValueError: out[k]=v   # nan and the like stay text
json.dump(out, open(sys.argv[1],'w'))
open(sys.argv[1],'a').write('\n')
PY
echo "results written to $res"
