#!/usr/bin/env bash
# JavaScript and Python apps vs Rust on Fog: requests/s and latency of the hello page (`GET /`,
# "Hello from NAME") of a `fog new js`, a `fog new python` and a `fog new rust` project, each
# built with the command its template prints and published to one `fog up`; same load generator
# (wrk), same run, straight to the host and through the router over HTX.
#
#   benches/jspy.sh                 (release build of fog; never run by CI)
#   PROFILE=debug benches/jspy.sh   (the debug build the tests use; label its figures so)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh
PROFILE="${PROFILE:-release}"
DURATION="${DURATION:-8s}"
CONNECTIONS="${CONNECTIONS:-16}"
ROUNDS="${ROUNDS:-2}"
command -v wrk >/dev/null 2>&1 || {
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk
}
if [ "$PROFILE" = release ]; then cargo build --release --locked -p fog; else cargo build --locked -p fog; fi
FOG="$CARGO_TARGET_DIR/$PROFILE/fog"
work=$(mktemp -d)
fog_pid=""
trap 'kill $fog_pid 2>/dev/null || true; rm -rf "$work"' EXIT

# The three projects, built as a newcomer would (the Rust one into its own target directory).
apps=(hello-rust hello-js hello-python)
for kind in rust js python; do
  "$FOG" new "$kind" "hello-$kind" --dir "$work" >"$work/new-$kind.txt"
  build=$(grep -E '^  (cargo build|cd )' "$work/new-$kind.txt" | sed 's/^  //')
  echo "building hello-$kind: $build" >&2
  (cd "$work" && env -u CARGO_TARGET_DIR sh -c "$build" >"$work/build-$kind.log" 2>&1) \
    || { cat "$work/build-$kind.log"; exit 1; }
done

# --visitor-rate 0: the load comes from one address, which the per-visitor limit would refuse.
# --hosts-listen: the host takes connections itself, so it can be measured directly too.
FOG_LOG=warn "$FOG" up --hosts 1 --hosts-listen --data "$work/fog" --betanet off \
  --control-listen 127.0.0.1:17370 --router-listen 127.0.0.1:17380 --visitor-rate 0 >"$work/up.log" 2>&1 &
fog_pid=$!
for _ in $(seq 1 600); do grep -q "fog: up" "$work/up.log" && break; sleep 0.1; done
grep -q "fog: up" "$work/up.log" || { cat "$work/up.log"; exit 1; }
"$FOG" keygen --key "$work/key" >/dev/null
for kind in rust js python; do
  publish=$(grep -E '^  fog publish ' "$work/new-$kind.txt" | sed 's/^  fog //')
  # shellcheck disable=SC2086
  "$FOG" $publish --wait 600 --control http://127.0.0.1:17370 --key "$work/key" >/dev/null
done
host=$("$FOG" devices --control http://127.0.0.1:17370 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["addr"])')

measure() { # url header
  local out
  out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -H "$2" "$1")
  grep -E "Socket errors" <<<"$out" >&2 || true
  # Failed answers count too: requests/s of errors is not requests/s of pages.
  echo "$(awk '/^Requests\/sec/ {print $2}' <<<"$out") $(awk '$1=="50%" {print $2}' <<<"$out") $(awk '$1=="99%" {print $2}' <<<"$out") $(awk '/Non-2xx/ {print $5}' <<<"$out" | grep . || echo 0)"
}
# Each app answers its hello before it is measured (its first request also compiles it).
for app in "${apps[@]}"; do
  body=$(curl -sf -H "host: $app.localhost" http://127.0.0.1:17380/)
  [ "$body" = "Hello from $app" ] || { echo "$app answered ${body@Q}" >&2; exit 1; }
done
echo "| app | path | round | requests/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  for app in "${apps[@]}"; do
    read -r rps p50 p99 bad <<<"$(measure "http://$host/" "x-fog-app: $app")"
    echo "| $app | direct to the host | $round | $rps | $p50 | $p99 | $bad |"
    read -r rps p50 p99 bad <<<"$(measure "http://127.0.0.1:17380/" "host: $app.localhost")"
    echo "| $app | router over HTX | $round | $rps | $p50 | $p99 | $bad |"
  done
done
# Why answers failed, per app, from the request log (status and the host's failure kind).
for app in "${apps[@]}"; do
  "$FOG" logs "$app" --control http://127.0.0.1:17370 --key "$work/key" --json | python3 -c '
import collections, json, sys
lines = json.load(sys.stdin)
bad = collections.Counter((l["status"], l.get("error")) for l in lines if l["status"] != 200)
print(sys.argv[1], "failed answers in the log:", dict(bad) or "none", file=sys.stderr)' "$app"
done
sizes=$(for kind in rust js python; do
  f=$(grep -E '^  fog publish ' "$work/new-$kind.txt" | awk '{print $3}')
  echo -n "hello-$kind $(($(stat -c %s "$f") / 1024)) KiB; "
done)
echo "machine: $(nproc) cores, $(uname -sr); fog $PROFILE build; components: $sizes wrk -t2 -c$CONNECTIONS -d$DURATION; $(date -u +%Y-%m-%d)"
