#!/usr/bin/env bash
# The onion path on a private Tor network: time to first byte and requests/s of `hello` through
# Fog's arti onion service (router, one host), against a C tor onion service (HiddenServiceDir /
# HiddenServicePort on the network's client) forwarding to the same router on the same network.
# Both are fetched by the same C tor client (curl --socks5-hostname), so the difference is the
# service side. Release build; a few minutes.
#
#   benches/onion.sh        (never run by CI)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh
ROUNDS="${ROUNDS:-30}"
SECONDS_LOAD="${SECONDS_LOAD:-15}"
PARALLEL="${PARALLEL:-8}"
cargo build --release --locked -p fog -p fog-test-programs
FOG="$CARGO_TARGET_DIR/release/fog"
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$work"' EXIT
export FOG_LOG=warn,tor_netdir=error

# The fog first (its router's HTTP port is the C tor service's target).
# --visitor-rate 0: the load comes from one address, which the per-visitor limit would refuse.
"$FOG" up --hosts 1 --data "$work/fog" --demo --examples "$CARGO_TARGET_DIR/guests/wasm32-wasip2/release" \
  --control-listen 127.0.0.1:17370 --router-listen 127.0.0.1:17380 --betanet off --visitor-rate 0 >"$work/up.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do grep -q "fog: up" "$work/up.log" && break; sleep 0.1; done
grep -q "fog: up" "$work/up.log" || { cat "$work/up.log"; exit 1; }

"$FOG" testnet --dir "$work/testnet" --c-onion-service 127.0.0.1:17380 >"$work/testnet.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 2400); do grep -q "C tor onion service" "$work/testnet.log" && break; sleep 0.1; done
grep -q "C tor onion service" "$work/testnet.log" || { cat "$work/testnet.log"; exit 1; }
socks=$(python3 -c "import json;print(json.load(open('$work/testnet/testnet.json'))['socks'])")
c_onion=$(grep -o 'http://[a-z2-7]*\.onion/' "$work/testnet.log" | head -1)

# Fog's router with its onion front on the private network (a second router process on the
# same control plane, trusted as the first: it uses the same router key).
"$FOG" router --control http://127.0.0.1:17370 --listen 127.0.0.1:17381 --betanet off \
  --data "$work/fog/router" --tor-network "$work/testnet/arti.toml" >"$work/router.log" 2>&1 &
pids+=($!)
fog_onion="http://$("$FOG" ps --control http://127.0.0.1:17370 --json | python3 -c 'import json,sys; print([a for a in json.load(sys.stdin) if a["name"]=="hello"][0]["onion"])')/"

fetch() { curl -s -o /dev/null -m 60 --socks5-hostname "$socks" -w '%{http_code} %{time_starttransfer}\n' "$1"; }
wait_up() { for _ in $(seq 1 300); do [ "$(fetch "$1" | cut -d' ' -f1)" = 200 ] && return 0; sleep 2; done; echo "never reached $1" >&2; exit 1; }
wait_up "$fog_onion"
wait_up "${c_onion}apps/hello/"

ttfb() { # url -> p50 p90 (ms) ok failed, over ROUNDS sequential requests
  local out="$work/ttfb.$RANDOM"
  for _ in $(seq 1 "$ROUNDS"); do fetch "$1"; done >"$out"
  local failed; failed=$(awk '$1!=200' "$out" | wc -l)
  awk '$1==200 {print $2*1000}' "$out" | sort -n |
    awk -v f="$failed" '{v[NR]=$1}
      END {if (NR == 0) {printf "- - 0 %d", f} else {i = int(NR*0.9); if (i < 1) i = 1;
           printf "%.0f %.0f %d %d", v[int(NR*0.5)+1], v[i], NR, f}}'
}
rps() { # url -> requests/s with PARALLEL concurrent curl loops for SECONDS_LOAD
  local end=$((SECONDS + SECONDS_LOAD)) count="$work/count.$RANDOM"
  for _ in $(seq 1 "$PARALLEL"); do
    ( while [ $SECONDS -lt $end ]; do fetch "$1" | cut -d' ' -f1; done >>"$count" ) &
  done
  wait
  awk -v s="$SECONDS_LOAD" '$1==200 {n++} $1!=200 {f++} END {printf "%.1f %d", n / s, f}' "$count"
}
echo "| service | round | TTFB p50 ms | TTFB p90 ms | ok / failed | requests/s ($PARALLEL clients) | failed |"
echo "|---|---|---|---|---|---|---|"
for round in $(seq 1 "${BENCH_ROUNDS:-3}"); do
  read -r p50 p90 ok failed <<<"$(ttfb "$fog_onion")"; read -r r rf <<<"$(rps "$fog_onion")"
  echo "| Fog (arti onion service in the router) | $round | $p50 | $p90 | $ok / $failed | $r | $rf |"
  read -r p50 p90 ok failed <<<"$(ttfb "${c_onion}apps/hello/")"; read -r r rf <<<"$(rps "${c_onion}apps/hello/")"
  echo "| C tor onion service -> the same router | $round | $p50 | $p90 | $ok / $failed | $r | $rf |"
done
echo "machine: $(nproc) cores, $(uname -sr); tor $(tor --version | head -1 | awk '{print $3}'); $(date -u +%Y-%m-%d)"
