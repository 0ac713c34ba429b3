#!/usr/bin/env bash
# Run Fog's whole test suite on a fresh machine: install prerequisites, check formatting and
# lints, then run every test (unit, end-to-end over loopback, CLI processes).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The fileserver's pure parts (ranges, paths) also run natively; the guest itself is tested
# through `fog publish DIR` in the CLI tests.
(cd guest-examples && cargo test --locked -p fileserver --target-dir "$CARGO_TARGET_DIR/guests-host") 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
set -e
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
