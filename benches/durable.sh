#!/usr/bin/env bash
# What `--durable` costs, and what it buys. Two parts, in one run:
#
# 1. Cost: `POST /api/increment` on the counter app under `fog run` without and with
#    `--durable` (each request's key-value write on disk before the answer), same load
#    generator (wrk, concurrent connections, so concurrent requests share flushes), alternating
#    rounds. Prints requests/s, p50 and p99, and the durable / plain ratio.
# 2. What it buys: KILLS times, increments one at a time (curl), then `kill -9` right after an
#    answer, restart on the same data directory, and compare the count with the last count
#    answered. Prints the acknowledged increments lost, without and with `--durable`.
#
#   benches/durable.sh                 (never run by CI; PROFILE=debug uses the debug build)
#   ROUNDS=3 DURATION=8s CONNECTIONS=16 KILLS=10 PROFILE=debug benches/durable.sh
#   (NO_BUILD=1: use the fog and counter.wasm already built)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh
DURATION="${DURATION:-8s}"
CONNECTIONS="${CONNECTIONS:-16}"
ROUNDS="${ROUNDS:-3}"
KILLS="${KILLS:-10}"
THREADS=$(( CONNECTIONS < 2 ? CONNECTIONS : 2 ))
if ! command -v wrk >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk
fi
PROFILE="${PROFILE:-release}"
if [ "${NO_BUILD:-0}" != 1 ]; then
  if [ "$PROFILE" = release ]; then
    cargo build --release --locked -p fog -p fog-test-programs
  else
    cargo build --locked -p fog -p fog-test-programs
  fi
fi
FOG="$CARGO_TARGET_DIR/$PROFILE/fog"
APP="$CARGO_TARGET_DIR/guests/wasm32-wasip2/release/counter.wasm"
ADDR=127.0.0.1:17480
work=$(mktemp -d)
pid=""
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$work"' EXIT
cat >"$work/post.lua" <<'EOF'
wrk.method = "POST"
EOF

start() { # data dir, extra flags
  local dir=$1; shift
  FOG_LOG=warn "$FOG" run "$APP" --data "$dir" --listen "$ADDR" "$@" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    curl -fs -o /dev/null "http://$ADDR/api/count" && return 0
    sleep 0.05
  done
  echo "fog run did not come up" >&2
  exit 1
}
stop() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; }
measure() {
  local out
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/post.lua" "http://$ADDR/api/increment")
  # A refused answer is no increment: a round with any is no measurement.
  if grep -E "Non-2xx|Socket errors" <<<"$out" >&2; then echo "wrk saw errors; no figure" >&2; exit 1; fi
  echo "$(awk '/^Requests\/sec/ {print $2}' <<<"$out") $(awk '$1=="50%" {print $2}' <<<"$out") $(awk '$1=="99%" {print $2}' <<<"$out")"
}

echo "| writes | round | requests/s | p50 | p99 |"
echo "|---|---|---|---|---|"
plain_sum=0; durable_sum=0
for round in $(seq 1 "$ROUNDS"); do
  for mode in plain durable; do
    flags=(); [ "$mode" = durable ] && flags=(--durable)
    rm -rf "$work/$mode"
    start "$work/$mode" "${flags[@]}"
    read -r rps p50 p99 <<<"$(measure)"
    stop
    echo "| $mode | $round | $rps | $p50 | $p99 |"
    if [ "$mode" = plain ]; then plain_sum=$(awk -v s="$plain_sum" -v v="$rps" 'BEGIN {print s+v}')
    else durable_sum=$(awk -v s="$durable_sum" -v v="$rps" 'BEGIN {print s+v}'); fi
  done
done
awk -v d="$durable_sum" -v p="$plain_sum" -v n="$ROUNDS" \
  'BEGIN {printf "\nmean requests/s: plain %.0f, durable %.0f; durable / plain = %.3fx\n", p/n, d/n, d/p}'

# Part 2: acknowledged increments lost to kill -9.
echo
echo "| writes | kills | increments acknowledged | acknowledged increments lost | rounds with a loss |"
echo "|---|---|---|---|---|"
for mode in plain durable; do
  flags=(); [ "$mode" = durable ] && flags=(--durable)
  dir="$work/kill-$mode"; rm -rf "$dir"
  acked_total=0; lost_total=0; lossy=0
  for _ in $(seq 1 "$KILLS"); do
    start "$dir" "${flags[@]}"
    last=""
    for _ in $(seq 1 20); do
      last=$(curl -fs -X POST "http://$ADDR/api/increment" | tr -dc '0-9')
      acked_total=$((acked_total + 1))
    done
    kill -9 "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    start "$dir" "${flags[@]}"
    now=$(curl -fs "http://$ADDR/api/count" | tr -dc '0-9')
    stop
    lost=$(( last > now ? last - now : 0 ))
    lost_total=$((lost_total + lost)); [ "$lost" -eq 0 ] || lossy=$((lossy + 1))
  done
  echo "| $mode | $KILLS | $acked_total | $lost_total | $lossy |"
done
echo "machine: $(nproc) cores, $(uname -sr); $PROFILE build; disk: $(df -T "$work" | awk 'NR==2 {print $2}'); wrk -t$THREADS -c$CONNECTIONS -d$DURATION; $(date -u +%Y-%m-%d)"
