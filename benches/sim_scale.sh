#!/usr/bin/env bash
# The control plane at fleet sizes one machine cannot run real hosts for: `fog sim` (real agent
# protocol: registration, signed heartbeats, assignments, real publishes) against a real
# `fog control` process, for each DEVICES x APPS pair. Reports heartbeat round trips (p50, p99),
# how long the apps took to be placed, one more app's publish-to-placement time, and the control
# plane's CPU (seconds of CPU per second of wall clock, over the measured window) and resident
# memory at the end. No router: the simulated devices attach to none.
#
#   benches/sim_scale.sh                       (never run by CI)
#   DEVICES="1000 5000" APPS="100 1000" SECONDS_EACH=20 STORE=sled benches/sim_scale.sh
#   PROFILE=debug for a quick look (PROFILE=release, the default, for the published rows);
#   STORE=etcd runs the control plane on a local etcd member (STORE="sled etcd": both, one after
#   the other, rows of the same run); PLANES=N runs N control planes on that etcd, the simulated
#   devices spread over them (CPU and memory are then the planes' sums); CHURN=P has P % of the devices a minute
#   leave and join again or drain while heartbeats are measured (`fog sim --churn`);
#   FOG=path/to/fog runs that binary instead of building one (to compare two builds).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh
DEVICES="${DEVICES:-1000 5000 10000}"
APPS="${APPS:-1000}"
SECONDS_EACH="${SECONDS_EACH:-20}"
PROFILE="${PROFILE:-release}"
STORE="${STORE:-sled}"
CHURN="${CHURN:-0}"
PLANES="${PLANES:-1}"
case "$PLANES" in
  1) ;;
  [2-9]) [ "$STORE" = etcd ] || { echo "PLANES=$PLANES needs STORE=etcd (control planes share an etcd)" >&2; exit 2; } ;;
  *) echo "PLANES is a number of control planes, 1 to 9" >&2; exit 2 ;;
esac
if [ -n "${FOG:-}" ]; then
  PROFILE="$PROFILE (given binary $FOG)"
elif [ "$PROFILE" = release ]; then
  cargo build --release --locked -p fog
  FOG="$CARGO_TARGET_DIR/release/fog"
else
  cargo build --locked -p fog
  FOG="$CARGO_TARGET_DIR/debug/fog"
fi
# One operator's fog: the control plane takes this admission token, and the hosts (real and
# simulated) register with it, so they are admitted.
export FOG_ADMISSION_TOKEN="bench-admission-token-$$-$RANDOM"
data=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
ticks=$(getconf CLK_TCK)
# CPU seconds and resident MiB of processes, summed.
cpu_s() { for p in "$@"; do cat "/proc/$p/stat"; done | awk -v t="$ticks" '{s += $14 + $15} END {print s / t}'; }
rss_mib() { for p in "$@"; do cat "/proc/$p/status"; done | awk '/^VmRSS:/ {s += $2} END {printf "%.0f", s / 1024}'; }

