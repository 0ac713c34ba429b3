#!/usr/bin/env bash
# Control-plane failover: three etcd members and three `fog control` processes on loopback; each
# round kills the leading control plane with kill -9 and measures the time to (a) a new leader
# (polling every control plane's GET /v1/plane) and (b) the first acknowledged `fog publish`
# through the list of all three URLs (the dead one first), then starts the killed one again.
# Uses whatever fog build exists (release if built, else debug; it builds nothing).
#
#   benches/failover.sh                        (never run by CI)
#   ROUNDS=5 PROFILE=debug benches/failover.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ROUNDS="${ROUNDS:-3}"
if [ -z "${PROFILE:-}" ]; then
  if [ -x "$CARGO_TARGET_DIR/release/fog" ]; then PROFILE=release; else PROFILE=debug; fi
fi
FOG="$CARGO_TARGET_DIR/$PROFILE/fog"
[ -x "$FOG" ] || { echo "no $PROFILE build at $FOG: cargo build -p fog first" >&2; exit 1; }
command -v etcd >/dev/null || { echo "etcd missing: scripts/setup.sh installs etcd-server" >&2; exit 1; }
data=$(mktemp -d)
pids=()
cleanup() { kill -9 "${pids[@]}" "${cps[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
now() { date +%s.%N; }

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
cps=(0 0 0)
start_cp() {
  FOG_LOG=warn "$FOG" control --listen "127.0.0.1:$((17790 + $1))" --data "$data/control$1" \
    --store "$STORE" >>"$data/control$1.log" 2>&1 &
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
"$FOG" keygen --key "$data/dev.key" >/dev/null
# The guest components the test programs' build script made.
HELLO="$CARGO_TARGET_DIR/guests/wasm32-wasip2/release/hello.wasm"
[ -f "$HELLO" ] || { echo "no $HELLO: cargo build -p fog-test-programs builds it" >&2; exit 1; }
publish() {
  "$FOG" publish "$HELLO" --name hello --tier A --wait 0 --control "$1" --key "$data/dev.key" \
    >/dev/null 2>&1
}
until leader >/dev/null; do sleep 0.1; done
until publish "${urls[0]}"; do sleep 0.2; done

echo "| round | killed | new leader (s) | first publish (s) |"
echo "|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  # Every control plane sees the others before the kill.
  for i in 0 1 2; do until [ "$(plane "$i" | grep -o 'http://' | wc -l)" -ge 3 ]; do sleep 0.1; done; done
  old=$(leader)
  list="${urls[$old]},${urls[$(((old + 1) % 3))]},${urls[$(((old + 2) % 3))]}"
  killed=$(now)
  kill -9 "${cps[$old]}"
  wait "${cps[$old]}" 2>/dev/null || true
  cps[$old]=0
  ( until publish "$list"; do sleep 0.02; done; now >"$data/published" ) &
  publisher=$!
  until leader >/dev/null; do sleep 0.02; done
  elected=$(now)
  wait "$publisher"
  published=$(cat "$data/published")
  printf '| %s | %s | %.2f | %.2f |\n' "$round" "$old" \
    "$(echo "$elected - $killed" | bc)" "$(echo "$published - $killed" | bc)"
  start_cp "$old"
  until plane "$old" | grep -q '"id"'; do sleep 0.1; done
done
echo "(fog $PROFILE build; etcd $(etcd --version | head -1 | awk '{print $3}'))"
