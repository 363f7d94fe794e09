#!/usr/bin/env bash
# Footprint on small hardware (Raspberry Pis on SD cards), one command:  bash bench/footprint.sh
# Prints a table with a pass/fail column and writes bench/results/footprint-<date>.json.
#   - idle disk writes per node of an idle 3-node cluster (no services), from /proc/PID/io:
#     write_bytes (bytes the process sent towards the block device) and wchar (bytes it
#     passed to write(2) and friends: files, but also the TLS traffic to peers), per minute
#     (target < 1 MB/min: SD-card wear). The node's log goes to a file on the same disk at
#     the default log level, so log lines count too; the log's own growth is shown beside.
#     Not counted: the filesystem journal's own writes (jbd2) after an fsync.
#   - idle CPU per node over the same window, utime+stime from /proc/PID/stat (target < 1%
#     of one core);
#   - Raft entries applied during the window (from `holdfast status`): whether an idle
#     cluster keeps proposing; and, after the window, the disk writes one committed entry
#     costs each node (20 label changes);
#   - size of the release `holdfast` binary;
#   - a statically linked x86-64 build (crt-static, glibc): built, checked static with
#     `file` and `ldd`, `holdfast up --demo` started from it and answering over HTTP, size.
#   - then, on the same nodes with 20 services x 2 deployed and /metrics scraped every 15 s:
#     CPU, disk writes and RSS per node (the cost of supervision, usage history, log time
#     index, link probes, metrics and events with a realistic load of instances).
# The idle window is 5 minutes, the busy one the same; FOOTPRINT_IDLE_S=60 (and
# FOOTPRINT_BUSY_S) bash bench/footprint.sh for a quick run.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in curl python3 file ldd readelf nm; do # a missing one would end the run silently (set -e)
  command -v "$tool" >/dev/null || { echo "bench/footprint.sh needs $tool"; exit 1; }
done
idle_s=${FOOTPRINT_IDLE_S:-300}
busy_s=${FOOTPRINT_BUSY_S:-$idle_s}
cargo build --release --quiet --bins
BIN="$PWD/target/release"
export PATH="$BIN:$PATH"
work=$(mktemp -d "${TMPDIR:-/tmp}/holdfast-fbench.XXXXXX")
cleanup() {
  for d in "$work"/n* "$work"/static; do
    [ -f "$d/holdfast.pid" ] && kill -TERM "$(cat "$d/holdfast.pid")" 2>/dev/null || true
  done
  sleep 2
  rm -rf "$work"
}
trap cleanup EXIT

ip() { echo "127.0.79.$1"; } # own loopback addresses: does not collide with bench/cluster.sh
hf() { local n=$1; shift; holdfast --data-dir "$work/n$n" "$@"; }
pid_of() { cat "$work/n$1/holdfast.pid"; }
start_node() { # start_node N SITE [TOKEN]
  local n=$1 site=$2 token=${3:-}
  local cmd=(up); [ -n "$token" ] && cmd=(join "$token")
  holdfast "${cmd[@]}" --data-dir "$work/n$n" --listen "$(ip "$n"):7946" --name "n$n" --site "$site" \
    --port-range "$((43000 + n * 100))-$((43000 + n * 100 + 99))" --http "$(ip "$n"):8080" --dns "$(ip "$n"):8053" >"$work/n$n.log" 2>&1 &
  for _ in $(seq 100); do hf "$n" status >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "node $n did not start:"; cat "$work/n$n.log"; exit 1
}
io_field() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/io"; }
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; } # utime + stime (fields 14, 15)
applied() { hf "$1" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["control_plane"]["last_applied"] or 0)'; }
hz=$(getconf CLK_TCK)
pass() { awk -v v="$1" -v t="$2" 'BEGIN {print (v < t) ? "pass" : "FAIL"}'; }

# --- idle 3-node cluster: disk writes and CPU per node
start_node 1 a
start_node 2 a "$(hf 1 token create --ttl 5m 2>/dev/null)"
start_node 3 b "$(hf 1 token create --ttl 5m 2>/dev/null)"
for _ in $(seq 200); do
  [ "$(hf 1 nodes --json | python3 -c 'import json,sys; print(sum(n["role"] in ("leader", "voter") for n in json.load(sys.stdin)["nodes"]))')" = 3 ] && break
  sleep 0.1
done
sleep 10 # joins, certificates and voter changes settle before the window opens
declare -A wb0 wc0 cpu0 log0 ap0
for n in 1 2 3; do
  p=$(pid_of "$n")
  wb0[$n]=$(io_field "$p" write_bytes); wc0[$n]=$(io_field "$p" wchar); cpu0[$n]=$(cpu_ticks "$p")
  log0[$n]=$(stat -c %s "$work/n$n.log"); ap0[$n]=$(applied "$n")