echo "| store | planes | devices | apps | heartbeats | per second | interval | p50 | p99 | max | apps placed in | probe publish | probe placed | churn (left, rejoined, drained) | control CPU (cores) | control RSS | etcd CPU (cores) | etcd RSS | load (1 min) at the end |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for store in $STORE; do
for devices in $DEVICES; do
  for apps in $APPS; do
    run="$data/$store-$devices-$apps"
    mkdir -p "$run"
    store_args=()
    etcd_pid=""
    if [ "$store" = etcd ]; then
      etcd --data-dir "$run/etcd" --listen-client-urls http://127.0.0.1:17579 \
        --advertise-client-urls http://127.0.0.1:17579 --listen-peer-urls http://127.0.0.1:17580 \
        >"$run/etcd.log" 2>&1 & pids+=($!)
      etcd_pid=$!
      store_args=(--store etcd://127.0.0.1:17579)
      # The control plane refuses to start on an etcd that does not answer yet.
      for _ in $(seq 1 100); do curl -sf http://127.0.0.1:17579/health >/dev/null && break; sleep 0.1; done
    fi
    # --key-rate 0: the simulator publishes its apps with one key as fast as it can.
    planes=(); urls=()
    for plane in $(seq 0 $((PLANES - 1))); do
      url="http://127.0.0.1:$((17570 + plane))"
      FOG_LOG=warn "$FOG" control --listen "${url#http://}" --data "$run/control$plane" "${store_args[@]}" \
        --key-rate 0 >"$run/control$plane.log" 2>&1 & pids+=($!)
      planes+=($!); urls+=("$url")
      for _ in $(seq 1 300); do curl -sf "$url/v1/apps" >/dev/null && break; sleep 0.1; done
    done
    CONTROL=$(IFS=,; echo "${urls[*]}")
    "$FOG" sim --control "$CONTROL" --devices "$devices" --apps "$apps" --for "$SECONDS_EACH" --churn "$CHURN" --json \
      >"$run/sim.json" 2>"$run/sim.log" &
    sim_pid=$!
    # The measured window starts when the simulator says so (every app placed).
    until grep -q "measuring heartbeats" "$run/sim.log" 2>/dev/null; do
      kill -0 "$sim_pid" 2>/dev/null || break
      sleep 0.2
    done
    cpu0=$(cpu_s "${planes[@]}"); t0=$(date +%s.%N)
    ecpu0=0; [ -z "$etcd_pid" ] || ecpu0=$(cpu_s "$etcd_pid")
    wait "$sim_pid" || { cat "$run/sim.log" >&2; exit 1; }
    cpu1=$(cpu_s "${planes[@]}"); t1=$(date +%s.%N)
    ecpu1=0; [ -z "$etcd_pid" ] || ecpu1=$(cpu_s "$etcd_pid")
    rss=$(rss_mib "${planes[@]}")
    erss=""; [ -z "$etcd_pid" ] || erss=$(rss_mib "$etcd_pid")
    load=$(cut -d' ' -f1 /proc/loadavg)
    python3 - "$run/sim.json" "$devices" "$apps" "$cpu0" "$cpu1" "$t0" "$t1" "$rss" "$store" "$load" \
      "$PLANES" "$ecpu0" "$ecpu1" "$erss" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
devices, apps, cpu0, cpu1, t0, t1, rss, store, load, planes, ecpu0, ecpu1, erss = sys.argv[2:]
wall = max(float(t1) - float(t0), 1e-9)
cores = (float(cpu1) - float(cpu0)) / wall
etcd_cores = f"{(float(ecpu1) - float(ecpu0)) / wall:.2f}" if erss else "-"
etcd_rss = f"{erss} MiB" if erss else "-"
fmt = lambda v, unit="ms": "never" if v is None else f"{v:.0f} {unit}" if unit == "ms" else f"{v:.1f} {unit}"
print(f"| {store} | {planes} | {devices} | {apps} | {r['heartbeats']} ({r['failed']} failed) "
      f"| {r['heartbeats'] / max(r['seconds'], 1e-9):.0f} | {r.get('heartbeat_interval_ms', 0) / 1000:.1f} s "
      f"| {r['heartbeat_p50_ms']:.1f} ms "
      f"| {r['heartbeat_p99_ms']:.1f} ms | {r['heartbeat_max_ms']:.0f} ms | {fmt(r['apps_placed_s'], 's')} "
      f"| {fmt(r['probe_publish_ms'])} | {fmt(r['probe_placed_ms'])} "
      f"| {r.get('churned', 0)}, {r.get('rejoined', 0)}, {r.get('drained', 0)} | {cores:.2f} | {rss} MiB | {etcd_cores} | {etcd_rss} | {load} |")
EOF
    kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; pids=()
  done
done
done
echo "machine: $(nproc) cores, $(uname -sr); $PROFILE build; stores $STORE; $PLANES control plane(s); churn $CHURN %/min; ${SECONDS_EACH} s measured per row; load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; $(date -u +%Y-%m-%d)"
