#!/usr/bin/env bash
# Fog's main job on one machine: `fog up --demo` — a control plane, a router (HTTP on :7080, the
# Betanet front on :7443), three hosts and three mix relays in one process, with the example apps
# (hello, counter, api, embedded in `fog`) and a static site (docs) published and their URLs and
# Betanet addresses printed.
# Ctrl-C stops it; state stays in $FOG_DATA (default ~/.local/share/fog/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh

# tests/programs' build step compiles guest-examples/ and `fog` embeds the results.
cargo build --locked -p fog
exec "$CARGO_TARGET_DIR/debug/fog" up --demo --relays 3 \
  --data "${FOG_DATA:-$HOME/.local/share/fog/demo}" \
  --control-listen "${FOG_CONTROL_LISTEN:-127.0.0.1:7070}" \
  --router-listen "${FOG_ROUTER_LISTEN:-127.0.0.1:7080}"
