#!/usr/bin/env bash
# Static sites: requests/s and latency of a site published with `fog publish DIR` (through the
# router over HTX, and straight to the host) against nginx (Debian's package) serving the same
# files, same load generator (wrk), same run. Two files: the demo site's index.html (447 B) and
# a 1 MiB file.
#
#   benches/static.sh        (never run by CI; installs nginx and wrk with apt-get if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh
DURATION="${DURATION:-8s}"
CONNECTIONS="${CONNECTIONS:-16}"
ROUNDS="${ROUNDS:-2}"
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}"
  # The package starts a default server on :80; this bench runs its own.
  $sudo systemctl stop nginx 2>/dev/null || $sudo service nginx stop 2>/dev/null || true
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release --locked -p fog
FOG="$CARGO_TARGET_DIR/release/fog"
work=$(mktemp -d)
fog_pid=""; nginx_pid=""
trap 'kill $fog_pid $nginx_pid 2>/dev/null || true; rm -rf "$work"' EXIT

# The site: the demo docs plus a 1 MiB file; readable by nginx's unprivileged workers.
site="$work/site"
cp -r guest-examples/site "$site"
head -c $((1 << 20)) /dev/urandom >"$site/big.bin"
chmod -R a+rX "$work"

# --visitor-rate 0: the load comes from one address, which the per-visitor limit would refuse.
FOG_LOG=warn "$FOG" up --hosts 1 --data "$work/fog" --betanet off \
  --control-listen 127.0.0.1:17270 --router-listen 127.0.0.1:17280 --visitor-rate 0 >"$work/up.log" 2>&1 &
fog_pid=$!
for _ in $(seq 1 600); do grep -q "fog: up" "$work/up.log" && break; sleep 0.1; done
grep -q "fog: up" "$work/up.log" || { cat "$work/up.log"; exit 1; }
"$FOG" keygen --key "$work/key" >/dev/null
"$FOG" publish "$site" --name site --control http://127.0.0.1:17270 --key "$work/key" >/dev/null
host=$("$FOG" devices --control http://127.0.0.1:17270 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["addr"])')

cat >"$work/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  include /etc/nginx/mime.types;
  access_log off;
  sendfile on;
  server {
    listen 127.0.0.1:17290;
    root $site;
    index index.html;
    error_page 404 /404.html;
  }
}
EOF
"$NGINX" -c "$work/nginx.conf" -p "$work" &
nginx_pid=$!
for _ in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:17290/ && break; sleep 0.1; done

measure() { # url [header]
  local out
  if [ -n "${2:-}" ]; then out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -H "$2" "$1"); else out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$1"); fi
  grep -E "Non-2xx|Socket errors" <<<"$out" >&2 || true
  echo "$(awk '/^Requests\/sec/ {print $2}' <<<"$out") $(awk '$1=="50%" {print $2}' <<<"$out") $(awk '$1=="99%" {print $2}' <<<"$out")"
}
# The same bytes from each server, or the comparison means nothing.
for path in / /big.bin; do
  a=$(curl -sf -H "host: site.localhost" "http://127.0.0.1:17280$path" | sha256sum)
  b=$(curl -sf "http://127.0.0.1:17290$path" | sha256sum)
  [ "$a" = "$b" ] || { echo "fog and nginx serve different bytes for $path" >&2; exit 1; }
done
echo "| file | server | round | requests/s | p50 | p99 |"
echo "|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  for path in / /big.bin; do
    read -r rps p50 p99 <<<"$(measure "http://127.0.0.1:17290$path")"
    echo "| $path | nginx | $round | $rps | $p50 | $p99 |"
    read -r rps p50 p99 <<<"$(measure "http://$host$path" "x-fog-app: site")"
    echo "| $path | fog, direct to the host | $round | $rps | $p50 | $p99 |"
    read -r rps p50 p99 <<<"$(measure "http://127.0.0.1:17280$path" "host: site.localhost")"
    echo "| $path | fog, router over HTX | $round | $rps | $p50 | $p99 |"
  done
done
echo "machine: $(nproc) cores, $(uname -sr); nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'), 2 workers; wrk -t2 -c$CONNECTIONS -d$DURATION; $(date -u +%Y-%m-%d)"
