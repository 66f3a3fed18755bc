"""Fault injection in a VM_BIND array: op k fails after ops 0..k-1 ran.  msm
(``vm_bind_job_prepare`` in msm_gem_vma.c): they are not undone, the VM becomes unusable
(for k > 0) and later SUBMIT / VM_BIND are ``-EPIPE``.  nouveau
(``nouveau_uvmm_bind_job_submit``) and xe (tests/test_xe.py) unwind."""

from __future__ import annotations

import errno as E

import pytest

from gpuvm.core.errors import ContextUnusable, InjectedFault, InvalidRange, NotSupported
from gpuvm.drm.bind_faults import vm_bind_fault
from gpuvm.drm.device import Device, snapshot
from gpuvm.drm.driver import DriverVm
from gpuvm.drm.file import BindMap, BindUnmap, DrmFile
from gpuvm.observe.checker import LifetimeChecker

MB = 1 << 20
BASE = 0x1_0000_0000


def _msm() -> tuple[Device, DrmFile, int, int]:
    dev = Device("msm", "gpuvm_vma_ref", planes=0)
    f = dev.open()
    f.set_param_vm_bind()
    h, g = f.create_bo(4 * MB), f.create_bo(MB)
    f.vm_bind([BindMap(BASE, 4 * MB, h)])
    return dev, f, h, g


def _ops(h: int, g: int) -> list[BindMap | BindUnmap]:
    return [BindMap(BASE + MB, MB, g), BindUnmap(BASE, MB), BindMap(BASE + 8 * MB, MB, h)]


def test_failure_after_some_ops_keeps_them_and_kills_the_context() -> None:
    dev, f, h, g = _msm()
    checker = LifetimeChecker(dev)
    ops = _ops(h, g)
    with pytest.raises(InjectedFault) as exc:
        vm_bind_fault(f, ops, 2)
    assert exc.value.errno == E.ENOMEM
    vm = f.vm
    assert isinstance(vm, DriverVm) and vm.unusable
    # ops 0 and 1 ran (not undone): g mapped at BASE+1M, [BASE, BASE+1M) unmapped
    assert vm.layout() == [
        (BASE + MB, MB, f.bo(g), 0),
        (BASE + 2 * MB, 2 * MB, f.bo(h), 2 * MB),
    ]
    dev.check_invariants()
    assert checker.check() == []
    before = snapshot(dev)
    for call in (lambda: f.vm_bind([BindUnmap(BASE, 4 * MB)]), f.exec):
        with pytest.raises(ContextUnusable) as err:
            call()
        assert err.value.errno == E.EPIPE
        assert snapshot(dev) == before
    f.close()
    assert checker.after_file_close(f) == []
    assert dev.close() == []
    assert checker.after_teardown(dev) == []


def test_failure_of_the_first_op_changes_nothing() -> None:
    dev, f, h, g = _msm()
    before = snapshot(dev)
    with pytest.raises(InjectedFault):
        vm_bind_fault(f, _ops(h, g), 0, errno=E.EFAULT)
    assert snapshot(dev) == before
    f.vm_bind(_ops(h, g))  # still usable
    dev.check_invariants()


def test_validation_errors_come_first_and_change_nothing() -> None:
    dev, f, h, g = _msm()
    before = snapshot(dev)
    with pytest.raises(InvalidRange):
        vm_bind_fault(f, [*_ops(h, g), BindMap(BASE + 0x800, MB, g)], 2)
    assert snapshot(dev) == before
    xe_file = Device("xe", planes=0).open()
    with pytest.raises(NotSupported):
        vm_bind_fault(xe_file, [BindMap(0x10_0000_0000, MB)], 0)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_nouveau_unwinds_the_prepared_ops(k: int) -> None:
    """``nouveau_uvmm_bind_job_submit``: a failure while preparing op k jumps to ``unwind``
    (``nouveau_uvmm_sm_*_prepare_unwind`` in reverse): the VM is exactly as before and stays
    usable."""
    dev = Device("nouveau", "gpuvm_vma_ref", planes=0)
    f = dev.open()
    f.vm_init()
    base = dev.context_window[0]
    h, g = f.create_bo(4 * MB), f.create_bo(MB)
    f.vm_bind([BindMap(base, 4 * MB, h)])
    ops: list[BindMap | BindUnmap] = [
        BindMap(base + MB, MB, g),
        BindUnmap(base, MB),
        BindMap(base + 8 * MB, MB, h),
    ]
    before = snapshot(dev)
    checker = LifetimeChecker(dev)
    with pytest.raises(InjectedFault):
        vm_bind_fault(f, ops, k)
    assert snapshot(dev) == before
    dev.check_invariants()
    assert checker.check() == []
    f.vm_bind(ops)
    dev.check_invariants()
