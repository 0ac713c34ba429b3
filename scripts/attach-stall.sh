#!/usr/bin/env bash
# Reproduce issue 13's attach race with real processes: a control plane, two routers, one host
# that dials out (router 2 started after the host), busy loops on every core. Each round makes
# the host re-dial router 2 twice while admissions wait for a stalled control plane (SIGSTOP),
# so router 2 admits the two connections late and in either order; then it times how long
# router 2 takes to serve `hello` again (a round fails after 40 s). Never run by CI.
#
#   scripts/attach-stall.sh [ROUNDS]      FOG=path/to/fog to try another build
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ROUNDS="${1:-6}"
if [ -z "${FOG:-}" ]; then
  cargo build --locked -p fog -p fog-test-programs
  FOG="$CARGO_TARGET_DIR/debug/fog"
fi
HELLO="$CARGO_TARGET_DIR/guests/wasm32-wasip2/release/hello.wasm"
export FOG_ADMISSION_TOKEN="stall-admission-token-$$-$RANDOM"
export FOG_LOG="${FOG_LOG:-warn,fog_host::attach=info,fog_router::attach=info}"
D=$(mktemp -d)
echo "logs in $D"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null; kill "$p" 2>/dev/null; done; }
trap cleanup EXIT
start() { # NAME ARGS...: start `fog ARGS`, wait for its first line
  local name=$1; shift
  "$FOG" "$@" >"$D/$name.out" 2>"$D/$name.err" &
  PIDS+=($!); echo $! >"$D/$name.pid"
  for _ in $(seq 300); do [ -s "$D/$name.out" ] && break; sleep 0.1; done
}
addr() { head -1 "$D/$1.out" | grep -oE '127\.0\.0\.1:[0-9]+' | head -1; }
key() { "$FOG" keygen --key "$1" 2>&1 | grep -oE '[0-9a-f]{64}' | head -1; }
k1=$(key "$D/router/device.key"); k2=$(key "$D/router2/device.key"); key "$D/dev.key" >/dev/null
start control control --listen 127.0.0.1:0 --data "$D/control" --trust-router "$k1" --trust-router "$k2"
C="http://$(addr control)"
R=(router --listen 127.0.0.1:0 --control "$C" --betanet off --attach 127.0.0.1:0 --visitor-rate 0)
start router "${R[@]}" --data "$D/router"
start host host --control "$C" --data "$D/host0" --cpu 1 --always-on
start router2 "${R[@]}" --data "$D/router2"
R2=$(addr router2)
"$FOG" publish "$HELLO" --name hello --tier B --control "$C" --key "$D/dev.key" >/dev/null || exit 1
served_within() { # SECONDS: how long until router 2 answers hello with 200, or FAIL and why
  local start deadline
  start=$(date +%s.%N); deadline=$(($(date +%s) + $1))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' -m 5 "http://$R2/apps/hello/")" = 200 ]; then
      echo "served after $(echo "$(date +%s.%N) - $start" | bc) s"; return 0
    fi
    sleep 0.2
  done
  echo "FAIL: $(curl -s -m 15 "http://$R2/apps/hello/")"
}
echo "before: $(served_within 60)"
for _ in 1 2 3 4; do (while :; do :; done) & PIDS+=($!); done
fails=0
cp=$(cat "$D/control.pid"); r2=$(cat "$D/router2.pid"); h=$(cat "$D/host.pid")
for round in $(seq "$ROUNDS"); do
  # Admissions hang: the control plane is stalled.
  kill -STOP "$cp"
  # The host stalls past router 2's PING timeout: router 2 cuts it off; resumed, the host
  # re-dials at once, and that connection's admission waits.
  kill -STOP "$h"; sleep 6.5; kill -CONT "$h"; sleep 1
  # Router 2 stalls past the host's PING timeout: the host cuts that connection off and
  # re-dials; resumed, router 2 takes the new connection, whose admission waits too.
  kill -STOP "$r2"; sleep 6.5; kill -CONT "$r2"; sleep 1
  # The control plane answers both admissions, in whichever order.
  kill -CONT "$cp"
  r=$(served_within 40); echo "round $round: $r"
  case $r in FAIL*) fails=$((fails + 1)) ;; esac
done
echo "rounds where router 2 did not serve within 40 s: $fails of $ROUNDS"
