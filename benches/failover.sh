#!/usr/bin/env bash
# Control-plane failover under load: three etcd members, three `fog control` processes, a
# router and three hosts on loopback (every host and the router given all three control-plane
# URLs), the `counter` example published in tier A. Each round drives ~RATE counter increments
# per second through the router (WORKERS curl processes, each sending one increment after the
# other on one keep-alive connection, at most RATE/WORKERS a second), kills the leading control
# plane with kill -9 once a second of load is acknowledged, and measures the time to (a) a new
# leader (polling every control plane's GET /v1/plane) and (b) the first acknowledged
# `fog publish` through the list of all three URLs (the dead one first); the load goes on
# HOLD seconds past the kill, then the round prints the increments acknowledged, the requests
# that failed (any answer but 200, or none within 30 s) and the count's growth over the round,
# which is never below what was acknowledged unless an acknowledged increment was lost. The
# killed control plane is started again before the next round. SIGNAL=STOP stops the leader
# (SIGSTOP) instead of killing it: a hung control plane, which still accepts connections (the
# kernel completes them) and answers none; it is killed at the round's end.
# Uses whatever fog build exists (release if built, else debug; it builds nothing).
#
#   benches/failover.sh                        (never run by CI)
#   ROUNDS=5 PROFILE=debug RATE=200 HOLD=10 benches/failover.sh
#   SIGNAL=STOP benches/failover.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ROUNDS="${ROUNDS:-3}"
RATE="${RATE:-200}"
HOLD="${HOLD:-10}"
SIGNAL="${SIGNAL:-KILL}"
WORKERS=8
if [ -z "${PROFILE:-}" ]; then
  if [ -x "$CARGO_TARGET_DIR/release/fog" ]; then PROFILE=release; else PROFILE=debug; fi
fi
FOG="$CARGO_TARGET_DIR/$PROFILE/fog"
[ -x "$FOG" ] || { echo "no $PROFILE build at $FOG: cargo build -p fog first" >&2; exit 1; }
command -v etcd >/dev/null || { echo "etcd missing: scripts/setup.sh installs etcd-server" >&2; exit 1; }
# The guest components the test programs' build script made.
GUESTS="$CARGO_TARGET_DIR/guests/wasm32-wasip2/release"
for guest in hello counter; do
  [ -f "$GUESTS/$guest.wasm" ] || { echo "no $GUESTS/$guest.wasm: cargo build -p fog-test-programs builds it" >&2; exit 1; }
