#!/usr/bin/env bash
# Secret rotation to every consumer, one command:  bash bench/secrets.sh
# Prints a table and writes bench/results/secrets-<date>.json.
#   - holdfast: 3 nodes on loopback (127.0.80.21-23; sites a, b, c); 3 services x 3
#     replicas of the demo web app (holdfast-demo-web), each greeting with the secret
#     `greeting` (an env value), health-checked every 300 ms, routed through the ingress.
#   - A client (python3, one keep-alive connection per service) sends requests round-robin
#     to the three services through node 1's ingress the whole time and counts the failed
#     ones (target 0) and the answers by version.
#   - Each round (ROUNDS, default 3) sets a new version with `holdfast secret set` and
#     measures the time until every one of the 9 instances runs it (status: every
#     instance on its service's new generation, ready, no roll in progress) and until the
#     ingress answers only with the new greeting.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
for tool in python3 curl; do
  command -v "$tool" >/dev/null || { echo "bench/secrets.sh needs $tool"; exit 1; }
done
cargo build --release --quiet --bins
BIN="$PWD/target/release"
export PATH="$BIN:$PATH"
work=$(mktemp -d "${TMPDIR:-/tmp}/holdfast-secretsbench.XXXXXX")
client=""

hf_pid() {
  local p; p=$(cat "$1/holdfast.pid" 2>/dev/null) || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "--data-dir $1 " || return 1
  echo "$p"
}
cleanup() {
  [ -n "$client" ] && kill "$client" 2>/dev/null || true
  local d p pids=()
  for d in "$work"/n*; do p=$(hf_pid "$d") && { kill -TERM "$p" 2>/dev/null || true; pids+=("$p"); }; done
  for _ in $(seq 100); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.2
  done
  for d in "$work"/n*; do p=$(hf_pid "$d") && { kill -9 "$p" 2>/dev/null || true; }; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip() { echo "127.0.80.2$1"; }
start_node() { # start_node N SITE [TOKEN]
  local n=$1 site=$2 token=${3:-}
  local cmd=(up); [ -n "$token" ] && cmd=(join "$token")
  holdfast "${cmd[@]}" --data-dir "$work/n$n" --listen "$(ip "$n"):7946" --name "n$n" --site "$site" \
    --port-range "$((46000 + n * 100))-$((46000 + n * 100 + 99))" --http "$(ip "$n"):8080" --dns off --log-level warn >"$work/n$n.log" 2>&1 &
  disown
  for _ in $(seq 100); do holdfast --data-dir "$work/n$n" status >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "node $n did not start:"; cat "$work/n$n.log"; exit 1
}
hf() { holdfast --data-dir "$work/n1" "$@"; }

echo "starting 3 nodes on $(ip 1)-$(ip 3)..."
start_node 1 a
start_node 2 b "$(hf token create 2>/dev/null)"
start_node 3 c "$(hf token create 2>/dev/null)"
printf 'v0' >"$work/value"
hf secret set bench/greeting --from-file "$work/value" >/dev/null
{
  printf 'project: bench\nsecrets:\n  greeting: {}\nservices:\n'
  for s in a b c; do
    printf '  %s:\n    run: ["holdfast-demo-web"]\n    replicas: 3\n    ports: {http: 8080}\n' "$s"
    printf '    health: {http: /healthz, interval: 300ms, timeout: 300ms}\n    env: { GREETING: { secret: greeting } }\n'
  done
  printf 'routes:\n'
  for s in a b c; do printf '  - {host: %s.bench.localhost, service: %s}\n' "$s" "$s"; done
} >"$work/bench.yaml"
hf deploy "$work/bench.yaml" --timeout 120s >"$work/deploy.log"

# The client: round-robin over the three hosts through node 1's ingress; every second it
# rewrites $work/counts with "ok failed <version>:<count>...".
python3 - "$(ip 1)" "$work/counts" <<'PY' &
import http.client, sys, time, collections
host, out = sys.argv[1], sys.argv[2]
conns = {}
ok = failed = 0
seen = collections.Counter()
last = time.time()
while True:
    for s in "abc":
        try:
            c = conns.get(s) or http.client.HTTPConnection(host, 8080, timeout=5)
            conns[s] = c
            c.request("GET", "/", headers={"Host": f"{s}.bench.localhost"})
            r = c.getresponse(); body = r.read().decode(errors="replace")
            if r.status == 200:
                ok += 1; seen[body.split(" ", 1)[0]] += 1
            else:
                failed += 1
        except Exception:
            failed += 1; conns.pop(s, None)
    if time.time() - last > 0.2:
        last = time.time()
        with open(out + ".tmp", "w") as f:
            f.write(f"{ok} {failed} " + " ".join(f"{k}:{v}" for k, v in sorted(seen.items())) + "\n")
        import os; os.replace(out + ".tmp", out)
PY
client=$!
for _ in $(seq 100); do [ -s "$work/counts" ] && break; sleep 0.1; done

all_on_new() { # every instance of a, b, c on its service's generation, ready, no roll
  hf status --json | python3 -c '
import json,sys
st=json.load(sys.stdin); ok=True; n=0
for s in st["services"]:
    if s["name"] not in ("a","b","c"): continue
    ok &= s.get("rollout") is None and s["ready"]==3
    for i in s["instances"]:
        n+=1; ok &= i["ready"] and i["generation"]>=s["generation"] and i["state"]!="outdated"
sys.exit(0 if ok and n==9 else 1)'
}
ingress_only() { # ingress_only VERSION: 30 answers in a row, every one with VERSION
  local s
  for _ in $(seq 10); do
    for s in a b c; do
      curl -s --max-time 2 -H "Host: $s.bench.localhost" "http://$(ip 1):8080/" | grep -q "^$1 " || return 1
    done
  done
}
now() { date +%s.%N; }

results=()
for r in $(seq "$rounds"); do
  before=$(cat "$work/counts")
  printf 'v%s' "$r" >"$work/value"
  t0=$(now)
  hf secret set bench/greeting --from-file "$work/value" >/dev/null
  # The roll has begun once a service shows it.
  for _ in $(seq 100); do all_on_new || break; sleep 0.05; done
  for _ in $(seq 1200); do all_on_new && break; sleep 0.1; done
  t1=$(now)
  for _ in $(seq 100); do ingress_only "v$r" && break; sleep 0.1; done
  t2=$(now)
  after=$(cat "$work/counts")
  read -r ok0 f0 _ <<<"$before"; read -r ok1 f1 _ <<<"$after"
  all=$(python3 -c "print(f'{$t1-$t0:.2f}')"); ing=$(python3 -c "print(f'{$t2-$t0:.2f}')")
  results+=("$r $all $ing $((ok1 - ok0)) $((f1 - f0))")
  echo "round $r: all 9 instances on v$r after ${all}s, ingress only v$r after ${ing}s; $((ok1 - ok0)) requests, $((f1 - f0)) failed"
done

echo
printf '%-8s %-34s %-30s %-10s %s\n' ROUND "ALL 9 INSTANCES ON THE NEW (s)" "INGRESS ONLY NEW (s)" REQUESTS FAILED
for line in "${results[@]}"; do
  read -r r a i n f <<<"$line"
  printf '%-8s %-34s %-30s %-10s %s\n' "$r" "$a" "$i" "$n" "$f"
done
res="bench/results/secrets-$(date +%Y%m%d-%H%M%S).json"
printf '%s\n' "${results[@]}" | python3 -c '
import json,sys
rows=[dict(zip(["round","all_instances_s","ingress_only_new_s","requests","failed"],l.split())) for l in sys.stdin if l.strip()]
json.dump({"bench":"secret rotation, 3 services x 3 replicas on 3 nodes","rounds":rows}, open(sys.argv[1],"w"), indent=1)' "$res"
echo "results: $res"
