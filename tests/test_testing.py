"""gpuvm.testing: the machines pass every correct built-in policy (a reduced budget here;
``tests/test_testing_deep.py`` is the long run), a failing run reports a replayable trace
that reproduces the failure, the strategies stay inside their windows, and the module
refuses to import without hypothesis while the core never imports it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from gpuvm import GemObject, GpuVm, MapRequest
from gpuvm.observe.trace import replay
from gpuvm.testing import (
    PAGE,
    bind_requests,
    buffers,
    drm_files,
    machine_class,
    machine_for,
    machines_for,
    map_requests,
    unmap_requests,
)
from gpuvm.testing.mutants import MUTANTS

CORRECT = ["legacy_pre_6_17", "gpuvm_eager", "gpuvm_vma_ref", "separate_tracker"]
KERNEL = {"gpuvm_eager": "mainline"}
"""``gpuvm_eager`` defaults to ``msm-pre-vma-ref``, whose eager unpin (fixed by 3bebfd53af0f)
the legacy and prime machines report as ``unmapped-scanout``: its policy is checked under the
fixed kernel."""
KINDS = ["vm_bind", "legacy", "prime"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("policy", CORRECT)
def test_correct_policy_passes(policy: str, kind: str) -> None:
    run_state_machine_as_test(
        machine_class(policy, kind, kernel=KERNEL.get(policy)),
        settings=settings(settings.default, max_examples=15, database=None),
    )


def test_prime_machine_catches_gpuvm_eager_under_its_default_kernel() -> None:
    """Under ``msm-pre-vma-ref`` the eager unpin unmaps a buffer another framebuffer still
    scans out: the machine must find that (derandomized, so the same search every run)."""
    with pytest.raises(AssertionError, match="unmapped-scanout"):
        run_state_machine_as_test(
            machine_class("gpuvm_eager", "prime"),
            settings=settings(
                settings.default,
                max_examples=2000,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
            ),
        )


def test_machine_kernel_profile_reaches_every_device() -> None:
    m = machine_class("gpuvm_eager", "prime", kernel="mainline")()
    assert m.__class__.__name__ == "PrimeMachine_gpuvm_eager_mainline"
    m.setup()
    assert {m.s.obj(d).kernel.name for d in m.devices} == {"mainline"}
    d = machine_class("gpuvm_eager", "prime")()
    d.setup()
    assert {d.s.obj(x).kernel.name for x in d.devices} >= {"msm-pre-vma-ref"}


def test_machine_for_is_a_testcase() -> None:
    import unittest

    case = machine_for("gpuvm_vma_ref", "prime")
    assert issubclass(case, unittest.TestCase)
    assert case.__qualname__ == "PrimeMachine_gpuvm_vma_ref.TestCase"
    names = [c.__qualname__.split("_")[0] for c in machines_for("gpuvm_eager")]
    assert names == ["VmBindMachine", "LegacyMachine", "PrimeMachine"]


def _failure(name: str) -> AssertionError:
    m = MUTANTS[name]
    with m.active():
        try:
            run_state_machine_as_test(
                machine_class(m.policy, m.machine),
                settings=settings(
                    settings.default, database=None, phases=[Phase.explicit, Phase.generate]
                ),
            )
        except AssertionError as e:
            return e
    raise AssertionError("the mutant was not caught")


def test_failing_run_reports_a_trace_that_replays_the_failure() -> None:
    err = _failure("skip_unmap_at_handle_close")
    notes = "\n".join(getattr(err, "__notes__", []))
    assert "replayable trace (policy skip_unmap_at_handle_close" in notes
    start = notes.index('{"format": "gpuvm-trace"')
    trace = notes[start : notes.index("\n\n", start)] + "\n"
    m = MUTANTS["skip_unmap_at_handle_close"]
    result = replay(trace, policies={"skip_unmap_at_handle_close": m.policy})
    assert not result.checker.ok
    assert "the handle is closed" in result.checker.verdict()
    fixed = replay(trace, policies={"skip_unmap_at_handle_close": "gpuvm_vma_ref"})
    assert fixed.checker.ok, fixed.checker.verdict()


@settings(max_examples=60)
@given(
    req=map_requests(st.one_of(st.none(), buffers()), start=1 << 20, pages=16),
    un=unmap_requests(start=1 << 20, pages=16),
)
def test_request_strategies_stay_in_their_window(req: MapRequest, un: object) -> None:
    for r in (req, un):
        addr, rng = r.addr, r.range  # type: ignore[attr-defined]
        assert addr >= 1 << 20 and addr + rng <= (1 << 20) + 16 * PAGE
        assert rng > 0 and rng % PAGE == 0
    if req.obj is not None:
        assert req.offset < req.obj.size


@settings(max_examples=40)
@given(reqs=bind_requests(st.sampled_from([None, GemObject(8 * PAGE)]), pages=16))
def test_bind_requests_apply_on_a_vm(reqs: list[object]) -> None:
    vm = GpuVm(0, 16 * PAGE, vm_free=lambda vm: None)
    vm.bind(reqs)  # type: ignore[arg-type]
    vm.check_invariants()


@settings(max_examples=10, phases=[Phase.generate])
@given(f=drm_files("gpuvm_vma_ref", st.sampled_from(["legacy", "vm_bind"])))
def test_drm_files_are_in_their_mode(f: object) -> None:
    assert f.mode in ("legacy", "vm_bind")  # type: ignore[attr-defined]


def test_import_without_hypothesis_is_a_clear_error() -> None:
    code = (
        "import sys\n"
        "sys.modules['hypothesis'] = None\n"
        "import gpuvm, gpuvm.observe.checker, gpuvm.observe.trace, gpuvm.testing.mutants\n"
        "import gpuvm.testing  # the package itself imports without hypothesis\n"
        "try:\n"
        "    from gpuvm.testing import machine_for\n"
        "except ImportError as e:\n"
        "    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "ERR gpuvm.testing needs hypothesis" in out.stdout
    assert "pip install" in out.stdout


def test_core_and_checker_do_not_import_hypothesis() -> None:
    code = (
        "import sys, gpuvm, gpuvm.observe.checker, gpuvm.observe.trace\n"
        "import gpuvm.testing.mutants, gpuvm.study.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'hypothesis'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
