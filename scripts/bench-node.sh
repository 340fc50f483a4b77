#!/usr/bin/env bash
# Sourced by the HTTP benchmarks that need keys: builds the release binary, starts one
# `tessera serve` on 127.0.0.1:$port with $workers workers and a known operator token
# (extra `TESSERA_*` settings from the caller's environment apply), waits until it is
# ready, and defines `cli` (the admin CLI against it, JSON out) and `jget KEY` (a field of
# the JSON on stdin). Sets $out (a temporary directory, removed on exit) and $server.
# Needs oha, curl and python3; the caller sets $port and $workers.
# BENCH_BIN runs that binary instead of building this checkout's (to compare commits;
# not a TESSERA_ variable, which the node would read as configuration).
command -v oha >/dev/null || { echo "oha not found: cargo install oha --locked" >&2; exit 1; }
bin=${BENCH_BIN:-target/release/tessera}
[ -n "${BENCH_BIN:-}" ] || cargo build --release --quiet --bin tessera
out=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$out"' EXIT
token=top_bench-operator-token
digest=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
TESSERA_LOG=warn TESSERA_AUTH__OPERATOR_TOKEN_SHA256="[\"$digest\"]" \
  "$bin" serve --listen "127.0.0.1:$port" --workers "$workers" \
  --data-dir "$out/data" >"$out/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$out/server.log" >&2; exit 1; }
cli() { "$bin" "$@" --node "http://127.0.0.1:$port" --token "$token" --json; }
jget() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
