#!/usr/bin/env bash
# What authentication + quota + metering + durability (group commit) cost end to end:
# the same node, the same photo, closed-loop load with oha, side by side in one run:
#   open     — POST /v1/resize without a key (auth.anonymous_resize, nothing billed);
#   billed   — with a tenant key: key check, rate limit, usage durable before the answer;
#   quota    — billed, for a tenant with a monthly request quota (escrow admission).
# Runs alternate (open, billed, quota, open, billed, quota) so drift hits all alike.
# Also reports the share of quota decisions taken from local rights (node metrics).
#
#   scripts/bench-billing.sh [PHOTO]      (default: the 256 KB photo)
#
# Needs oha (cargo install oha --locked), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
photo=${1:-../shared/photos/aitzgorri-256k.jpg}
seconds=${BENCH_SECONDS:-15}
port=${BENCH_PORT:-18081}
workers=${BENCH_WORKERS:-2}
rounds=${BENCH_ROUNDS:-2}
export TESSERA_AUTH__ANONYMOUS_RESIZE=true
source scripts/bench-node.sh
tenant=$(cli tenant create bench | jget id)
key=$(cli key create "$tenant" | jget key)
qtenant=$(cli tenant create bench-quota | jget id)
qkey=$(cli key create "$qtenant" | jget key)
cli quota set "$qtenant" --limit 1000000000000 >/dev/null

url="http://127.0.0.1:$port/v1/resize?w=400&h=400&format=jpeg&q=80"
run() { # NAME [HEADER...] → conv/s on stdout
  local name=$1; shift
  oha --no-tui --output-format json -m POST -D "$photo" -T application/octet-stream \
    -c 8 -z "${seconds}s" "$@" "$url" >"$out/$name.json" 2>/dev/null
  python3 -c '
import json,sys
d=json.load(open(sys.argv[1]))
ok=d["statusCodeDistribution"].get("200",0)
print(round(ok/d["summary"]["total"],1), round(d["latencyPercentiles"]["p50"]*1000,1), round(d["latencyPercentiles"]["p99"]*1000,1), d["statusCodeDistribution"])' "$out/$name.json"
}

printf '%-6s %-8s %10s %8s %8s  %s\n' round route conv/s p50ms p99ms codes
for r in $(seq "$rounds"); do
  read -r o50 o50a o50b ocodes < <(run open)
  printf '%-6s %-8s %10s %8s %8s  %s\n' "$r" open "$o50" "$o50a" "$o50b" "$ocodes"
  read -r b b50 b99 bcodes < <(run billed -H "Authorization: Bearer $key")
  printf '%-6s %-8s %10s %8s %8s  %s\n' "$r" billed "$b" "$b50" "$b99" "$bcodes"
  read -r q q50 q99 qcodes < <(run quota -H "Authorization: Bearer $qkey")
  printf '%-6s %-8s %10s %8s %8s  %s\n' "$r" quota "$q" "$q50" "$q99" "$qcodes"
  python3 -c "print(f'        billed/open {$b/$o50:.3f}   quota/open {$q/$o50:.3f}')"
done
echo "quota decisions and commits (node metrics):"
curl -fsS "http://127.0.0.1:$port/metrics" |
  grep -E '^tessera_(quota_decisions_total|billed_requests_total|store_commit_wait_seconds_(sum|count))' || true
kill -TERM $server; wait $server || true
