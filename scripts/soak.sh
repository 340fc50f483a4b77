#!/usr/bin/env bash
# The fault soak: seeded nemesis schedules against a cluster of real nodes, for as long as
# asked, one summary line a schedule (seed, faults, ok/fail/unknown, violations,
# convergence). Network namespaces as root, userspace proxies otherwise.
#
#   scripts/soak.sh [minutes]            # default 60
#   FAULT_NODES=5 FAULT_SECONDS=30 FAULT_BACKEND=netns|proxy scripts/soak.sh 120
#   FAULT_SEED=<n> scripts/soak.sh       # replay one schedule
#
# Summary lines go to stdout and to target/fault-runs/soak-<start>.log; a failing schedule
# leaves its history, schedule, report and node logs in target/fault-runs/<seed>-<backend>/.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-60}"
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target/fault-runs"
log="$target/fault-runs/soak-$(date -u +%Y%m%dT%H%M%SZ).log"
export FAULT_NODES="${FAULT_NODES:-5}" FAULT_SECONDS="${FAULT_SECONDS:-30}"
export FAULT_SOAK_MINUTES="$minutes"
echo "soak: ${minutes} min, ${FAULT_NODES} nodes, ${FAULT_SECONDS} s schedules; summary in $log" >&2
cargo test -p tessera-tests --test faults soak -- --ignored --nocapture --test-threads 1 2>&1 \
  | tee -a "$log" | grep --line-buffered -E '^SOAK|^  violation|^test |panicked|failing seeds|FAULT_SEED='
