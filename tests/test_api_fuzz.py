"""The API fuzz machine (gpuvm.testing.api_machine) under every built-in policy: every
ill-formed call is refused with a library error and the model unchanged, and invariants and
the lifetime checker stay clean.  Bounded by the ``ci`` profile, deep under ``deep``.

Each test counts the sequences it ran (every finished sequence tears its machine down) and
fails if hypothesis stopped short of the count asked for; ``-s`` shows the counts."""

from __future__ import annotations

import time

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test
from test_testing_deep import pair_db

from gpuvm import POLICIES
from gpuvm.testing.api_machine import api_machine_class

# The two policies built to be broken (weak_ref_quirk, gpuvm_legacy_trigger) fail the
# lifetime checker by design; the fuzz machine is about argument refusals.
SOUND = [p for p in POLICIES if p not in ("weak_ref_quirk", "gpuvm_legacy_trigger")]


@pytest.mark.parametrize("policy", SOUND)
def test_api_fuzz(policy: str) -> None:
    base = api_machine_class(policy)
    runs = [0]

    class Counted(base):  # type: ignore[misc,valid-type]
        def teardown(self) -> None:
            runs[0] += 1
            super().teardown()

    n = settings().max_examples
    t0 = time.perf_counter()
    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        Counted,
        settings=settings(
            settings.default, stateful_step_count=30, database=pair_db(policy, "api")
        ),
    )
    print(f"\napi fuzz {policy}: {runs[0]} sequences in {time.perf_counter() - t0:.0f} s")
    assert runs[0] >= n, f"hypothesis ran {runs[0]} sequences, fewer than {n}"
