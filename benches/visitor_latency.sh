#!/usr/bin/env bash
# The latency visitors see through a router under Fog's placement (NSGA-II) and under the
# scheduler's greedy baseline, on the same measured fleet in the same run: a network lab (real
# namespaces, 198.18.0.0/15) with one router and six NATed devices behind 5, 20, 40, 80, 120 and
# 200 ms of added round trip (nearer devices ask higher prices), four apps (tiers S, S, A, B).
# Phases restart only the control plane (`fog control --placement nsga2|greedy`, a hidden
# benchmark switch) with the apps removed and published again, so each strategy places them from
# nothing; each waits for placement to settle, then times REQUESTS GETs per app from a visitor
# node through the router, one at a time and then CONCURRENCY at a time (default "1,4": the
# router sends sequential requests to the first replica in route order, concurrent ones to the
# least loaded, so the two patterns see different replicas). The harness is the ignored test
# `lab::visitor_latency_under_fogs_placement_and_the_greedy_baseline` in cli/tests/cli/lab.rs; it
# prints Markdown tables. The lab's namespaces and processes go with the test process, also on
# failure (and a later lab sweeps what a killed one left).
#
#   benches/visitor_latency.sh                (needs root; never run by CI)
#   REQUESTS=200 PHASES=nsga2,greedy,greedy,nsga2 CONCURRENCY=1,8 benches/visitor_latency.sh
#
# Builds the debug profile (the test binary and the fog it runs): on a shared machine the
# figures are what a debug build gives; the added delays dominate them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
[ "$(id -u)" -eq 0 ] || { echo "the network lab needs root (namespaces, nftables)" >&2; exit 1; }
echo "# $(date -u +%FT%TZ) on $(hostname), $(nproc) CPUs, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
FOG_BENCH_REQUESTS="${REQUESTS:-100}" FOG_BENCH_PHASES="${PHASES:-nsga2,greedy,greedy,nsga2}" \
  FOG_BENCH_CONCURRENCY="${CONCURRENCY:-1,4}" \
  cargo test -p fog --test cli -- --ignored --exact --nocapture --test-threads 1 \
  lab::visitor_latency_under_fogs_placement_and_the_greedy_baseline
echo "# finished $(date -u +%FT%TZ), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
