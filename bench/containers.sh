#!/usr/bin/env bash
# Containers, one command:  bash bench/containers.sh
# Prints a table and writes bench/results/containers-<date>.json.
#   - A registry (Debian's docker-registry) on 127.0.0.1:5077 and an image built here from
#     a busybox-static rootfs (busybox httpd on $PORT), pushed with podman.
#   - Start-to-ready, ROUNDS times (default 5), the image already in each store:
#       podman alone: `podman run -d` (runc, host network) until HTTP answers;
#       holdfast: `holdfast deploy` of one replica (health-checked every 100 ms) until it
#       returns, i.e. the instance is ready (plan, Raft commit, agent, podman run, check).
#     The ratio holdfast / podman is printed.
#   - The daemon's memory with 20 containers running (20 services x 1, health-checked
#     every 2 s, the default), beside conmon's.
# Needs root, podman, runc, docker-registry and busybox-static (apt-get install -y podman
# runc docker-registry busybox-static).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
for tool in podman runc docker-registry curl python3; do
  command -v "$tool" >/dev/null || { echo "bench/containers.sh needs $tool"; exit 1; }
done
[ -x /bin/busybox ] || { echo "bench/containers.sh needs busybox-static"; exit 1; }
cargo build --release --quiet --bins
BIN="$PWD/target/release"
export PATH="$BIN:$PATH"
work=$(mktemp -d "${TMPDIR:-/tmp}/holdfast-ocibench.XXXXXX")
reg_pid=""
P=(podman --root "$work/podman/store" --runroot "$work/podman/run" --cgroup-manager cgroupfs --events-backend none --runtime runc)
cleanup() {
  [ -f "$work/n1/holdfast.pid" ] && kill -TERM "$(cat "$work/n1/holdfast.pid")" 2>/dev/null || true
  sleep 3
  "${P[@]}" rm -a -f -t 0 >/dev/null 2>&1 || true
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b - a}'; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# --- registry and image
mkdir -p "$work/reg" "$work/rootfs/bin"
printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:5077\n' "$work/reg" >"$work/reg.yml"
docker-registry serve "$work/reg.yml" >"$work/reg.log" 2>&1 &
reg_pid=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:5077/v2/ >/dev/null && break; sleep 0.1; done
cp /bin/busybox "$work/rootfs/bin/"
for a in sh httpd mkdir echo; do ln -sf busybox "$work/rootfs/bin/$a"; done
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
image=127.0.0.1:5077/bench/web:1
"${P[@]}" import --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh","-c","mkdir -p /tmp/w && echo ok > /tmp/w/index.html && exec httpd -f -p ${PORT:-8080} -h /tmp/w"]' "$work/rootfs.tar" "$image" >/dev/null
"${P[@]}" push --tls-verify=false "$image" >/dev/null 2>&1

# --- podman alone (the image is in its store already)
alone=()
for r in $(seq "$rounds"); do
  port=$((18600 + r))
  t0=$(now)
  "${P[@]}" run -d --rm --name "alone-$r" --network host --init --ulimit "nofile=$(ulimit -Sn):$(ulimit -Hn)" --ulimit nproc=32768:32768 -e PORT="$port" --log-driver none "$image" >/dev/null
  until curl -sf --max-time 1 "http://127.0.0.1:$port/" >/dev/null; do sleep 0.005; done
  alone+=("$(secs "$t0" "$(now)")")
  "${P[@]}" rm -f -t 0 "alone-$r" >/dev/null
done

# --- holdfast: one node
holdfast up --data-dir "$work/n1" --listen 127.0.81.1:7946 --http 127.0.81.1:8080 --dns off --port-range 18700-18999 >"$work/n1.log" 2>&1 &
for _ in $(seq 100); do holdfast --data-dir "$work/n1" status >/dev/null 2>&1 && break; sleep 0.1; done
spec() { # spec INTERVAL NAME...: services of the image, health-checked every INTERVAL
  local interval=$1; shift
  echo "project: bench"; echo "services:"
  for s in "$@"; do
    printf '  %s:\n    image: %s\n    ports: {http: 8080}\n    health: {http: /, interval: %s, timeout: 100ms}\n' "$s" "$image" "$interval"
  done
}
# Warm: the node's store pulls the image once.
spec 100ms warm >"$work/warm.yaml"
holdfast --data-dir "$work/n1" deploy "$work/warm.yaml" --timeout 120s >/dev/null 2>&1
through=()
for r in $(seq "$rounds"); do
  spec 100ms "r$r" >"$work/r.yaml"
  t0=$(now)
  holdfast --data-dir "$work/n1" deploy "$work/r.yaml" --timeout 60s >/dev/null 2>&1
  through+=("$(secs "$t0" "$(now)")")
done

# --- the daemon's memory with 20 containers
names=(); for i in $(seq 1 20); do names+=("s$i"); done
spec 2s "${names[@]}" >"$work/twenty.yaml"
holdfast --data-dir "$work/n1" deploy "$work/twenty.yaml" --timeout 180s >/dev/null 2>&1
sleep 5
hpid=$(cat "$work/n1/holdfast.pid")
rss_mb=$(awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/$hpid/status")
# Of which anonymous (heap, stacks): the rest is the binary's code and data pages mapped
# from the file (shared, reclaimable).
anon_mb=$(awk '/^Anonymous:/ {printf "%.1f", $2/1024}' "/proc/$hpid/smaps_rollup")
conmon_kb=0; conmons=0
for p in $(pgrep -x conmon || true); do
  if tr '\0' ' ' <"/proc/$p/cmdline" | grep -qF "$work/n1"; then
    conmons=$((conmons + 1)); conmon_kb=$((conmon_kb + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status")))
  fi
done
running=$(holdfast --data-dir "$work/n1" status --json | python3 -c 'import json,sys; print(sum(s["ready"] for s in json.load(sys.stdin)["services"]))')

m_alone=$(median "${alone[@]}"); m_through=$(median "${through[@]}")
ratio=$(awk -v a="$m_through" -v b="$m_alone" 'BEGIN {printf "%.2f", a / b}')
row() { printf '%-52s %-40s %s\n' "$@"; }
printf '\n'
row "measure" "result" "note"
row "start to ready, podman run alone (s)" "${alone[*]}" "median $m_alone"
row "start to ready, holdfast deploy (s)" "${through[*]}" "median $m_through (plan, commit, agent, podman, health check)"
row "holdfast / podman" "${ratio}x" ""
row "holdfast RSS with 20 containers (MB)" "$rss_mb" "$running ready; < 30 MB"
row "  of which anonymous: heap and stacks (MB)" "$anon_mb" "the rest: the binary's pages, file-backed"
row "conmon RSS, summed ($conmons processes, MB)" "$(awk -v k="$conmon_kb" 'BEGIN {printf "%.1f", k/1024}')" "podman's per-container monitor"
out="bench/results/containers-$(date +%Y%m%d-%H%M%S).json"
j() { local IFS=,; echo "[$*]"; }
cat >"$out" <<JSON
{"machine": "$(uname -m) $(nproc) cores", "rounds": $rounds, "podman_alone_s": $(j "${alone[@]}"), "holdfast_deploy_s": $(j "${through[@]}"), "ratio_median": $ratio, "holdfast_rss_mb_20_containers": $rss_mb, "holdfast_anon_mb_20_containers": $anon_mb, "containers_ready": $running, "conmon_rss_kb_sum": $conmon_kb, "conmon_processes": $conmons}
JSON
echo "results written to $out"
