#!/usr/bin/env bash
# Fog's main job on one machine: build the example apps and serve them.
# (Today: `fog run` serves the hello site; Ctrl-C stops it.)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh

cargo build --locked -p fog -p fog-test-programs
listen="${FOG_LISTEN:-127.0.0.1:8080}"
# tests/programs' build step compiles guest-examples/ into $CARGO_TARGET_DIR/guests.
hello="$CARGO_TARGET_DIR/guests/wasm32-wasip2/release/hello.wasm"
echo "Open http://$listen/ (Ctrl-C to stop)"
exec "$CARGO_TARGET_DIR/debug/fog" run "$hello" --listen "$listen" --data "${FOG_DATA:-$HOME/.local/share/fog/demo}"