done
load0=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date +%s.%N)
sleep "$idle_s"
t1=$(date +%s.%N)
load1=$(cut -d' ' -f1-3 /proc/loadavg)
win=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
wb=(); wc=(); cpu=(); logs=(); entries=(); worst_wb=0; worst_cpu=0
for n in 1 2 3; do
  p=$(pid_of "$n")
  wb+=("$(awk -v a="${wb0[$n]}" -v b="$(io_field "$p" write_bytes)" -v s="$win" 'BEGIN {printf "%.3f", (b - a) / 1e6 / (s / 60)}')")
  wc+=("$(awk -v a="${wc0[$n]}" -v b="$(io_field "$p" wchar)" -v s="$win" 'BEGIN {printf "%.3f", (b - a) / 1e6 / (s / 60)}')")
  cpu+=("$(awk -v a="${cpu0[$n]}" -v b="$(cpu_ticks "$p")" -v s="$win" -v hz="$hz" 'BEGIN {printf "%.2f", (b - a) / hz / s * 100}')")
  logs+=("$(awk -v a="${log0[$n]}" -v b="$(stat -c %s "$work/n$n.log")" -v s="$win" 'BEGIN {printf "%.3f", (b - a) / 1e6 / (s / 60)}')")
  entries+=("$(( $(applied "$n") - ${ap0[$n]} ))")
done
for v in "${wb[@]}"; do worst_wb=$(awk -v a="$worst_wb" -v b="$v" 'BEGIN {print (b > a) ? b : a}'); done
for v in "${cpu[@]}"; do worst_cpu=$(awk -v a="$worst_cpu" -v b="$v" 'BEGIN {print (b > a) ? b : a}'); done
worst_wc=0; for v in "${wc[@]}"; do worst_wc=$(awk -v a="$worst_wc" -v b="$v" 'BEGIN {print (b > a) ? b : a}'); done
rss=(); for n in 1 2 3; do rss+=("$(awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/$(pid_of "$n")/status")"); done
# --- the same 3 nodes with 20 services x 2 (sleeping processes, as cluster.sh): what the
# agent's supervision, the usage sampler (every 10 s), the log time index (1 s), the link
# round-trip probes and the event journal cost per node, while /metrics is scraped every
# 15 s on every node (as Prometheus would) and /v1/usage is read every 15 s.
{
  echo "project: fbench"; echo "services:"
  for i in $(seq 1 20); do echo "  s$i:"; echo "    run: [sleep, '100000']"; echo "    replicas: 2"; done
} >"$work/twenty.yaml"
hf 1 deploy "$work/twenty.yaml" --timeout 120s >/dev/null
sleep 15 # placements, starts and the first samples settle
admin=$(cat "$work/n1/admin.token")
scrape_loop() {
  while :; do
    for n in 1 2 3; do
      curl -sf --max-time 5 --cacert "$work/n1/ca.pem" -H "Authorization: Bearer $admin" \
        "https://$(ip "$n"):7946/metrics" >/dev/null || true
    done
    curl -sf --max-time 5 --cacert "$work/n1/ca.pem" -H "Authorization: Bearer $admin" \
      "https://$(ip 1):7946/v1/usage" >/dev/null || true
    sleep 15
  done
}
scrape_loop &
scraper=$!
declare -A bw0 bcpu0
for n in 1 2 3; do p=$(pid_of "$n"); bw0[$n]=$(io_field "$p" write_bytes); bcpu0[$n]=$(cpu_ticks "$p"); done
b0=$(date +%s.%N)
sleep "$busy_s"
b1=$(date +%s.%N)
kill "$scraper" 2>/dev/null || true
bwin=$(awk -v a="$b0" -v b="$b1" 'BEGIN {printf "%.1f", b - a}')
bwb=(); bcpu=(); brss=(); worst_bcpu=0; worst_bwb=0
for n in 1 2 3; do
  p=$(pid_of "$n")
  bwb+=("$(awk -v a="${bw0[$n]}" -v b="$(io_field "$p" write_bytes)" -v s="$bwin" 'BEGIN {printf "%.3f", (b - a) / 1e6 / (s / 60)}')")
  bcpu+=("$(awk -v a="${bcpu0[$n]}" -v b="$(cpu_ticks "$p")" -v s="$bwin" -v hz="$hz" 'BEGIN {printf "%.2f", (b - a) / hz / s * 100}')")
  brss+=("$(awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/$p/status")")