done
data=$(mktemp -d)
pids=()
cps=(0 0 0)
loaders=()
cleanup() {
  # (A dead control plane's entry is 0, which kill would take for this process group.)
  for pid in "${loaders[@]}" "${pids[@]}" "${cps[@]}"; do
    [ "$pid" = 0 ] || kill -9 "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
now() { date +%s.%N; }
# Hosts register admitted, as an operator's own machines would.
export FOG_ADMISSION_TOKEN=failover-bench-admission-token

# Three etcd members.
cluster=""
for i in 0 1 2; do cluster+="${cluster:+,}m$i=http://127.0.0.1:$((17781 + 2 * i))"; done
for i in 0 1 2; do
  etcd --name "m$i" --data-dir "$data/etcd$i" \
    --listen-client-urls "http://127.0.0.1:$((17780 + 2 * i))" \
    --advertise-client-urls "http://127.0.0.1:$((17780 + 2 * i))" \
    --listen-peer-urls "http://127.0.0.1:$((17781 + 2 * i))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((17781 + 2 * i))" \
    --initial-cluster "$cluster" --initial-cluster-state new --log-level warn \
    >"$data/etcd$i.log" 2>&1 &
  pids+=($!)
done
STORE=etcd://127.0.0.1:17780,127.0.0.1:17782,127.0.0.1:17784
urls=(http://127.0.0.1:17790 http://127.0.0.1:17791 http://127.0.0.1:17792)
# Every list names all three control planes, starting at a different one.
list() { echo "${urls[$1]},${urls[$((($1 + 1) % 3))]},${urls[$((($1 + 2) % 3))]}"; }
router_key=$("$FOG" keygen --key "$data/router/device.key" | awk '/public key/ {print $3}')
start_cp() {
  FOG_LOG=warn "$FOG" control --listen "127.0.0.1:$((17790 + $1))" --data "$data/control$1" \
    --store "$STORE" --trust-router "$router_key" >>"$data/control$1.log" 2>&1 &
  cps[$1]=$!
}
for i in 0 1 2; do start_cp "$i"; done
plane() { curl -sf --max-time 1 "${urls[$1]}/v1/plane" 2>/dev/null || true; }
leader() {
  for i in 0 1 2; do
    [ "${cps[$i]}" = 0 ] && continue
    plane "$i" | grep -q '"leading":true' && { echo "$i"; return; }
  done
  return 1
}
ROUTER=127.0.0.1:17795
FOG_LOG=warn "$FOG" router --listen "$ROUTER" --control "$(list 0)" --data "$data/router" \
  --betanet 127.0.0.1:0 --attach 127.0.0.1:0 --visitor-rate 0 >"$data/router.log" 2>&1 &
pids+=($!)
for i in 0 1 2; do
  FOG_LOG=warn "$FOG" host --control "$(list "$i")" --data "$data/host$i" --cpu 1 --always-on \
    >"$data/host$i.log" 2>&1 &
  pids+=($!)
done
"$FOG" keygen --key "$data/dev.key" >/dev/null
fog() { "$FOG" "$@" --key "$data/dev.key"; }
publish() {
  fog publish "$GUESTS/hello.wasm" --name hello --tier A --wait 0 --control "$1" >/dev/null 2>&1
}
until leader >/dev/null; do sleep 0.1; done
until publish "${urls[0]}"; do sleep 0.2; done
until fog publish "$GUESTS/counter.wasm" --name counter --tier A --wait 0 --control "$(list 0)" \
  >/dev/null 2>&1; do sleep 0.2; done
# Tier A runs a primary and a follower once new devices have earned the trust it needs.
running() {
  fog ps --json --control "$(list 0)" 2>/dev/null | tr -d ' \n' | grep -o '"name":"counter".*' |
    grep -o '"running":\[[^]]*\]' | head -1 | grep -o '"[0-9a-f]\{8,\}"' | wc -l
}
until [ "$(running)" -ge 2 ]; do sleep 0.2; done
count() {
  curl -sf --max-time 5 "http://$ROUTER/apps/counter/api/count" | grep -o '[0-9]\+' || echo 0
}
until curl -sf --max-time 5 -d '' "http://$ROUTER/apps/counter/api/increment?by=0" >/dev/null; do
  sleep 0.2
done

# The load: WORKERS curl processes, each its URLs in turn (a glob: one keep-alive connection),
# writing each answer's status to stderr (unbuffered, so a killed worker loses no line).
start_load() {
  loaders=()
  for w in $(seq 1 "$WORKERS"); do
    curl -s -o /dev/null -w '%{stderr}%{http_code}\n' --max-time 30 \
      --rate "$((RATE / WORKERS))/s" -d '' \
      "http://$ROUTER/apps/counter/api/increment?round=$1&worker=$w&n=[1-10000000]" \
      2>"$data/load$1.$w" &
    loaders+=($!)
  done
}
acked() { cat "$data/load$1".* | grep -c '^200$' || true; }
failed() { cat "$data/load$1".* | grep -vc '^200$' || true; }
stop_load() {
  kill "${loaders[@]}" 2>/dev/null || true
  wait "${loaders[@]}" 2>/dev/null || true
  loaders=()
}

echo "| round | $SIGNAL | new leader (s) | first publish (s) | increments acknowledged | failed | count growth | rate (/s) |"
echo "|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  # Every control plane sees the others before the kill.
  for i in 0 1 2; do until [ "$(plane "$i" | grep -o 'http://' | wc -l)" -ge 3 ]; do sleep 0.1; done; done
  before=$(count)
  start_load "$round"
  loaded=$(now)
  until [ "$(acked "$round")" -ge "$RATE" ]; do sleep 0.05; done
  old=$(leader)
  killed=$(now)
  kill -"$SIGNAL" "${cps[$old]}"
  victim=${cps[$old]}
  [ "$SIGNAL" != KILL ] || wait "$victim" 2>/dev/null || true
  cps[$old]=0
  ( until publish "$(list "$old")"; do sleep 0.02; done; now >"$data/published" ) &
  publisher=$!
  until leader >/dev/null; do sleep 0.02; done
  elected=$(now)
  wait "$publisher"
  published=$(cat "$data/published")
  sleep "$(echo "$killed + $HOLD - $(now)" | bc | sed 's/^-.*/0/')"
  stop_load
  stopped=$(now)
  kill -9 "$victim" 2>/dev/null || true
  wait "$victim" 2>/dev/null || true
  acked=$(acked "$round")
  failed=$(failed "$round")
  # Followers may trail the primary by the writes on their way: read until the count shows
  # every acknowledged increment, or 10 s pass.
  deadline=$(echo "$(now) + 10" | bc)
  after=$(count)
  while [ $((after - before)) -lt "$acked" ] && [ "$(echo "$(now) < $deadline" | bc)" = 1 ]; do
    sleep 0.1
    after=$(count)
  done
  printf '| %s | %s | %.2f | %.2f | %s | %s | %s | %.0f |\n' "$round" "$old" \
    "$(echo "$elected - $killed" | bc)" "$(echo "$published - $killed" | bc)" \
    "$acked" "$failed" "$((after - before))" "$(echo "$acked / ($stopped - $loaded)" | bc -l)"
  start_cp "$old"
  until plane "$old" | grep -q '"id"'; do sleep 0.1; done
done
echo "(fog $PROFILE build; etcd $(etcd --version | head -1 | awk '{print $3}'); $WORKERS curl workers aiming at $RATE increments/s)"
