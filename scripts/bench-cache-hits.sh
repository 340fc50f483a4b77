#!/usr/bin/env bash
# Signed-URL cache hits per second over HTTP against the same node's GET /healthz (the
# ceiling: routing, the observe middleware, hyper; nothing else) — issue #15's goal is
# hits/s >= 50% of /healthz/s. A hit skips the origin fetch and the resize but still
# pays what a served request pays: signature check (HMAC under each active secret, after
# one short hold of the node lock), quota admission (escrow), metering and the usage
# record made durable by group commit before the answer.
#
# One node (2 workers, the result cache on, a TTL longer than the whole run), one small
# photo on a loopback origin (python3 http.server, allowed by `fetch.private_origins`), a
# tenant with an allowed origin, a signing secret and a monthly request quota; one URL
# signed here (hex HMAC-SHA256 of `<options>/<source>` under the hex-decoded secret, see
# edge/src/http/signed.rs). The first request fills the cache (x-cache: miss), the second must
# say x-cache: hit, and the origin must have been asked once in all. Then closed-loop oha
# for $BENCH_SECONDS per run, /healthz and hits interleaved, at each concurrency of
# $BENCH_CONNECTIONS. At the end: the tenant's billed requests (usage API) against the
# hits the node answered and the 200s oha received, and what the node's own metrics say
# a hit waited for (group commit, lock holds).
#
#   scripts/bench-cache-hits.sh [PHOTO]     (default: the 256 KB photo)
#
# BENCH_SECONDS (15), BENCH_ROUNDS (3), BENCH_CONNECTIONS ("8 32"), BENCH_WORKERS (2),
# BENCH_PORT (18083), BENCH_ORIGIN_PORT (18093), BENCH_OPTIONS (w=200,h=200,format=jpeg,q=80),
# BENCH_BIN (a built binary instead of building this checkout's), BENCH_PERF (a file:
# one extra hits run at the first concurrency under `perf record` of the node, outside the
# figures; BENCH_PERF_ARGS, default `-F 499 --call-graph dwarf,16384`).
# cpu-us/ok: the node process's CPU time (user + system) per 200 during the run.
# Needs oha (cargo install oha --locked), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
photo=${1:-../shared/photos/aitzgorri-256k.jpg}
seconds=${BENCH_SECONDS:-15}
port=${BENCH_PORT:-18083}
origin_port=${BENCH_ORIGIN_PORT:-18093}
workers=${BENCH_WORKERS:-2}
rounds=${BENCH_ROUNDS:-3}
conns=${BENCH_CONNECTIONS:-8 32}
options=${BENCH_OPTIONS:-w=200,h=200,format=jpeg,q=80}
[ -f "$photo" ] || { echo "no photo at $photo" >&2; exit 1; }

echo "machine: $(nproc) cpus, $(uname -m), $(date -u '+%Y-%m-%d %H:%M UTC'); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

origin="http://127.0.0.1:$origin_port"
# Node configuration (TESSERA_*): the loopback origin may be fetched; results kept for
# longer than the whole benchmark (the default TTL, 300 s, would expire mid-run).
export TESSERA_FETCH__PRIVATE_ORIGINS="[\"$origin\"]"
export TESSERA_CACHE__TTL_S=86400
export TESSERA_CACHE__BYTES_MAX=$((64 << 20))
source scripts/bench-node.sh

# The origin: one photo, every request logged (to count fetches).
site=$(mktemp -d)
origin_pid=
trap 'kill $server 2>/dev/null || true; [ -z "$origin_pid" ] || kill $origin_pid 2>/dev/null || true; rm -rf "$out" "$site"' EXIT
cp "$photo" "$site/photo.jpg"
(cd "$site" && exec python3 -m http.server "$origin_port" --bind 127.0.0.1 >"$out/origin.log" 2>&1) &
origin_pid=$!
for _ in $(seq 50); do curl -fsS -o /dev/null "$origin/photo.jpg" 2>/dev/null && break; sleep 0.1; done
curl -fsS -o /dev/null "$origin/photo.jpg" || { cat "$out/origin.log" >&2; exit 1; }
origin_fetches() { grep -c '"GET /photo.jpg' "$out/origin.log" || true; }
probes=$(origin_fetches) # the readiness probes above

