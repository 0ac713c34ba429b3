#!/usr/bin/env bash
# Load test: `fog run` against `wasmtime serve` (wasmtime-cli 48 from crates.io) on the same
# component, with the same load generator (wrk), on the same machine, in one run.
#
#   benches/serve.sh [component.wasm]     (default: the hello example)
#
# Installs wrk (Debian) and wasmtime-cli 48.0.8 into ~/.cache/fog-bench if missing; never run by
# CI. Prints a Markdown table for benches/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-16}"
ROUNDS="${ROUNDS:-2}"
BENCH_CACHE="${BENCH_CACHE:-$HOME/.cache/fog-bench}"
WASMTIME="$BENCH_CACHE/wasmtime-48/bin/wasmtime"

if ! command -v wrk >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk
fi
if [ ! -x "$WASMTIME" ]; then
  echo "installing wasmtime-cli 48.0.8 into $BENCH_CACHE (a release build: 20+ minutes on 2 cores)"
  cargo install wasmtime-cli --version 48.0.8 --locked --root "$BENCH_CACHE/wasmtime-48"
fi

cargo build --release --locked -p fog -p fog-test-programs
FOG="$CARGO_TARGET_DIR/release/fog"
APP="${1:-$CARGO_TARGET_DIR/guests/wasm32-wasip2/release/hello.wasm}"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_up() {
  for _ in $(seq 1 200); do
    curl -fs -o /dev/null "http://$1/" && return 0
    sleep 0.05
  done
  echo "server on $1 did not come up" >&2
  return 1
}

# wrk's summary → "requests/s p50 p99" (latencies in ms).
measure() {
  local out rps p50 p99
  out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "http://$1/")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
  [ -z "$errors" ] || echo "warning: $1: $errors" >&2
  echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}
to_ms() {
  case "$1" in
    *us) awk -v v="${1%us}" 'BEGIN {printf "%.3f", v/1000}' ;;
    *ms) awk -v v="${1%ms}" 'BEGIN {printf "%.3f", v}' ;;
    *s)  awk -v v="${1%s}" 'BEGIN {printf "%.3f", v*1000}' ;;
    *)   echo "$1" ;;
  esac
}

start_fog() {
  "$FOG" run "$APP" --listen 127.0.0.1:18181 >/dev/null 2>&1 & pids+=($!)
  wait_up 127.0.0.1:18181
}
start_wasmtime() {
  # -Scli: Rust std components import wasi:cli interfaces beyond the proxy world.
  "$WASMTIME" serve -Scli --addr 127.0.0.1:18182 $1 "$APP" >/dev/null 2>&1 & pids+=($!)
  wait_up 127.0.0.1:18182
}
stop_all() { cleanup; pids=(); sleep 0.5; }

declare -A results
for round in $(seq 1 "$ROUNDS"); do
  start_fog;                          results[fog,$round]=$(measure 127.0.0.1:18181); stop_all
  start_wasmtime "";                  results[ws,$round]=$(measure 127.0.0.1:18182); stop_all
  start_wasmtime "-O pooling-allocator"; results[wsp,$round]=$(measure 127.0.0.1:18182); stop_all
done

echo
echo "| server | round | requests/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  for key in fog ws wsp; do
    case $key in
      fog) name="fog run (fuel, memory cap, deadline, concurrency cap)" ;;
      ws) name="wasmtime serve -Scli (defaults)" ;;
      wsp) name="wasmtime serve -Scli -O pooling-allocator" ;;
    esac
    read -r rps p50 p99 <<<"${results[$key,$round]}"
    echo "| $name | $round | $rps | $p50 | $p99 |"
  done
done
mean() { local sum=0; for r in $(seq 1 "$ROUNDS"); do sum=$(awk -v s="$sum" -v v="$(cut -d' ' -f1 <<<"${results[$1,$r]}")" 'BEGIN {print s+v}'); done; awk -v s="$sum" -v n="$ROUNDS" 'BEGIN {print s/n}'; }
fog=$(mean fog); ws=$(mean ws); wsp=$(mean wsp)
echo
awk -v f="$fog" -v w="$ws" -v p="$wsp" 'BEGIN {printf "fog / wasmtime serve: %.2fx; fog / wasmtime serve (pooling): %.2fx\n", f/w, f/p}'
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); wrk -t2 -c$CONNECTIONS -d$DURATION; $(date -u +%Y-%m-%d)"
