#!/usr/bin/env bash
# Fuzz every parser Fog exposes to the network (cargo fuzz, libFuzzer); never run by CI.
#   scripts/fuzz.sh [runs per target, default 10000000] [target ...]
#   FUZZ_SECONDS=N caps each target's run at N seconds (default: no cap).
# Targets: HTX frames and handshakes (router/htx/fuzz), the control plane's API, signed-request
# headers, snapshots, Betanet descriptors, access tickets and site bundles (fuzz/). Targets run
# one at a time under `nice -n 19` (the machine is shared: fuzzing only takes idle CPU). Prints
# one line per target, a row for the fuzzing table of benches/RESULTS.md:
#   | target | executions | seconds | per second | crashes | date (UTC) | load average |
# A crashing input is kept under the crate's `artifacts/` directory and the script exits 1.
# Installs cargo-fuzz into ~/.cache/fog-bench if missing. libFuzzer needs nightly features; with
# only a stable toolchain this uses RUSTC_BOOTSTRAP=1. Builds go to their own target directory
# (instrumented builds would otherwise invalidate the test suite's).
#
# Build options (FUZZ_BUILD_FLAGS overrides them), chosen for executions per second:
#   --sanitizer none     every target is safe Rust (ours and the crates under it): AddressSanitizer
#                        finds little there and slowed every allocation and memory access; a
#                        panic, an overflowed allocation or an abort is still a crash.
#   --no-trace-compares  libFuzzer's comparison tracing instrumented every comparison of the
#                        curve25519/ed25519 constant-time arithmetic that most inputs of the
#                        ticket, handshake, signed-header and control-API targets run; a profile
#                        put a quarter of the time in it. Edge coverage (what steers the fuzzer)
#                        stays on for every crate, Fog's included; only the guidance towards
#                        magic values compared byte by byte is lost.
#   -O                   optimised, as before; overflow checks are off as in a release build.
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

build_flags=(${FUZZ_BUILD_FLAGS:--O --sanitizer none --no-trace-compares})

# 1234567 -> 1,234,567 (as the tables in RESULTS.md write them; printf's ' flag needs a locale).
thousands() { echo "$1" | sed -E ':a; s/^([0-9]+)([0-9]{3})/\1,\2/; ta'; }

failed=0
echo "| target | executions | seconds | per second | crashes | date (UTC) | load average |"
echo "|---|---|---|---|---|---|---|"
for target in "${targets[@]}"; do
  crate="${crate_of[$target]:?unknown target $target}"
  log="$(mktemp)"
  status=ok
  (cd "$repo/$crate" && cargo fuzz build "${build_flags[@]}" "$target") >"$log" 2>&1 || { cat "$log"; exit 2; }
  start=$(date +%s)
  when=$(date -u '+%Y-%m-%d %H:%M')
  (cd "$repo/$crate" \
    && nice -n 19 cargo fuzz run "${build_flags[@]}" "$target" -- -runs="$runs" -max_total_time="${FUZZ_SECONDS:-0}" -max_len=4096 -rss_limit_mb=2048 -print_final_stats=1) \
    >"$log" 2>&1 || status=CRASH
  seconds=$(( $(date +%s) - start ))
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  execs=$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
  crashes=0
  if [ "$status" != ok ]; then
    failed=1
    crashes=1
    grep -E "panicked|SUMMARY|ERROR|Test unit written|error(\[|:)" "$log" | head -8 | sed 's/^/    /' >&2
  fi
  printf '| `%s` | %s | %s | %s | %s | %s | %s |\n' "$target" "$(thousands "$execs")" "$seconds" \
    "$(thousands $(( execs / (seconds > 0 ? seconds : 1) )))" "$crashes" "$when" "$load"
  rm -f "$log"
done
exit $failed
