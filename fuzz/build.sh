#!/usr/bin/env bash
# Builds the fuzz targets (and the seed generator) instrumented for AFL++, in fuzz/target,
# through rustc-wrapper.sh (which crates are instrumented, and why). Extra arguments go to
# cargo (for example `--bin fuzz-corpus`). Used by scripts/fuzz.sh and scripts/fuzz-corpus.sh.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="$PWD/target"
export RUSTC_WRAPPER="$PWD/rustc-wrapper.sh"
cargo afl build --release "$@"
