#!/usr/bin/env bash
# Installs what building and testing Tessera needs beyond the Rust toolchain, on Debian:
#   nasm — assembles libjpeg-turbo's SIMD kernels inside mozjpeg-sys (JPEG decode/encode
#          is ~3x slower without them) and rav1e's (AVIF encode ~2x slower without).
#   chromium, python3-websocket — the operator console's browser test
#          (tests/tests/console_browser.rs drives headless Chromium over the DevTools
#          protocol with tests/browser/console.py, run by Debian's /usr/bin/python3).
# Idempotent and quick when everything is present; run by README's commands and .ci/run.
set -euo pipefail

missing=()
command -v nasm >/dev/null 2>&1 || missing+=(nasm)
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
/usr/bin/python3 -c 'import websocket' >/dev/null 2>&1 || missing+=(python3-websocket)
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo is not installed (install Rust with rustup first)" >&2; exit 1; }

if ((${#missing[@]})); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
