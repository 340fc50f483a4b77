#!/usr/bin/env bash
# Fuzzes every target of fuzz/ with AFL++ (`cargo afl`, stable Rust) for a bounded time and
# fails if any target found a crash or a hang. CI runs it with the default 40 s per target;
# a long run is the same command with more seconds (docs/TESTING.md, "Fuzzing").
#
# Usage: scripts/fuzz.sh [seconds_per_target] [target...]
#   FUZZ_JOBS   targets fuzzed at once (default: the number of cores)
#   FUZZ_OUT    AFL output folder (default fuzz/out; one <target>/ per target)
#
# Steps: install cargo-afl and build AFL++ when missing (needs a C compiler and make), build
# the instrumented targets (fuzz/build.sh: fuzz/target, its own target dir), write the seed corpora
# (scripts/fuzz-corpus.sh), run `afl-fuzz -V <seconds>` per target, then print one table of
# executions per target and the path of every crashing or hanging input.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-40}
shift || true
all=(resize query signed_url imgproxy_url sync_message crdt_state admin_body)
if (($#)); then targets=("$@"); else targets=("${all[@]}"); fi
jobs=${FUZZ_JOBS:-$(nproc)}
out=${FUZZ_OUT:-$root/fuzz/out}
export CARGO_TARGET_DIR="$root/fuzz/target"
start=$(date +%s)

# --- what the run needs ---------------------------------------------------------------
# A C compiler and nasm (mozjpeg-sys) come from setup.sh; AFL++'s own build needs make.
scripts/setup.sh
if ! command -v make >/dev/null 2>&1; then
  echo "fuzz: installing make" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make >/dev/null
fi
if ! cargo afl --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-afl" >&2
  cargo install cargo-afl --locked --quiet
fi
# Builds AFL++ for this rustc unless it is built already (then the command refuses).
if ! config=$(cargo afl config --build 2>&1); then
  if ! grep -q "already built" <<<"$config"; then
    echo "$config" >&2
    echo "fuzz: building AFL++ failed" >&2
    exit 1
  fi
fi

# --- build and seeds ---------------------------------------------------------------------
build_start=$(date +%s)
fuzz/build.sh --quiet
build_s=$(($(date +%s) - build_start))
echo "fuzz: instrumented build took ${build_s} s"
scripts/fuzz-corpus.sh "$root/fuzz/corpus-gen"

# --- fuzzing ------------------------------------------------------------------------------
# No CPU binding (the machine may be busy), no UI, missing core dumps tolerated (a crash is
# still seen by afl-fuzz), stop a target at its first crash (the run fails anyway).
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 \
  AFL_NO_AFFINITY=1 AFL_BENCH_UNTIL_CRASH=1 AFL_FAST_CAL=1
mkdir -p "$out"
run() {
  local target=$1
  rm -rf "${out:?}/$target"
  # -t: per-execution timeout in ms (an execution takes milliseconds; longer is a hang);
  # -m none: Rust reserves address space freely.
  if ! cargo afl fuzz -V "$seconds" -t 2000 -m none \
    -i "$root/fuzz/corpus-gen/$target" -o "$out/$target" \
    "$CARGO_TARGET_DIR/release/$target" >"$out/$target.log" 2>&1; then
    echo "fuzz: afl-fuzz failed on $target; the end of $out/$target.log:" >&2
    tail -n 25 "$out/$target.log" >&2
    return 1
  fi
}
failed=0
pids=()
for target in "${targets[@]}"; do
  run "$target" &
  pids+=($!)
  if ((${#pids[@]} >= jobs)); then
    wait "${pids[0]}" || failed=1
    pids=("${pids[@]:1}")
  fi
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done

# --- summary ------------------------------------------------------------------------------
field() { sed -n "s/^$1 *: *//p" "$2" 2>/dev/null | head -n 1; }
printf '%-14s %12s %10s %8s %8s %8s %10s\n' target executions execs/s corpus crashes hangs stability
found=()
for target in "${targets[@]}"; do
  dir="$out/$target/default"
  stats="$dir/fuzzer_stats"
  crashes=$(find "$dir/crashes" -name 'id:*' 2>/dev/null | wc -l)
  hangs=$(find "$dir/hangs" -name 'id:*' 2>/dev/null | wc -l)
  printf '%-14s %12s %10s %8s %8s %8s %10s\n' "$target" "$(field execs_done "$stats")" \
    "$(field execs_per_sec "$stats")" "$(field corpus_count "$stats")" "$crashes" "$hangs" \
    "$(field stability "$stats")"
  while IFS= read -r file; do found+=("$file"); done < <(find "$dir/crashes" "$dir/hangs" -name 'id:*' 2>/dev/null)
  [ -f "$stats" ] || failed=1
done
echo "fuzz: ${seconds} s per target, ${jobs} at a time, $(($(date +%s) - start)) s in all (build ${build_s} s)"
if ((${#found[@]})); then
  echo "fuzz: FAILED: crashing or hanging inputs (replay: fuzz/target/release/<target> < file):"
  printf '  %s\n' "${found[@]}"
  exit 1
fi
if ((failed)); then
  echo "fuzz: FAILED: a target did not run (see its log above)"
  exit 1
fi
echo "fuzz: 0 crashes, 0 hangs"
