#!/bin/sh
# A sampled mutmut 3 run (not in CI: too slow).  Usage, from the repository root:
#   tools/mutation.sh [MODULE ...] [-- TEST ...]
# The tree is copied to a scratch directory, so mutmut's mutants/ and config stay out of
# the checkout.  Default sample: gpuvm/core/args.py against the tests that exercise it.
set -eu
root=$(pwd)
mods=""
tests=""
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; tests="$*"; break ;;
        *) mods="$mods $1"; shift ;;
    esac
done
[ -n "$mods" ] || mods="gpuvm/core/args.py"
[ -n "$tests" ] || tests="tests/test_api_contract.py tests/test_vm_errors.py"
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
HYPOTHESIS_PROFILE=ci mutmut run --max-children 1 || true
mutmut results --all true > "$root/mutation-results.txt" || true
echo "results in $root/mutation-results.txt (scratch tree: $work)"