done
for v in "${bcpu[@]}"; do worst_bcpu=$(awk -v a="$worst_bcpu" -v b="$v" 'BEGIN {print (b > a) ? b : a}'); done
for v in "${bwb[@]}"; do worst_bwb=$(awk -v a="$worst_bwb" -v b="$v" 'BEGIN {print (b > a) ? b : a}'); done
instances=$(hf 1 top --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["instances"]))')

# What one committed Raft entry costs on disk (what an idle cluster would pay per status
# update if those went through the log): 20 label changes, write_bytes per entry per node.
declare -A cw0; for n in 1 2 3; do cw0[$n]=$(io_field "$(pid_of "$n")" write_bytes); done
c0=$(applied 1)
for i in $(seq 1 20); do hf 1 node label n2 "footprint=$i" >/dev/null; done
sleep 2
entries_n=$(( $(applied 1) - c0 ))
per_entry=(); for n in 1 2 3; do
  per_entry+=("$(awk -v a="${cw0[$n]}" -v b="$(io_field "$(pid_of "$n")" write_bytes)" -v e="$entries_n" 'BEGIN {printf "%.1f", (b - a) / 1024 / e}')")
done
for n in 1 2 3; do kill -TERM "$(pid_of "$n")"; done
sleep 3; rm -rf "$work"/n*

# --- binary size
size_mb() { awk -v b="$(stat -c %s "$1")" 'BEGIN {printf "%.1f", b / 1048576}'; }
bin_mb=$(size_mb "$BIN/holdfast")

# --- static x86-64 build (glibc, crt-static; only the host toolchain is installed)
static_log="$work/static-build.log"
# --target keeps RUSTFLAGS off build scripts and proc macros (they cannot be static).
# `cargo rustc` adds -W linker-messages to the final link of holdfast only (the lint is
# allowed by default, which would hide glibc's static-linking warnings); dependencies
# are shared with the plain build of the demo app.
export RUSTFLAGS="-C target-feature=+crt-static"
cargo build --release --quiet --target x86_64-unknown-linux-gnu --bin holdfast-demo-web 2>"$static_log" \
  || { cat "$static_log"; exit 1; }
cargo rustc --release --quiet --target x86_64-unknown-linux-gnu -p holdfast --bin holdfast -- -W linker-messages 2>>"$static_log" \
  || { cat "$static_log"; exit 1; }
unset RUSTFLAGS
SBIN="$PWD/target/x86_64-unknown-linux-gnu/release"
# glibc marks the functions that need its shared libraries at run time even when linked
# statically (NSS modules loaded with dlopen) with .gnu.warning.<name> sections. GNU ld
# prints them as "Using 'getaddrinfo' in statically linked applications requires ...";
# rust-lld (the default linker here) keeps the sections but prints nothing, so read them
# from the binary. Since glibc 2.34 the `files` and `dns` NSS modules are built into libc
# (so into this binary); only other modules in nsswitch.conf (mdns, resolve, ldap, ...)
# would be dlopened, and need the same glibc version as the one linked.
static_warned=$(readelf -W -S "$SBIN/holdfast" | grep -o '\.gnu\.warning\.[A-Za-z0-9_]*' | sed 's/^\.gnu\.warning\.//' | sort -u | tr '\n' ' ')
static_nss=$(nm "$SBIN/holdfast" 2>/dev/null | awk '$3 ~ /^__nss_(files|dns)_functions$/ {sub(/^__nss_/, "", $3); sub(/_functions$/, "", $3); print $3}' | sort -u | tr '\n' ' ')
static_file=$(file -b "$SBIN/holdfast")
static_ldd=$(ldd "$SBIN/holdfast" 2>&1 || true)
is_static=no
if echo "$static_file" | grep -q 'static' && echo "$static_ldd" | grep -q 'not a dynamic executable\|statically linked'; then is_static=yes; fi
file -b "$SBIN/holdfast-demo-web" | grep -q static || is_static=no
static_mb=$(size_mb "$SBIN/holdfast")
sd="$work/static"; sip=127.0.79.9
PATH="$SBIN:$PATH" "$SBIN/holdfast" up --demo --data-dir "$sd" --listen "$sip:7946" --http "$sip:8080" --dns "$sip:8053" \
  --port-range 43900-43999 >"$work/static.log" 2>&1 &
demo_answer=""
for _ in $(seq 300); do
  demo_answer=$(curl -sf --max-time 2 -H 'Host: demo.localhost' "http://$sip:8080/" 2>/dev/null || true)
  [ -n "$demo_answer" ] && break; sleep 0.1
