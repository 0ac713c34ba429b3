#!/usr/bin/env bash
# What metrics cost: requests/s and latency of the hello app through the router with the
# router's and the host's Prometheus metrics on (`fog up --metrics`: every request counted and
# timed on both, a scrape of both every second meanwhile) and off (nothing recorded), same load
# generator (wrk), alternating in one run. The issue's target: at most 3 % fewer requests/s.
#
#   benches/metrics.sh        (never run by CI; PROFILE=debug uses the debug build)
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
scraper=""
trap 'kill $pid $scraper 2>/dev/null || true; rm -rf "$data"' EXIT
# --visitor-rate 0: the load comes from one address, which the per-visitor limit would refuse.
start_up() { # extra flags for fog up
  rm -rf "$data/fog"; mkdir -p "$data/fog"
  FOG_LOG=warn "$FOG" up --hosts 1 --data "$data/fog" --demo --examples "$CARGO_TARGET_DIR/guests/wasm32-wasip2/release" \
    --control-listen 127.0.0.1:17370 --router-listen 127.0.0.1:17380 --betanet off --visitor-rate 0 "$@" >"$data/up.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do grep -q "fog: up" "$data/up.log" && break; sleep 0.1; done
  grep -q "fog: up" "$data/up.log" || { cat "$data/up.log"; exit 1; }
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:17380/apps/hello/)" = 200 ] && break
    sleep 0.1
  done
}
stop_up() {
  kill "$pid" $scraper 2>/dev/null || true; wait "$pid" $scraper 2>/dev/null || true
  pid=""; scraper=""; sleep 0.5
}
scrape_every_second() { # Prometheus' part: scrape every metrics endpoint fog up printed
  local urls
  urls=$(grep -o 'metrics on http://[0-9.:]*/metrics' "$data/up.log" | awk '{print $3}')
  [ -n "$urls" ] || { echo "fog up --metrics printed no metrics address" >&2; cat "$data/up.log" >&2; exit 1; }
  ( while true; do for u in $urls; do curl -s -o /dev/null "$u"; done; sleep 1; done ) &
  scraper=$!
}
measure() { # url
  local out
  out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$1")
  # Refused answers are not served pages: a round with any is no measurement.
  if grep -E "Non-2xx|Socket errors" <<<"$out" >&2; then echo "wrk saw errors; no figure" >&2; exit 1; fi
  echo "$(awk '/^Requests\/sec/ {print $2}' <<<"$out") $(awk '$1=="50%" {print $2}' <<<"$out") $(awk '$1=="99%" {print $2}' <<<"$out")"
}
echo "| metrics | round | requests/s | p50 | p99 |"
echo "|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  start_up
  read -r rps p50 p99 <<<"$(measure "http://127.0.0.1:17380/apps/hello/")"
  echo "| off | $round | $rps | $p50 | $p99 |"
  stop_up
  start_up --metrics
  scrape_every_second
  read -r rps p50 p99 <<<"$(measure "http://127.0.0.1:17380/apps/hello/")"
  echo "| on, scraped every second | $round | $rps | $p50 | $p99 |"
  curl -s "$(grep -o 'router metrics on http://[0-9.:]*/metrics' "$data/up.log" | awk '{print $4}')" \
    | grep '^fog_router_requests_total' >&2 || true
  stop_up
done
echo "machine: $(nproc) cores, $(uname -sr); $PROFILE build; wrk -t2 -c$CONNECTIONS -d$DURATION; $(date -u +%Y-%m-%d)"
