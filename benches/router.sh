#!/usr/bin/env bash
# Router overhead: requests/s and latency of the hello app through the router over HTX (the
# default data plane), through the router over plain HTTP (`--plain`), and straight to the host,
# same load generator (wrk), one run. The host listens (`--hosts-listen`) so it can be reached
# directly and over plain HTTP; benches/dialout.sh compares that with a host that dials out.
#
#   benches/router.sh        (never run by CI)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh
DURATION="${DURATION:-8s}"
CONNECTIONS="${CONNECTIONS:-16}"
ROUNDS="${ROUNDS:-2}"
if ! command -v wrk >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk
fi
cargo build --release --locked -p fog -p fog-test-programs
FOG="$CARGO_TARGET_DIR/release/fog"
data=$(mktemp -d)
pid=""
trap 'kill $pid 2>/dev/null || true; rm -rf "$data"' EXIT
start_up() { # extra flags for fog up
  rm -rf "$data/fog"; mkdir -p "$data/fog"
  # --visitor-rate 0: the load comes from one address, which the per-visitor limit would refuse.
  FOG_LOG=warn "$FOG" up --hosts 1 --data "$data/fog" --demo --examples "$CARGO_TARGET_DIR/guests/wasm32-wasip2/release" \
    --control-listen 127.0.0.1:17170 --router-listen 127.0.0.1:17180 --visitor-rate 0 "$@" >"$data/up.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do grep -q "fog: up" "$data/up.log" && break; sleep 0.1; done
  grep -q "fog: up" "$data/up.log" || { cat "$data/up.log"; exit 1; }
}
stop_up() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; sleep 0.5; }

measure() { # url [header]
  local out
  if [ -n "${2:-}" ]; then out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -H "$2" "$1"); else out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$1"); fi
  grep -E "Non-2xx|Socket errors" <<<"$out" >&2 || true
  echo "$(awk '/^Requests\/sec/ {print $2}' <<<"$out") $(awk '$1=="50%" {print $2}' <<<"$out") $(awk '$1=="99%" {print $2}' <<<"$out")"
}
echo "| path | round | requests/s | p50 | p99 |"
echo "|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  start_up --hosts-listen
  host=$("$FOG" devices --control http://127.0.0.1:17170 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["addr"])')
  read -r rps p50 p99 <<<"$(measure "http://$host/" "x-fog-app: hello")"
  echo "| direct to the host | $round | $rps | $p50 | $p99 |"
  read -r rps p50 p99 <<<"$(measure "http://127.0.0.1:17180/apps/hello/")"
  echo "| router, HTX to the host | $round | $rps | $p50 | $p99 |"
  stop_up
  start_up --plain --hosts-listen
  read -r rps p50 p99 <<<"$(measure "http://127.0.0.1:17180/apps/hello/")"
  echo "| router, plain HTTP to the host | $round | $rps | $p50 | $p99 |"
  stop_up
done
echo "machine: $(nproc) cores, $(uname -sr); wrk -t2 -c$CONNECTIONS -d$DURATION; $(date -u +%Y-%m-%d)"