done
demo_ok=no; echo "$demo_answer" | grep -q '^hello from web-' && demo_ok=yes
demo_dns="(dig not installed)"
command -v dig >/dev/null && demo_dns=$(dig +short +time=2 +tries=1 @"$sip" -p 8053 web.demo.internal 2>/dev/null | head -1 || true)
[ -f "$sd/holdfast.pid" ] && kill -TERM "$(cat "$sd/holdfast.pid")" 2>/dev/null || true
sleep 3
[ "$demo_ok" = yes ] || { echo "the static build's demo did not answer; its log:"; cat "$work/static.log"; }

row() { printf '%-50s %-28s %-16s %s\n' "$@"; }
printf '\n'
row "measure" "holdfast" "target" "pass/fail"
row "idle disk write_bytes per node, 3 nodes (MB/min)" "${wb[*]}" "< 1 MB/min" "$(pass "$worst_wb" 1)"
row "idle wchar per node, sockets included (MB/min)" "${wc[*]}" "< 1 MB/min" "$(pass "$worst_wc" 1)"
row "  of which the node's log file (MB/min)" "${logs[*]}" "-" ""
row "  Raft entries applied in the window" "${entries[*]}" "-" ""
row "  disk writes per committed Raft entry (KiB)" "${per_entry[*]}" "-" ""
row "idle CPU per node (% of one core)" "${cpu[*]}" "< 1%" "$(pass "$worst_cpu" 1)"
row "RSS per node after the window (MB)" "${rss[*]}" "< 30 MB" "$(pass "$(printf '%s\n' "${rss[@]}" | sort -n | tail -1)" 30)"
row "20 services x 2, scraped: CPU per node (% of one core)" "${bcpu[*]}" "< 1%" "$(pass "$worst_bcpu" 1)"
row "20 services x 2, scraped: disk write_bytes (MB/min)" "${bwb[*]}" "< 1 MB/min" "$(pass "$worst_bwb" 1)"
row "20 services x 2, scraped: RSS per node (MB)" "${brss[*]}" "< 30 MB" "$(pass "$(printf '%s\n' "${brss[@]}" | sort -n | tail -1)" 30)"
row "release binary size, holdfast (MB)" "$bin_mb" "-" ""
row "static x86-64 build: static, demo answers" "$is_static, $demo_ok" "yes, yes" "$([ "$is_static$demo_ok" = yesyes ] && echo pass || echo FAIL)"
row "static x86-64 binary size (MB)" "$static_mb" "-" ""
echo "  busy window: ${bwin} s, ${instances} instances running (usage sampled, /metrics scraped every 15 s)"
echo "  idle window: ${win} s; machine load average $load0 before, $load1 after ($(nproc) cores; CPU time grows when they are shared)"
echo "  static: $static_file"
echo "  static demo: ${demo_answer:-no answer}; DNS web.demo.internal -> ${demo_dns:-no answer}"
echo "  glibc 'needs shared libraries at run time' warnings for: ${static_warned:-none}; built-in NSS modules: ${static_nss:-none}"
if grep -q 'statically linked applications requires' "$static_log"; then grep -o "Using '[a-z_0-9]*' in statically linked.*" "$static_log" | sort -u | sed 's/^/    linker: /'; fi

out="bench/results/footprint-$(date +%Y%m%d-%H%M%S).json"
j() { local IFS=,; echo "[$*]"; }
cat >"$out" <<JSON
{"machine": "$(uname -m) $(nproc) cores", "idle_window_s": $win, "loadavg_before": "$load0", "loadavg_after": "$load1", "idle_write_bytes_mb_per_min": $(j "${wb[@]}"), "idle_wchar_mb_per_min": $(j "${wc[@]}"), "idle_log_mb_per_min": $(j "${logs[@]}"), "idle_raft_entries_applied": $(j "${entries[@]}"), "write_kib_per_raft_entry": $(j "${per_entry[@]}"), "idle_cpu_pct_one_core": $(j "${cpu[@]}"), "rss_after_idle_mb": $(j "${rss[@]}"), "busy_window_s": $bwin, "busy_instances": $instances, "busy_cpu_pct_one_core": $(j "${bcpu[@]}"), "busy_write_bytes_mb_per_min": $(j "${bwb[@]}"), "busy_rss_mb": $(j "${brss[@]}"), "binary_bytes": $(stat -c %s "$BIN/holdfast"), "static_binary_bytes": $(stat -c %s "$SBIN/holdfast"), "static_linked": "$is_static", "static_demo_answers": "$demo_ok", "static_glibc_warned_functions": "${static_warned% }", "static_builtin_nss": "${static_nss% }"}
JSON
echo "results written to $out"
