#!/usr/bin/env bash
# The fault soak: seeded nemesis schedules against a cluster of real nodes, for as long as
# asked, one summary line a schedule (seed, faults, ok/fail/unknown, violations,
# convergence), then the totals over every schedule. Network namespaces as root,
# userspace proxies otherwise.
#
#   scripts/soak.sh [minutes]            # default 60
#   FAULT_NODES=5 FAULT_SECONDS=30 FAULT_BACKEND=netns|proxy scripts/soak.sh 120
#   FAULT_SEED=<n> scripts/soak.sh       # replay one schedule
#   scripts/soak.sh --summary <log>      # the totals of an earlier soak's log
#
# Summary lines go to stdout and to target/fault-runs/soak-<start>.log; a failing schedule
# leaves its history, schedule, report and node logs in target/fault-runs/<seed>-<backend>/.
set -euo pipefail
cd "$(dirname "$0")/.."

# Totals over the SOAK lines of a log: runs, violations by kind, convergence percentiles.
summary() {
  grep '^SOAK seed=' "$1" | awk '
    {
      runs++
      for (i = 1; i <= NF; i++) {
        split($i, kv, "=")
        if (kv[1] == "convergence_ms") {
          if (kv[2] == "none") never++; else conv[++n] = kv[2] + 0
        }
        if (kv[1] == "violations" && kv[2] + 0 > 0) failing++
      }
      kinds = $0; sub(/.*\[/, "", kinds); sub(/\].*/, "", kinds)
      m = split(kinds, ks, ",")
      for (i = 1; i <= m; i++) if (ks[i] != "") count[ks[i]]++
    }
    END {
      # insertion sort: n is small
      for (i = 2; i <= n; i++) { v = conv[i]; j = i - 1
        while (j > 0 && conv[j] > v) { conv[j + 1] = conv[j]; j-- } conv[j + 1] = v }
      printf "runs=%d failing_runs=%d never_converged=%d\n", runs, failing, never
      for (k in count) printf "runs with %s: %d\n", k, count[k]
      if (n > 0) {
        i50 = int((n - 1) * 0.50) + 1; i99 = int((n - 1) * 0.99) + 1
        printf "convergence_ms p50=%d p99=%d max=%d (n=%d)\n", conv[i50], conv[i99], conv[n], n
      }
    }'
}

if [[ "${1:-}" == "--summary" ]]; then
  summary "$2"
  exit 0
fi

minutes="${1:-60}"
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target/fault-runs"
log="$target/fault-runs/soak-$(date -u +%Y%m%dT%H%M%SZ).log"
export FAULT_NODES="${FAULT_NODES:-5}" FAULT_SECONDS="${FAULT_SECONDS:-30}"
export FAULT_SOAK_MINUTES="$minutes"
echo "soak: ${minutes} min, ${FAULT_NODES} nodes, ${FAULT_SECONDS} s schedules; log in $log" >&2
status=0
cargo test -p tessera-tests --test faults soak -- --ignored --nocapture --test-threads 1 2>&1 \
  | tee -a "$log" \
  | grep --line-buffered -E '^SOAK|^  violation|^test |panicked|failing seeds|FAULT_SEED=' \
  || status=$?
summary "$log"
exit "$status"
