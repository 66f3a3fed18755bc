#!/bin/sh
# A sampled mutmut 3 run (not in CI: too slow).  Usage, from the repository root:
#   tools/mutation.sh [-n SAMPLE] [-s SEED] [-r RESULTS] [MODULE ...] [-- TEST ...]
#   tools/mutation.sh -w WORKDIR [-l NAMES] [-r RESULTS] [-- TEST ...]   # re-run
# MODULE: files or directories to mutate (default: gpuvm/core gpuvm/drm gpuvm/observe/checker
# gpuvm/observe/trace).  TEST: the test files run against them (default: the fast tests
# that exercise those modules, no long state machines).  mutmut 3 generates every mutant of
# the modules; the script then runs a reproducible sample: SAMPLE mutant names (default
# 200) drawn with random.Random(SEED) (default 15) from the sorted names, the same number
# from each top package (gpuvm.core, gpuvm.drm, gpuvm.observe).  Each mutant runs only the
# tests that cover its function (mutmut's stats pass), one at a time (--max-children 1).
# The tree is copied to a scratch directory (printed at the end), so mutmut's mutants/ and
# config stay out of the checkout.  -w re-uses such a directory: the current tests are
# copied in and the sampled names (or those of -l NAMES) run again, without regenerating
# the mutants (mutmut collects coverage for new tests itself); the code is the scratch
# tree's, only tests and docs are refreshed.  Per-mutant results go to
# RESULTS (default mutation-results.txt), the sampled names to RESULTS.names.
set -eu
root=$(pwd)
sample=200
seed=15
results="$root/mutation-results.txt"
names_file=""
work=""
while getopts n:s:r:l:w: opt; do
    case "$opt" in
        n) sample=$OPTARG ;;
        s) seed=$OPTARG ;;
        r) results=$(realpath -m "$OPTARG") ;;
        l) names_file=$(realpath "$OPTARG") ;;
        w) work=$(realpath "$OPTARG") ;;
        *) echo "usage: $0 [-n SAMPLE] [-s SEED] [-r RESULTS] [-l NAMES] [-w WORKDIR]" \
               "[MODULE ...] [-- TEST ...]" >&2; exit 2 ;;
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
        plan_reuse events_bus mutation_kills madvise lookups splitmerge_props trace_session_kills \
        atomic bind_faults xe; do
        if [ -f "$root/tests/test_$t.py" ]; then tests="$tests tests/test_$t.py"; fi
    done
    # A subprocess replay with a 60 s timeout: too slow under mutmut's tracing on a loaded
    # machine (it broke the stats pass once).
    tests="$tests --deselect=tests/test_api_contract.py::test_planes_trace_replay_one_line_exit_2"
fi
write_config() {
    {
        echo "[mutmut]"
        echo "source_paths="
        for m in $mods; do echo "    $m"; done
        echo "also_copy="
        echo "    legacy"
        echo "    docs"
        echo "pytest_add_cli_args_test_selection="
        for t in $tests; do echo "    $t"; done
    } > setup.cfg
}
export HYPOTHESIS_PROFILE=ci
if [ -n "$work" ]; then
    cd "$work"
    mods=$(sed -n '/^source_paths=/,/^also_copy=/p' setup.cfg | grep '^    ' | tr -d ' ' | tr '\n' ' ')
    rm -rf tests mutants/tests docs mutants/docs
    cp -r "$root/tests" tests
    cp -r "$root/tests" mutants/tests
    cp -r "$root/docs" docs
    cp -r "$root/docs" mutants/docs
    write_config
    [ -z "$names_file" ] || cp "$names_file" names.txt
    cp -rpn gpuvm mutants/
else
    work=$(mktemp -d)
    cp -r "$root/gpuvm" "$root/legacy" "$root/tests" "$root/docs" "$root/pyproject.toml" "$work/"
    cd "$work"
    write_config
    # The rest of gpuvm goes into mutants/ by hand, without overwriting: mutmut's also_copy
    # would copy the originals over the mutated modules on every run (same mtime), and
    # mutmut would then generate every mutant again (20 minutes on a loaded machine).
    mkdir -p mutants
    cp -rp gpuvm mutants/
    # Pass 1: generate every mutant and collect which tests cover which function (a name
    # that matches no mutant stops mutmut right after that, before any mutant runs).
    mutmut run --max-children 1 'no-such-mutant-*' > gen.log 2>&1 || true
    mutmut results --all true > all.txt 2>&1 || true
    if [ -n "$names_file" ]; then
        cp "$names_file" names.txt
    else
        python - "$sample" "$seed" > names.txt <<'PY'
import random
import sys

n, seed = int(sys.argv[1]), int(sys.argv[2])
names = sorted({line.split(":")[0].strip() for line in open("all.txt") if "__mutmut_" in line})
groups: dict[str, list[str]] = {}
for name in names:
    groups.setdefault(".".join(name.split(".")[:2]), []).append(name)  # gpuvm.core, ...
rng = random.Random(seed)
picked = []
for top in sorted(groups):
    picked += rng.sample(groups[top], min(n // len(groups), len(groups[top])))
print("\n".join(sorted(picked)))
PY
    fi
    echo "$(wc -l < names.txt) mutants sampled of $(grep -c __mutmut_ all.txt) (seed $seed)"
fi
cp names.txt "$results.names"
# Pass 2: the sample (mutmut takes the names as arguments and re-runs them).
xargs mutmut run --max-children 1 < names.txt > run.log 2>&1 || true
mutmut results --all true > all-after.txt 2>&1 || true
python - "$results" <<'PY'
import collections
import sys

picked = set(open("names.txt").read().split())
status = {}
for line in open("all-after.txt"):
    name, _, st = line.strip().rpartition(": ")
    if name in picked:
        status[name] = st
with open(sys.argv[1], "w") as out:
    out.writelines(f"{name}: {status.get(name, 'missing')}\n" for name in sorted(picked))
print(dict(collections.Counter(status.get(name, "missing") for name in picked)))
PY
echo "results in $results (scratch tree: $work)"
