"""The long run: every correct built-in policy through every machine under the ``deep``
hypothesis profile (10k sequences per machine).  Skipped unless selected::

    HYPOTHESIS_PROFILE=deep python -m pytest tests/test_testing_deep.py

``GPUVM_DEEP_EXAMPLES=N`` overrides the example count (e.g. for a shorter check)."""

from __future__ import annotations

import os

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
    run_state_machine_as_test(
        machine_class(policy, kind), settings=settings(settings.default, max_examples=n)
    )
