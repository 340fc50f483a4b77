#!/usr/bin/env bash
# RUSTC_WRAPPER for the fuzz build (fuzz/build.sh): `cargo afl build` gives every crate the
# same flags (AFL coverage instrumentation, one codegen unit, opt-level 3), which makes the
# instrumented build of the edge node's whole dependency tree (libp2p, axum, parquet,
# rustls, ...) take over 25 minutes on a busy 2-core machine. Coverage only helps where
# the fuzzed input goes, so this keeps the instrumentation for:
#   - Tessera's own crates and the fuzz targets;
#   - the parsers the inputs reach: image decoders (png, gif, image, image-webp, fdeflate),
#     fast_image_resize, moxcms (ICC), postcard, serde_json, form_urlencoded;
# builds the rest uninstrumented at opt-level 3 with the default codegen units, and the
# crates no target ever executes (network, HTTP server, storage, export formats, CLI) and
# build scripts and proc-macros at opt-level 0. `--cfg fuzzing`, debug assertions and
# overflow checks stay on everywhere.
set -euo pipefail
rustc=$1
shift
name=""
kind=""
prev=""
for arg in "$@"; do
  case $prev in
    --crate-name) name=$arg ;;
    --crate-type) kind=$arg ;;
  esac
  prev=$arg
done
instrumented='^(tessera_[a-z_]+|resize|query|signed_url|sync_message|crdt_state|admin_body|fuzz_corpus|png|gif|image|image_webp|fdeflate|fast_image_resize|moxcms|postcard|serde_json|form_urlencoded|percent_encoding)$'
cold='^(libp2p.*|tokio.*|axum.*|hyper.*|h2|parquet|arrow.*|rustls.*|ring|redb|clap.*|prometheus.*|yamux|snow|netlink.*|rtnetlink|hickory.*|tracing_subscriber|regex.*|tower.*|webpki.*|x25519_dalek|curve25519_dalek|ed25519_dalek|multiaddr|multistream_select|quick_protobuf.*|asynchronous_codec|if_watch|snap|thrift|flatbuffers|lz4.*|zstd.*|prost.*|cbor4ii|httparse|mio|socket2|toml.*|winnow|futures.*|rcgen|ordered_float|half|chrono.*|num.*|idna.*|icu_.*|zerovec.*|yoke.*|tinystr|writeable|litemap|potential_utf|url)$'
# rav1e compiles a libFuzzer harness under `cfg(fuzzing)`, whose runtime defines the same
# coverage hooks as AFL++'s and breaks the link; rav1e is the AVIF encoder, not fuzzed here.
if [[ $name == rav1e ]]; then
  args=()
  prev=""
  for arg in "$@"; do
    if [[ $prev == --cfg && $arg == fuzzing ]]; then
      unset 'args[${#args[@]}-1]'
    else
      args+=("$arg")
    fi
    prev=$arg
  done
  set -- "${args[@]}"
fi
if [[ $name =~ $instrumented ]] && [[ $kind != proc-macro ]]; then
  exec "$rustc" "$@"
fi
opt=3
if [[ $name =~ $cold ]] || [[ $kind == proc-macro ]] || [[ $name == build_script_* ]]; then
  opt=0
fi
args=("$@")
# Drop "-C <value>" pairs that instrument or fix the codegen, then set the opt-level.
out=()
n=${#args[@]}
for ((i = 0; i < n; i++)); do
  arg=${args[i]}
  if [[ $arg == -C ]] && ((i + 1 < n)); then
    value=${args[i + 1]}
    case $value in
      passes=sancov* | llvm-args=-sanitizer-coverage* | codegen-units=* | opt-level=*)
        i=$((i + 1))
        continue
        ;;
    esac
  fi
  case $arg in
    -Cpasses=sancov* | -Cllvm-args=-sanitizer-coverage* | -Ccodegen-units=* | -Copt-level=*) continue ;;
  esac
  out+=("$arg")
done
exec "$rustc" "${out[@]}" -C "opt-level=$opt"
