#!/usr/bin/env bash
# The network lab for people: a small internet of network namespaces on this machine — a control
# plane, two routers and a public host on an "internet" bridge, four devices each behind its own
# NAT — to run real `fog` processes in. Needs root. The topology lives in tests/lab (fog-lab's
# `lab` binary), the same code Fog's lab tests use.
#   scripts/lab.sh up              build it (namespaces foglab-<node>; stays until `down`)
#   scripts/lab.sh status          namespaces and addresses
#   scripts/lab.sh exec NODE CMD…  run CMD inside NODE (control, router1, dev1, dev1-nat, internet…)
#   scripts/lab.sh down            kill what runs inside and remove every namespace
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
if [ "${1:-}" = up ]; then
  scripts/setup.sh
fi
cargo build -q --locked -p fog-lab --bin lab
exec "$CARGO_TARGET_DIR/debug/lab" "$@"
