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
cargo test --workspace --locked
