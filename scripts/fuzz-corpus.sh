#!/usr/bin/env bash
# Writes the fuzz targets' seed corpora into fuzz/corpus-gen/<target>/ (ignored by git):
# real encodings made by the crates (every sync message kind, every CRDT state), the
# hostile corpus of resize/tests/hostile_inputs, small variants of ../shared/photos (skipped
# with a message when that folder is missing), query strings, signed URLs, admin bodies.
# The generator is fuzz/corpus/main.rs, built with the targets (scripts/fuzz.sh builds it;
# run alone, this builds it first).
# Usage: scripts/fuzz-corpus.sh [out-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-fuzz/corpus-gen}
export CARGO_TARGET_DIR="$PWD/fuzz/target"
generator="$CARGO_TARGET_DIR/release/fuzz-corpus"
if [ ! -x "$generator" ]; then
  fuzz/build.sh --quiet --bin fuzz-corpus
fi
photos=../shared/photos
if [ ! -d "$photos" ]; then
  echo "fuzz-corpus: $photos is missing; the resize seeds are generated images only" >&2
fi
rm -rf "$out"
"$generator" "$out" "$photos"
