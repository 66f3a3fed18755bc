"""The API fuzz machine (gpuvm.testing.api_machine) under every built-in policy: every
ill-formed call is refused with a library error and the model unchanged, and invariants and
the lifetime checker stay clean.  Bounded by the ``ci`` profile, deep under ``deep``."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from gpuvm import POLICIES
from gpuvm.testing.api_machine import api_machine_class

# The two policies built to be broken (weak_ref_quirk, gpuvm_legacy_trigger) fail the
# lifetime checker by design; the fuzz machine is about argument refusals.
SOUND = [p for p in POLICIES if p not in ("weak_ref_quirk", "gpuvm_legacy_trigger")]


@pytest.mark.parametrize("policy", SOUND)
def test_api_fuzz(policy: str) -> None:
    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        api_machine_class(policy), settings=settings(settings.default, stateful_step_count=30)
    )
