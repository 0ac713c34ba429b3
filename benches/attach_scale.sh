#!/usr/bin/env bash
# A router with many attached hosts: the router's resident memory and the latency visitors see
# through it with only the one real host attached, then with HOSTS more simulated hosts
# (`fog sim`: real agent protocol and real HTX attach connections, no apps) holding connections
# to it, same load generator (wrk) in one run. Control plane, router, host and simulator are
# separate processes, so the router's memory is its own.
#
#   benches/attach_scale.sh            (never run by CI; PROFILE=debug for a quick look)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh
HOSTS="${HOSTS:-1000}"
PROFILE="${PROFILE:-release}"
DURATION="${DURATION:-8s}"
CONNECTIONS="${CONNECTIONS:-16}"
if ! command -v wrk >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk
fi
if [ "$PROFILE" = release ]; then
  cargo build --release --locked -p fog -p fog-test-programs
else
  cargo build --locked -p fog -p fog-test-programs
fi
FOG="$CARGO_TARGET_DIR/$PROFILE/fog"
# One operator's fog: the control plane takes this admission token, and the hosts (real and
# simulated) register with it, so they are admitted.
export FOG_ADMISSION_TOKEN="bench-admission-token-$$-$RANDOM"
HELLO="$CARGO_TARGET_DIR/guests/wasm32-wasip2/release/hello.wasm"
data=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$data"' EXIT
CONTROL=http://127.0.0.1:17370
ROUTER=http://127.0.0.1:17380

router_key=$("$FOG" keygen --key "$data/router/device.key" | awk '/^public key:/ {print $3}')
"$FOG" keygen --key "$data/developer.key" >/dev/null
wait_for() { # what, command...
  local what=$1; shift
  for _ in $(seq 1 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "attach_scale: $what never happened" >&2; exit 1
}
FOG_LOG=warn "$FOG" control --listen 127.0.0.1:17370 --data "$data/control" --trust-router "$router_key" \
  >"$data/control.log" 2>&1 & pids+=($!)
wait_for "the control plane" curl -sf "$CONTROL/v1/apps"
# One load generator on one address: the router's per-visitor rate limit is off (--visitor-rate 0).
FOG_LOG=warn "$FOG" router --control "$CONTROL" --listen 127.0.0.1:17380 --data "$data/router" \
  --betanet off --attach 127.0.0.1:17384 --visitor-rate 0 >"$data/router.log" 2>&1 & pids+=($!)
router_pid=$!
FOG_LOG=warn "$FOG" host --control "$CONTROL" --data "$data/host" --always-on >"$data/host.log" 2>&1 & pids+=($!)
"$FOG" publish "$HELLO" --name hello --tier B --control "$CONTROL" --key "$data/developer.key" >/dev/null
served() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$ROUTER/apps/hello/")" = 200 ]; }
wait_for "hello through the router" served

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$router_pid/status"; }
measure() {
  local out
  out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$ROUTER/apps/hello/")
  grep -E "Non-2xx|Socket errors" <<<"$out" >&2 || true
  echo "$(awk '/^Requests\/sec/ {print $2}' <<<"$out") $(awk '$1=="50%" {print $2}' <<<"$out") $(awk '$1=="99%" {print $2}' <<<"$out")"
}
attached() { # simulated devices holding a connection to the router
  "$FOG" devices --control "$CONTROL" --json | python3 -c '
import json, sys
print(sum(1 for d in json.load(sys.stdin) if d["region"] == "sim" and d.get("attached")))'
}

rss0=$(rss_kib)
read -r rps0 p500 p990 <<<"$(measure)"
FOG_LOG=warn "$FOG" sim --control "$CONTROL" --devices "$HOSTS" --for 36000 >"$data/sim.log" 2>&1 & pids+=($!)
sim_pid=$!
started=$(date +%s.%N)
for _ in $(seq 1 1200); do [ "$(attached)" -ge "$HOSTS" ] && break; sleep 0.5; done
n=$(attached)
took=$(python3 -c "import time; print('%.1f' % (time.time() - $started))")
rss1=$(rss_kib)
read -r rps1 p501 p991 <<<"$(measure)"
kill -INT "$sim_pid"; wait "$sim_pid" 2>/dev/null || true
echo "| hosts attached to the router | router RSS | requests/s | p50 | p99 |"
echo "|---|---|---|---|---|"
echo "| 1 (real) | $((rss0 / 1024)) MiB | $rps0 | $p500 | $p990 |"
echo "| 1 + $n simulated (all attached after $took s) | $((rss1 / 1024)) MiB | $rps1 | $p501 | $p991 |"
echo "router memory per attached host: $(( (rss1 - rss0) / (n > 0 ? n : 1) )) KiB; requests/s ratio $(python3 -c "print('%.2f' % ($rps1 / $rps0))")"
echo "simulator: $(tail -n 1 "$data/sim.log")"
echo "machine: $(nproc) cores, $(uname -sr); $PROFILE build; wrk -t2 -c$CONNECTIONS -d$DURATION; $(date -u +%Y-%m-%d)"
