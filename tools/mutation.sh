#!/bin/sh
# A sampled mutmut 3 run (not in CI: too slow).  Usage, from the repository root:
#   tools/mutation.sh [-n SAMPLE] [-s SEED] [-r RESULTS] [MODULE ...] [-- TEST ...]
#   tools/mutation.sh -l NAMES_FILE [MODULE ...] [-- TEST ...]   # re-run listed mutants
# MODULE: files or directories to mutate (default: gpuvm/core gpuvm/drm gpuvm/observe/checker
# gpuvm/observe/trace).  TEST: the test files to run against them (default: the fast tests
# that exercise those modules, no long state machines).  mutmut 3 generates every mutant of
# the modules; this script then runs a reproducible sample: SAMPLE mutant names (default
# 200), drawn with random.Random(SEED) (default 15) after sorting, spread evenly over the
# top packages (gpuvm/core, gpuvm/drm, gpuvm/observe).  Each mutant runs only the tests that
# cover its function (mutmut's own stats pass).  The tree is copied to a scratch directory,
# so mutmut's mutants/ and config stay out of the checkout.  The per-mutant results go to
# RESULTS (default mutation-results.txt), the sampled names to RESULTS.names.
set -eu
root=$(pwd)
sample=200
seed=15
results="$root/mutation-results.txt"
names_file=""
while getopts n:s:r:l: opt; do
    case "$opt" in
        n) sample=$OPTARG ;;
        s) seed=$OPTARG ;;
        r) results=$OPTARG ;;
        l) names_file=$(realpath "$OPTARG") ;;
        *) echo "usage: $0 [-n SAMPLE] [-s SEED] [-r RESULTS] [-l NAMES] [MODULE ...] [-- TEST ...]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
mods=""
tests=""
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; tests="$*"; break ;;
        *) mods="$mods $1"; shift ;;
    esac
done
[ -n "$mods" ] || mods="gpuvm/core gpuvm/drm gpuvm/observe/checker gpuvm/observe/trace"
if [ -z "$tests" ]; then
    for t in checks_checked checks_core checks_drm checks_observe survivors vm_errors file \
        file_modes prime dmabuf_sharing dmabuf_kernel checker refs_lifetime placement caps \
        legacy kernel_exact api_contract locks kms vatree bug_patterns trace policies \
        plan_reuse events_bus; do
        [ -f "$root/tests/test_$t.py" ] && tests="$tests tests/test_$t.py"
    done
fi
work=$(mktemp -d)
cp -r "$root/gpuvm" "$root/legacy" "$root/tests" "$root/pyproject.toml" "$work/"
cd "$work"
{
    echo "[mutmut]"
    echo "paths_to_mutate="
    for m in $mods; do echo "    $m"; done
    echo "also_copy="
    echo "    gpuvm"
    echo "    legacy"
    echo "pytest_add_cli_args_test_selection="
    for t in $tests; do echo "    $t"; done
} > setup.cfg
export HYPOTHESIS_PROFILE=ci
# Pass 1: generate every mutant and collect which tests cover which function (a name that
# matches no mutant stops mutmut right after that, before any mutant runs).
mutmut run --max-children 1 'no-such-mutant-*' > gen.log 2>&1 || true
mutmut results --all true > all.txt 2>&1 || true
if [ -n "$names_file" ]; then
    cp "$names_file" names.txt
else
    python - "$sample" "$seed" > names.txt <<'PY'
import random, sys
n, seed = int(sys.argv[1]), int(sys.argv[2])
names = sorted({line.split(":")[0].strip() for line in open("all.txt") if "__mutmut_" in line})
groups = {}
for name in names:
    top = ".".join(name.split(".")[:2])  # gpuvm.core, gpuvm.drm, gpuvm.observe, ...
    groups.setdefault(top, []).append(name)
rng = random.Random(seed)
per = n // len(groups)
picked = []
for top in sorted(groups):
    picked += rng.sample(groups[top], min(per, len(groups[top])))
print("\n".join(sorted(picked)))
PY
fi
cp names.txt "$results.names"
echo "$(wc -l < names.txt) mutants sampled of $(grep -c __mutmut_ all.txt) (seed $seed)"
# Pass 2: the sample (mutmut takes the names as arguments).
xargs mutmut run --max-children 1 < names.txt > run.log 2>&1 || true
mutmut results --all true > all-after.txt 2>&1 || true
grep -F -f names.txt all-after.txt > "$results" || true
python - "$results" <<'PY'
import collections, sys
c = collections.Counter(line.rsplit(":", 1)[1].strip() for line in open(sys.argv[1]) if ":" in line)
print(dict(c))
PY
echo "results in $results (scratch tree: $work)"
