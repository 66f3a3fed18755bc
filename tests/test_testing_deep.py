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
from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase
from hypothesis.stateful import run_state_machine_as_test

from gpuvm.testing import machine_class


def pair_db(policy: str, kind: str) -> ExampleDatabase | None:
    """One example database per (policy, machine): hypothesis keys a state machine's
    examples by its class source, the same ``Counted`` for every pair, so with one shared
    database a failure found in one pair would be replayed in the next, fail to reproduce
    there and be deleted before anyone saw it."""
    if settings().database is None:
        return None
    return DirectoryBasedExampleDatabase(os.path.join(".hypothesis", "deep", f"{policy}-{kind}"))


CORRECT = ["legacy_pre_6_17", "gpuvm_eager", "gpuvm_vma_ref", "separate_tracker"]
KERNEL = {"gpuvm_eager": "mainline"}
"""``gpuvm_eager`` defaults to ``msm-pre-vma-ref``, whose eager unpin (fixed by 3bebfd53af0f)
the legacy and prime machines report as ``unmapped-scanout``: its policy is checked under the
fixed kernel."""

pytestmark = pytest.mark.skipif(
    os.environ.get("HYPOTHESIS_PROFILE") != "deep",
    reason="long run: set HYPOTHESIS_PROFILE=deep",
)


@pytest.mark.parametrize("kind", ["vm_bind", "legacy", "prime"])
@pytest.mark.parametrize("policy", CORRECT)
def test_deep(policy: str, kind: str) -> None:
    n = int(os.environ.get("GPUVM_DEEP_EXAMPLES", "0")) or settings().max_examples
    base = machine_class(policy, kind, kernel=KERNEL.get(policy))
    runs = [0]

    class Counted(base):  # type: ignore[misc,valid-type]
        def teardown(self) -> None:
            runs[0] += 1
            super().teardown()

    t0 = time.perf_counter()
    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        Counted, settings=settings(settings.default, max_examples=n, database=pair_db(policy, kind))
    )
    dt = time.perf_counter() - t0
    print(f"\n{policy} x {kind}: {runs[0]} sequences in {dt:.0f} s")
    assert runs[0] >= n, f"hypothesis ran {runs[0]} sequences, fewer than {n}"
