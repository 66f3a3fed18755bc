"""The long run: every correct built-in policy through every machine under the ``deep``
hypothesis profile (10k sequences per machine).  Skipped unless selected::

    HYPOTHESIS_PROFILE=deep python -m pytest tests/test_testing_deep.py

``GPUVM_DEEP_EXAMPLES=N`` overrides the example count (e.g. for a shorter check).  Each
test counts the sequences it ran (every finished sequence tears its machine down) and
fails if hypothesis stopped short of the count asked for; ``-s`` shows the counts."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from gpuvm.testing import machine_class

CORRECT = ["legacy_pre_6_17", "gpuvm_eager", "gpuvm_vma_ref", "separate_tracker"]

pytestmark = pytest.mark.skipif(
    os.environ.get("HYPOTHESIS_PROFILE") != "deep",
    reason="long run: set HYPOTHESIS_PROFILE=deep",
)


@pytest.mark.parametrize("kind", ["vm_bind", "legacy", "prime"])
@pytest.mark.parametrize("policy", CORRECT)
def test_deep(policy: str, kind: str) -> None:
    n = int(os.environ.get("GPUVM_DEEP_EXAMPLES", "0")) or settings.default.max_examples
    base = machine_class(policy, kind)
    runs = [0]

    class Counted(base):  # type: ignore[misc,valid-type]
        def teardown(self) -> None:
            runs[0] += 1
            super().teardown()

    t0 = time.perf_counter()
    run_state_machine_as_test(Counted, settings=settings(settings.default, max_examples=n))
    dt = time.perf_counter() - t0
    print(f"\n{policy} x {kind}: {runs[0]} sequences in {dt:.0f} s")
    assert runs[0] >= n, f"hypothesis ran {runs[0]} sequences, fewer than {n}"
