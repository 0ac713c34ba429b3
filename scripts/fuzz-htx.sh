#!/usr/bin/env bash
# Fuzz fog-htx's frame parser and handshake driver for a bounded time each (never run by CI).
#   scripts/fuzz-htx.sh [seconds per target, default 60]
# Installs cargo-fuzz into ~/.cache/fog-bench if missing. libFuzzer needs nightly features;
# with only a stable toolchain this uses RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/../router/htx/fuzz"
seconds="${1:-60}"
root="${BENCH_CACHE:-$HOME/.cache/fog-bench}/cargo-fuzz"
[ -x "$root/bin/cargo-fuzz" ] || cargo install cargo-fuzz --locked --root "$root"
export PATH="$root/bin:$PATH"
rustc --version | grep -q nightly || export RUSTC_BOOTSTRAP=1
for target in frame handshake; do
  echo "== $target ($seconds s)"
  cargo fuzz run "$target" -- -max_total_time="$seconds" -max_len=4096 2>&1 | grep -E "^#[0-9]+ +DONE|Done [0-9]+ runs|SUMMARY|ERROR|crash-" || true
done
