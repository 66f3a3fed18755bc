"""Every mutant (a deliberately broken policy or core variant, :mod:`gpuvm.testing.mutants`) makes
its state machine fail within the CI example budget: the checks can fail.  A check mutant
(a check that stopped detecting something) makes its named direct test fail instead.  Shrinking is
off (only finding matters here) and no example database is used, so each run is the
derandomized CI search from scratch."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from gpuvm import compiled
from gpuvm.core.errors import NotSupported
from gpuvm.testing import machine_class
from gpuvm.testing.api_machine import api_machine_class
from gpuvm.testing.mutants import MUTANTS, Mutant


def _budget() -> settings:
    return settings(settings.default, database=None, phases=[Phase.explicit, Phase.generate])


def test_every_issue_mutant_is_registered() -> None:
    assert {
        "forget_unlink_on_remap",
        "drop_vm_bo_buffer_ref",
        "skip_unmap_at_handle_close",
        "cache_imports_by_fd",
        "leave_freed_node_in_va_index",
        "leak_refs_on_failed_bind",
    } <= set(MUTANTS)


MACHINE_MUTANTS = [m for m in MUTANTS.values() if m.machine != "checks"]
CHECK_MUTANTS = [m for m in MUTANTS.values() if m.machine == "checks"]


def _skip_if_pure_only(mutant: Mutant) -> None:
    if mutant.pure_only and compiled():
        pytest.skip(
            f"{mutant.name} patches GpuVm methods the compiled core calls natively: it runs "
            "in the pure build only (docs/compiled.md)"
        )


@pytest.mark.parametrize("mutant", MACHINE_MUTANTS, ids=[m.name for m in MACHINE_MUTANTS])
def test_machine_catches_mutant(mutant: Mutant) -> None:
    _skip_if_pure_only(mutant)
    machine: Any = (
        api_machine_class(mutant.policy)
        if mutant.machine == "api"
        else machine_class(mutant.policy, mutant.machine)
    )
    with mutant.active(), pytest.raises(AssertionError) as info:
        run_state_machine_as_test(machine, settings=_budget())  # type: ignore[no-untyped-call]
    text = str(info.value)
    assert "FAIL" in text or "changed the model" in text, text


@pytest.mark.parametrize("mutant", CHECK_MUTANTS, ids=[m.name for m in CHECK_MUTANTS])
def test_direct_test_catches_check_mutant(mutant: Mutant) -> None:
    """A check mutant makes its named direct test fail; without it the test passes."""
    assert mutant.caught_by is not None and mutant.patch is not None
    _skip_if_pure_only(mutant)
    path, name = mutant.caught_by.split("::")
    module = importlib.import_module(path.removeprefix("tests/").removesuffix(".py"))
    test = getattr(module, name)
    test()
    with mutant.active(), pytest.raises((AssertionError, pytest.fail.Exception)):
        test()
    test()


@pytest.mark.parametrize("mutant", [m for m in MUTANTS.values() if m.patch is not None], ids=str)
def test_patches_are_undone(mutant: Mutant) -> None:
    _skip_if_pure_only(mutant)
    import gpuvm.drm.file
    import gpuvm.drm.prime
    from gpuvm.core.vm import GpuVm
    from gpuvm.drm.device import Device
    from gpuvm.drm.dmabuf import DmaBuf, Exporter
    from gpuvm.observe.checker import LifetimeChecker

    def state() -> tuple[object, ...]:
        return (
            *(GpuVm.__dict__[n] for n in ("apply", "unlink", "bo_create", "_remove", "bind")),
            gpuvm.drm.file._check_bind,
            gpuvm.drm.prime.fd_to_handle,
            gpuvm.drm.file.check_handle,  # type: ignore[attr-defined]
            Device.plane,
            GpuVm.__dict__["check_invariants"],
            GpuVm.__dict__["_no_fence"],
            DmaBuf.check_invariants,
            Exporter.p2p,
            LifetimeChecker.report,
            gpuvm.drm.file.DrmFile._new_handle,
            gpuvm.drm.file.DrmFile._close_handle,
        )

    before = state()
    with mutant.active():
        assert state() != before
    assert state() == before


PURE_ONLY = [m for m in MUTANTS.values() if m.pure_only]


@pytest.mark.parametrize("mutant", PURE_ONLY, ids=[m.name for m in PURE_ONLY])
def test_pure_only_mutants_refuse_the_compiled_build(mutant: Mutant) -> None:
    """A mutant whose patch the compiled core would not see refuses to run there (so a run
    never reports an unbroken model as the mutant), and runs in the pure build."""
    import gpuvm.core.vm

    before = dict(vars(gpuvm.core.vm.GpuVm))
    if compiled():
        with pytest.raises(NotSupported, match="pure-Python build"):
            mutant.active()
    else:
        with mutant.active():
            assert dict(vars(gpuvm.core.vm.GpuVm)) != before
    assert dict(vars(gpuvm.core.vm.GpuVm)) == before


def test_the_core_variants_are_the_pure_only_ones() -> None:
    """Exactly the mutants that patch ``GpuVm`` methods the core calls from compiled code
    are pure-only; the others (policies, driver functions, checks) run in both builds."""
    assert {m.name for m in PURE_ONLY} == {
        "forget_unlink_on_remap",
        "drop_vm_bo_buffer_ref",
        "leave_freed_node_in_va_index",
        "split_drops_attributes",
        "apply_in_fence_section",
    }
