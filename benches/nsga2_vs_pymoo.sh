#!/usr/bin/env bash
# Fog's NSGA-II vs pymoo's on ZDT1 (population 100, 250 generations, seeds 1-5), in one run on
# one machine. Installs pymoo into a virtualenv under ~/.cache/fog-bench if missing; never run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
BENCH_CACHE="${BENCH_CACHE:-$HOME/.cache/fog-bench}"
VENV="$BENCH_CACHE/pymoo-venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q pymoo
fi
fog=$(cargo bench -q -p fog-benches --bench placement_report -- zdt1 2>/dev/null | grep '^fog nsga2')
pymoo=$("$VENV/bin/python" benches/pymoo_zdt1.py 2>/dev/null | grep '^pymoo nsga2')
echo "$fog"
echo "$pymoo"
f=$(sed -E 's/.*mean ([0-9.]+) ms.*/\1/' <<<"$fog")
p=$(sed -E 's/.*mean ([0-9.]+) ms.*/\1/' <<<"$pymoo")
awk -v f="$f" -v p="$p" 'BEGIN {printf "Fog is %.1fx faster than pymoo per run\n", p/f}'
echo "machine: $(nproc) cores, $(uname -sr), $(date -u +%Y-%m-%d)"