# The tenant: no API key (a signed URL is authenticated by its signature and billed to
# the tenant, key none), an allowed origin, a signing secret, a monthly request quota.
tenant=$(cli tenant create bench-signed | jget id)
cli origin allow "$tenant" "$origin" >/dev/null
secret=$(cli secret add "$tenant" | jget secret)
cli quota set "$tenant" --limit 1000000000000 >/dev/null

path=$(python3 - "$tenant" "$secret" "$options" "$origin/photo.jpg" <<'EOF'
import hmac, hashlib, sys
tenant, secret, options, source = sys.argv[1:]
message = f"{options}/{source}"
mac = hmac.new(bytes.fromhex(secret), message.encode(), hashlib.sha256).hexdigest()
print(f"/v1/img/{tenant}.{mac}/{message}")
EOF
)
url="http://127.0.0.1:$port$path"
echo "signed URL: $url"

xcache() { curl -sS -o "$out/body" -D - "$url" | tr -d '\r' | awk '/^HTTP\//{s=$2} tolower($1)=="x-cache:"{c=$2} END{print s, c}'; }
read -r s1 c1 < <(xcache)
read -r s2 c2 < <(xcache)
fetched=$(( $(origin_fetches) - probes ))
echo "fill: first $s1 x-cache=$c1; second $s2 x-cache=$c2; origin fetches $fetched; result $(wc -c <"$out/body") bytes"
[ "$s1 $c1 $s2 $c2 $fetched" = "200 miss 200 hit 1" ] || { echo "the cache did not fill as expected" >&2; tail "$out/server.log" >&2; exit 1; }

metrics() { curl -fsS "http://127.0.0.1:$port/metrics"; }
metric() { # NAME-REGEX → the sum of the matching samples
  metrics | awk -v re="$1" '$1 ~ re {s += $2} END {printf "%.6f\n", s}'
}
billed_requests() { # the tenant's requests this month, from the usage API
  cli usage "$tenant" | python3 -c '
import json,sys
d=json.load(sys.stdin)
t=d["totals"]
print(t["requests"] if isinstance(t, dict) else t)'
}

node_cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
tck=$(getconf CLK_TCK)
run() { # NAME URL CONNECTIONS → ok/s p50ms p99ms ok node-cpu-us-per-ok codes
  local name=$1 target=$2 c=$3 cpu0 cpu1
  cpu0=$(node_cpu_ticks)
  oha --no-tui --output-format json -c "$c" -z "${seconds}s" "$target" >"$out/$name.json" 2>/dev/null
  cpu1=$(node_cpu_ticks)
  python3 -c '
import json,sys
d=json.load(open(sys.argv[1]))
cpu_s=(int(sys.argv[3])-int(sys.argv[2]))/int(sys.argv[4])
codes=d["statusCodeDistribution"]
ok=codes.get("200",0)
print(round(ok/d["summary"]["total"],1), round(d["latencyPercentiles"]["p50"]*1000,2),
      round(d["latencyPercentiles"]["p99"]*1000,2), ok, round(cpu_s/max(ok,1)*1e6,1),
      json.dumps(codes, separators=(",",":")) + (" errors=" + json.dumps(d["errorDistribution"], separators=(",",":")) if d.get("errorDistribution") else ""))' \
    "$out/$name.json" "$cpu0" "$cpu1" "$tck"
}

billed0=$(billed_requests)
answered0=$(metric '^tessera_http_requests_total\\{route="/v1/img",status="200"\\}')
fetched0=$(origin_fetches)
commit_sum0=$(metric '^tessera_store_commit_wait_seconds_sum')
commit_n0=$(metric '^tessera_store_commit_wait_seconds_count')
lock_sum0=$(metric '^tessera_node_lock_hold_seconds_sum')
lock_n0=$(metric '^tessera_node_lock_hold_seconds_count')
served=0
summary=$(mktemp -p "$out")

