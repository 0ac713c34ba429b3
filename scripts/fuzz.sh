#!/usr/bin/env bash
# Fuzz every parser Fog exposes to the network (cargo fuzz, libFuzzer); never run by CI.
#   scripts/fuzz.sh [runs per target, default 10000000] [target ...]
#   FUZZ_SECONDS=N caps each target's run at N seconds (default: no cap).
# Targets: HTX frames and handshakes (router/htx/fuzz), the control plane's API, signed-request
# headers, snapshots, Betanet descriptors, access tickets and site bundles (fuzz/). Prints one
# line per target: executions, seconds, crashes; a crashing input is kept under the crate's
# `artifacts/` directory and the script exits 1. Installs cargo-fuzz into ~/.cache/fog-bench
# if missing. libFuzzer needs nightly features; with only a stable toolchain this uses
# RUSTC_BOOTSTRAP=1. Builds go to their own target directory (instrumented builds would
# otherwise invalidate the test suite's).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
runs="${1:-10000000}"
shift || true
root="${BENCH_CACHE:-$HOME/.cache/fog-bench}/cargo-fuzz"
[ -x "$root/bin/cargo-fuzz" ] || cargo install cargo-fuzz --locked --root "$root"
export PATH="$root/bin:$PATH"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/fog-fuzz}"
rustc --version | grep -q nightly || export RUSTC_BOOTSTRAP=1

declare -A crate_of=(
  [frame]=router/htx/fuzz [handshake]=router/htx/fuzz
  [control_api]=fuzz [signed_header]=fuzz [snapshot]=fuzz [descriptor]=fuzz
  [ticket]=fuzz [bundle]=fuzz
)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame handshake control_api signed_header snapshot descriptor ticket bundle)

failed=0
printf '%-14s %12s %8s %s\n' target executions seconds result
for target in "${targets[@]}"; do
  crate="${crate_of[$target]:?unknown target $target}"
  log="$(mktemp)"
  status=ok
  (cd "$repo/$crate" && cargo fuzz build -O "$target") >"$log" 2>&1 || { cat "$log"; exit 2; }
  start=$(date +%s)
  (cd "$repo/$crate" \
    && cargo fuzz run -O "$target" -- -runs="$runs" -max_total_time="${FUZZ_SECONDS:-0}" -max_len=4096 -rss_limit_mb=2048 -print_final_stats=1) \
    >"$log" 2>&1 || status=CRASH
  seconds=$(( $(date +%s) - start ))
  execs=$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
  if [ "$status" != ok ]; then
    failed=1
    grep -E "panicked|SUMMARY|ERROR|Test unit written|error(\[|:)" "$log" | head -8 | sed 's/^/    /'
  fi
  printf '%-14s %12s %8s %s\n' "$target" "$execs" "$seconds" "$status"
  rm -f "$log"
done
exit $failed
