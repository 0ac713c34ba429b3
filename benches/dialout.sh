#!/usr/bin/env bash
# Dialling out vs being dialled: requests/s and latency of the hello app through the router when
# the host dialled out to the router (the default: the router sends requests back down the
# host's own HTX connection) and when the router dials the host's HTX listener (`fog host
# --listen`, here `fog up --hosts-listen`), same load generator (wrk), alternating in one run.
#
#   benches/dialout.sh        (never run by CI; PROFILE=debug uses the debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh
DURATION="${DURATION:-8s}"
CONNECTIONS="${CONNECTIONS:-16}"
ROUNDS="${ROUNDS:-3}"
if ! command -v wrk >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk
fi
PROFILE="${PROFILE:-release}"
if [ "$PROFILE" = release ]; then
  cargo build --release --locked -p fog -p fog-test-programs
else
  cargo build --locked -p fog -p fog-test-programs
fi
FOG="$CARGO_TARGET_DIR/$PROFILE/fog"
data=$(mktemp -d)
pid=""
trap 'kill $pid 2>/dev/null || true; rm -rf "$data"' EXIT
start_up() { # extra flags for fog up
  rm -rf "$data/fog"; mkdir -p "$data/fog"
  # --visitor-rate 0: the load comes from one address, which the per-visitor limit would refuse.
  FOG_LOG=warn "$FOG" up --hosts 1 --data "$data/fog" --demo --examples "$CARGO_TARGET_DIR/guests/wasm32-wasip2/release" \
    --control-listen 127.0.0.1:17270 --router-listen 127.0.0.1:17280 --betanet off --visitor-rate 0 "$@" >"$data/up.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do grep -q "fog: up" "$data/up.log" && break; sleep 0.1; done
  grep -q "fog: up" "$data/up.log" || { cat "$data/up.log"; exit 1; }
  # Served through the router (the host attached, or its listener is known).
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:17280/apps/hello/)" = 200 ] && break
    sleep 0.1
  done
}
stop_up() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; sleep 0.5; }
reached() { # how the router reaches the device, as fog devices says
  "$FOG" devices --control http://127.0.0.1:17270 --json | python3 -c '
import json, sys
d = json.load(sys.stdin)[0]
addr = (d.get("htx") or {}).get("addr")
links = d.get("attached", [])
print("direct " + addr if addr else "dial-out via " + ",".join(l["router"] for l in links),
      "rtt " + ",".join("%.2fms" % (l["rtt_us"] / 1000) for l in links))'
}

measure() { # url
  local out
  out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$1")
  grep -E "Non-2xx|Socket errors" <<<"$out" >&2 || true
  echo "$(awk '/^Requests\/sec/ {print $2}' <<<"$out") $(awk '$1=="50%" {print $2}' <<<"$out") $(awk '$1=="99%" {print $2}' <<<"$out")"
}
echo "| router to host | round | requests/s | p50 | p99 |"
echo "|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  start_up
  echo "fog devices: $(reached)" >&2
  read -r rps p50 p99 <<<"$(measure "http://127.0.0.1:17280/apps/hello/")"
  echo "| host dialled out (its own HTX connection) | $round | $rps | $p50 | $p99 |"
  stop_up
  start_up --hosts-listen
  echo "fog devices: $(reached)" >&2
  read -r rps p50 p99 <<<"$(measure "http://127.0.0.1:17280/apps/hello/")"
  echo "| router dialled the host (HTX listener) | $round | $rps | $p50 | $p99 |"
  stop_up
done
echo "machine: $(nproc) cores, $(uname -sr); $PROFILE build; wrk -t2 -c$CONNECTIONS -d$DURATION; $(date -u +%Y-%m-%d)"
