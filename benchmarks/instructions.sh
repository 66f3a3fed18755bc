#!/usr/bin/env bash
# Instructions per simulated flip, counted by callgrind (repeatable on a noisy machine):
# the difference between a run of 2500 and one of 500 frames, divided by 2000, so start-up
# and imports cancel out.  Usage: benchmarks/instructions.sh [policy ...] (default: eager
# and legacy).  Needs valgrind; takes about a minute per policy.
set -euo pipefail
py=$(python -c 'import sys; print(sys.executable)')
run() {
    local out
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" "$py" -c "
import sys
from gpuvm.observe.costs import CostCounters
from gpuvm.study.workloads import pageflip
pageflip(frames=int(sys.argv[2]), policy=sys.argv[1], counters=CostCounters())
" "$1" "$2" >/dev/null 2>&1
    awk '/^(summary|totals):/ {print $2; exit}' "$out"
    rm -f "$out"
}
for policy in "${@:-gpuvm_eager legacy_pre_6_17}"; do
    for p in $policy; do
        a=$(run "$p" 500)
        b=$(run "$p" 2500)
        echo "$p $(( (b - a) / 2000 )) instructions per flip"
    done
done
