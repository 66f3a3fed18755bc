"""msm VM-private buffers (``MSM_BO_NO_SHARE``, ``msm_gem_new_handle``): they share the
file's VM reservation (never an extobj there), cannot be exported (``msm_gem_prime_export``
``-EPERM``) nor pinned by the kernel (``get_and_pin_iova_range_locked`` ``-EINVAL``: legacy
SUBMIT, scanout).  The xe form is tested in tests/test_xe.py."""

from __future__ import annotations

import errno as E

import pytest

from gpuvm.core.errors import GpuvmError, InvalidValue, PermissionDenied
from gpuvm.drm.device import Device, snapshot
from gpuvm.drm.driver import DriverVm
from gpuvm.drm.file import BindMap
from gpuvm.drm.private import msm_gem_new_no_share

MB = 1 << 20
BASE = 0x1_0000_0000


def _refused(dev: Device, err: type[GpuvmError], errno: int, call: object, *args: object) -> None:
    before = snapshot(dev)
    with pytest.raises(err) as exc:
        call(*args)  # type: ignore[operator]
    assert exc.value.errno == errno
    assert snapshot(dev) == before


def test_no_share_bo_shares_the_vm_resv_and_is_not_external() -> None:
    dev = Device("msm", "gpuvm_vma_ref", planes=0)
    f = dev.open()
    f.set_param_vm_bind()
    h = msm_gem_new_no_share(f, MB)
    g = f.create_bo(MB)
    vm = f.vm
    assert isinstance(vm, DriverVm) and f.bo(h).resv is vm.resv
    f.vm_bind([BindMap(BASE, MB, h), BindMap(BASE + MB, MB, g)])
    assert [vb.obj for vb in vm.extobj] == [f.bo(g)]
    dev.check_invariants()
    f.close()
    assert dev.close() == []


def test_no_share_bo_cannot_be_exported_or_pinned() -> None:
    dev = Device("msm", "gpuvm_vma_ref", planes=1)
    f = dev.open()
    h = msm_gem_new_no_share(f, 8 * MB)  # a legacy context: its VM is created here
    assert f.vm is not None
    _refused(dev, PermissionDenied, E.EPERM, f.prime_handle_to_fd, h)
    _refused(dev, InvalidValue, E.EINVAL, f.submit, [h])
    fb = f.add_fb(h)
    _refused(dev, InvalidValue, E.EINVAL, f.page_flip, dev.plane(), fb)
    _refused(dev, InvalidValue, E.EINVAL, f.atomic, [(dev.plane(), fb)])
    f.submit([f.create_bo(MB)])  # ordinary buffers still work
    dev.retire_all()
    dev.check_invariants()


def test_no_share_needs_the_6_17_series_and_per_process_pgtables() -> None:
    old = Device("msm", "legacy_pre_6_17", planes=0)
    _refused(old, InvalidValue, E.EINVAL, msm_gem_new_no_share, old.open(), MB)
    shared = Device("msm", planes=0, per_process_pgtables=False)
    _refused(shared, InvalidValue, E.EINVAL, msm_gem_new_no_share, shared.open(), MB)