printf '%-5s %-4s %-8s %10s %8s %8s %9s  %s\n' round -c route ok/s p50ms p99ms cpu-us/ok codes
for r in $(seq "$rounds"); do
  for c in $conns; do
    read -r h h50 h99 _ hcpu hcodes < <(run healthz "http://127.0.0.1:$port/healthz" "$c")
    printf '%-5s %-4s %-8s %10s %8s %8s %9s  %s\n' "$r" "$c" healthz "$h" "$h50" "$h99" "$hcpu" "$hcodes"
    read -r k k50 k99 kok kcpu kcodes < <(run hits "$url" "$c")
    printf '%-5s %-4s %-8s %10s %8s %8s %9s  %s\n' "$r" "$c" hits "$k" "$k50" "$k99" "$kcpu" "$kcodes"
    served=$((served + kok))
    ratio=$(python3 -c "print(f'{$k/$h:.3f}')")
    printf '      hits/healthz at -c %s: %s\n' "$c" "$ratio"
    echo "$c $h $k" >>"$summary"
  done
done
if [ -n "${BENCH_PERF:-}" ]; then
  # One more hits run at the first concurrency, under perf (not in the figures above:
  # sampling with DWARF stacks slows the node).
  c=${conns%% *}
  perf record ${BENCH_PERF_ARGS:--F 499 --call-graph dwarf,16384} -o "$BENCH_PERF" -p "$server" -- sleep "$seconds" >"$out/perf.log" 2>&1 &
  perf_pid=$!
  read -r k k50 k99 kok kcpu kcodes < <(run hits "$url" "$c")
  served=$((served + kok))
  wait "$perf_pid" && echo "perf: hits at -c $c under perf record: $k ok/s; profile in $BENCH_PERF" \
    || echo "perf record failed: $(tail -1 "$out/perf.log")" >&2
fi

# Let the last usage records and the ledger settle (everything billed is durable before
# its answer; the usage read merges the ledger).
sleep 1
billed=$(( $(billed_requests) - billed0 ))
answered=$(python3 -c "print(int($(metric '^tessera_http_requests_total\\{route="/v1/img",status="200"\\}') - $answered0))")
refetched=$(( $(origin_fetches) - fetched0 ))
echo
echo "summed over the rounds (ok/s-runs):"
python3 - "$summary" <<'EOF'
import sys, collections
h, k = collections.defaultdict(float), collections.defaultdict(float)
for line in open(sys.argv[1]):
    c, hz, hit = line.split()
    h[c] += float(hz); k[c] += float(hit)
for c in h:
    print(f"  -c {c}: healthz {h[c]:.0f}, hits {k[c]:.0f}, hits/healthz {k[c]/h[c]:.3f}  (goal >= 0.5: {'met' if k[c]/h[c] >= 0.5 else 'NOT met'})")
EOF
echo "billed vs served (hit runs only):"
echo "  200s received by oha: $served; hits the node answered 200: $answered; requests billed to the tenant (usage API): $billed; origin fetches during the runs: $refetched"
echo "  (billed - received = $((billed - served)): requests in flight when oha stopped a run are answered and billed by the node but not counted by oha)"
python3 - "$commit_sum0" "$(metric '^tessera_store_commit_wait_seconds_sum')" "$commit_n0" "$(metric '^tessera_store_commit_wait_seconds_count')" \
  "$lock_sum0" "$(metric '^tessera_node_lock_hold_seconds_sum')" "$lock_n0" "$(metric '^tessera_node_lock_hold_seconds_count')" "$answered" <<'EOF'
import sys
cs0, cs1, cn0, cn1, ls0, ls1, ln0, ln1, hits = map(float, sys.argv[1:])
cn, ln = cn1 - cn0, ln1 - ln0
print("node metrics over the runs:")
if cn:
    print(f"  group-commit wait: {cn:.0f} waits, mean {(cs1-cs0)/cn*1e6:.0f} us")
if ln:
    print(f"  node lock holds: {ln:.0f} ({ln/max(hits,1):.1f} per hit), mean {(ls1-ls0)/ln*1e6:.1f} us, {(ls1-ls0)/max(hits,1)*1e6:.1f} us per hit")
EOF
metrics | grep -E '^tessera_(quota_decisions_total|billed_requests_total|requests_shed_total)' || true
kill -TERM $server; wait $server || true
