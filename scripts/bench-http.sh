#!/usr/bin/env bash
# HTTP load test of `tessera serve` on this machine, side by side with the library's own
# throughput, for the figures in docs/BENCHMARKS.md. Loopback only; bounded in time.
#
#   scripts/bench-http.sh [PHOTO...]        (default: the 256 KB and 1 MB photos)
#
# BENCH_QUERY is the resize query (default w=400&h=400&format=jpeg&q=80), the same for
# both sides; BENCH_AVIF_SPEED sets the node's [output] avif_speed (and the library's).
# BENCH_SECONDS (default 15), BENCH_WORKERS (default 2), BENCH_PORT (default 18080).
#
# For each photo:
#   1. library ceiling: the resize pipeline on as many threads as the node has workers;
#   2. capacity: closed-loop load (oha -c 8) → conversions/s over HTTP; ratio to (1);
#   3. 70% of capacity, open loop (oha -q, latency-corrected): p50 / p99 latency;
#   4. 3x capacity, open loop: goodput (200s per second), latency of the 503 refusals,
#      and the server's peak resident memory (VmHWM).
# Needs oha (cargo install oha --locked) and python3; the load generator shares the two
# cores with the server, which the figures include.
set -euo pipefail
cd "$(dirname "$0")/.."
photos_dir=../shared/photos
photos=("$@")
[ ${#photos[@]} -gt 0 ] || photos=("$photos_dir/aitzgorri-256k.jpg" "$photos_dir/aitzgorri-1m.jpg")
seconds=${BENCH_SECONDS:-15}
port=${BENCH_PORT:-18080}
workers=${BENCH_WORKERS:-2}
query=${BENCH_QUERY:-w=400&h=400&format=jpeg&q=80}
speed_args=() speed_env=()
if [ -n "${BENCH_AVIF_SPEED:-}" ]; then
  speed_args=(--avif-speed "$BENCH_AVIF_SPEED")
  speed_env=("TESSERA_OUTPUT__AVIF_SPEED=$BENCH_AVIF_SPEED")
fi
command -v oha >/dev/null || { echo "oha not found: cargo install oha --locked" >&2; exit 1; }

cargo build --release --quiet --bin tessera
cargo bench --quiet -p tessera-edge --bench library_throughput --no-run
lib_bench=$(ls -t target/release/deps/library_throughput-* | grep -v '\.d$' | head -1)
out=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$out"' EXIT

oha_json() { # args... → JSON on stdout
  oha --no-tui --output-format json --stats-success-breakdown "$@" 2>/dev/null
}
field() { # FILE EXPR → the Python expression EXPR evaluated with d = the JSON in FILE
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

echo "query: $query${BENCH_AVIF_SPEED:+, avif_speed $BENCH_AVIF_SPEED}; $workers workers, ${seconds}s per step"
printf '%-22s %10s %10s %6s %9s %9s %10s %10s %10s %10s %9s\n' photo lib_conv/s http_conv/s ratio p50_70%ms p99_70%ms goodput3x goodput% rej_p50ms rej_p99ms peak_MiB
for photo in "${photos[@]}"; do
  name=$(basename "$photo")
  lib=$("$lib_bench" --query "$query" "${speed_args[@]}" "$workers" "$seconds" "$photo" | awk 'NR==2 {print $3}')

  # The open route (no key, nothing billed): the front door alone. The cost of keys,
  # quota and durable metering is measured by scripts/bench-billing.sh.
  env "${speed_env[@]}" TESSERA_LOG=warn TESSERA_AUTH__ANONYMOUS_RESIZE=true target/release/tessera serve --listen "127.0.0.1:$port" --workers "$workers" \
    --data-dir "$out/data" >"$out/server.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  url="http://127.0.0.1:$port/v1/resize?$query"
  common=(-m POST -D "$photo" -T application/octet-stream)

  oha_json "${common[@]}" -c 8 -z "${seconds}s" "$url" >"$out/cap.json"
  cap=$(field "$out/cap.json" "d['statusCodeDistribution'].get('200',0)/d['summary']['total']")

  rate70=$(python3 -c "print(max(1, round($cap*0.7)))")
  oha_json "${common[@]}" -c 64 -q "$rate70" --latency-correction -z "${seconds}s" "$url" >"$out/70.json"
  p50=$(field "$out/70.json" "round(d['latencyPercentiles']['p50']*1000,1)")
  p99=$(field "$out/70.json" "round(d['latencyPercentiles']['p99']*1000,1)")

  rate3x=$(python3 -c "print(round($cap*3))")
  oha_json "${common[@]}" -c 256 -q "$rate3x" --latency-correction -z "${seconds}s" "$url" >"$out/3x.json"
  good=$(field "$out/3x.json" "round(d['statusCodeDistribution'].get('200',0)/d['summary']['total'],1)")
  rej50=$(field "$out/3x.json" "round((d['latencyPercentilesNotSuccessful']['p50'] or 0)*1000,2)")
  rej99=$(field "$out/3x.json" "round((d['latencyPercentilesNotSuccessful']['p99'] or 0)*1000,2)")
  peak=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$server/status)
  codes=$(field "$out/3x.json" "d['statusCodeDistribution']")
  kill -TERM $server; wait $server || true

  printf '%-22s %10.1f %10.1f %6.2f %9s %9s %10s %9.0f%% %10s %10s %9s\n' "$name" "$lib" "$cap" \
    "$(python3 -c "print($cap/$lib)")" "$p50" "$p99" "$good" "$(python3 -c "print(100*$good/$cap)")" "$rej50" "$rej99" "$peak"
  echo "  3x status codes: $codes" >&2
done
