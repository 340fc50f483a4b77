#!/usr/bin/env bash
# Fair share between tenants, over HTTP, with the release binary: tenant B's latency alone
# and while tenant A floods the node at 3x its capacity (open loop), side by side in one
# run. The figures behind docs/BENCHMARKS.md's "A flooding tenant and a light one".
#   capacity — closed-loop load of A alone (oha -c 8) → conv/s;
#   B alone  — B at 10% of capacity, open loop;
#   B + A    — the same B while A sends 3x capacity, open loop, on 256 connections.
# A and B send the same photo and task. Loopback only; bounded in time.
#
#   scripts/bench-fair.sh [PHOTO]      (default: the 256 KB photo)
#   BENCH_EXPRESS_MS=0 scripts/bench-fair.sh    (the same without the express lane)
#
# Needs oha (cargo install oha --locked), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
photo=${1:-../shared/photos/aitzgorri-256k.jpg}
seconds=${BENCH_SECONDS:-15}
port=${BENCH_PORT:-18082}
workers=${BENCH_WORKERS:-2}
# Both load generators connect from 127.0.0.1: the per-client connection cap would count
# them as one client (B's connections would go to the overflow lane), so it is off here.
export TESSERA_HTTP__CONNECTIONS_PER_CLIENT_MAX=0
export TESSERA_POOL__EXPRESS_COST_MAX_MS="${BENCH_EXPRESS_MS:-50}"
source scripts/bench-node.sh
key_a=$(cli key create "$(cli tenant create flood | jget id)" | jget key)
key_b=$(cli key create "$(cli tenant create light | jget id)" | jget key)

url="http://127.0.0.1:$port/v1/resize?w=400&h=400&format=jpeg&q=80"
oha_run() { # NAME KEY oha-args... → JSON in $out/NAME.json
  local name=$1 key=$2; shift 2
  oha --no-tui --output-format json --stats-success-breakdown -m POST -D "$photo" \
    -T application/octet-stream -H "Authorization: Bearer $key" "$@" "$url" \
    >"$out/$name.json" 2>/dev/null
}
summary() { # NAME → "served% p50ms p99ms codes" of the 200s
  python3 -c '
import json,sys
d=json.load(open(sys.argv[1])); codes=d["statusCodeDistribution"]
ok=codes.get("200",0); total=max(1,sum(codes.values()))
p=d.get("latencyPercentilesSuccessful") or d["latencyPercentiles"]
ms=lambda v: "-" if v is None else "{:.1f}".format(v*1000)
print("{:.1f}% {} {} {}".format(100*ok/total, ms(p["p50"]), ms(p["p99"]), json.dumps(codes, separators=(",",":"))))' "$out/$1.json"
}

oha_run capacity "$key_a" -c 8 -z "${seconds}s"
cap=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["statusCodeDistribution"].get("200",0)/d["summary"]["total"])' "$out/capacity.json")
rate_b=$(python3 -c "print(max(1, round($cap*0.1)))")
rate_a=$(python3 -c "print(round($cap*3))")
printf 'capacity %.1f conv/s; B at %s req/s, A at %s req/s\n' "$cap" "$rate_b" "$rate_a"

oha_run alone "$key_b" -c 4 -q "$rate_b" --latency-correction -z "${seconds}s"
oha_run flood "$key_a" -c 256 -q "$rate_a" --latency-correction -z "$((seconds + 4))s" &
flood=$!
sleep 2
oha_run shared "$key_b" -c 4 -q "$rate_b" --latency-correction -z "${seconds}s"
wait $flood

printf '%-16s %8s %8s %8s  %s\n' run served p50ms p99ms codes
printf '%-16s %8s %8s %8s  %s\n' "B alone" $(summary alone)
printf '%-16s %8s %8s %8s  %s\n' "B during flood" $(summary shared)
printf '%-16s %8s %8s %8s  %s\n' "A flood (3x)" $(summary flood)
kill -TERM $server; wait $server || true
