"""The driver layer, kernel-exact: one test per deviation from the kernel found by reading
its sources (the kernel function and the tree it was read at are named in each test).  Each
test fails on the behaviour before the fix.  Every refusal is checked with a snapshot
before and after."""

from __future__ import annotations

import errno as E

import pytest

from gpuvm.core.errors import GpuvmError, ModeError
from gpuvm.drm.device import Device, snapshot
from gpuvm.drm.kernels import DEFAULT_KERNEL, KERNELS, KernelProfile

MIB = 1 << 20


def refused(dev: Device, errno: int, fn: object, *args: object) -> GpuvmError:
    """Call ``fn(*args)``, expect a refusal with ``errno`` that changes nothing."""
    before = snapshot(dev)
    with pytest.raises(GpuvmError) as ei:
        fn(*args)  # type: ignore[operator]
    assert ei.value.errno == errno, ei.value
    assert snapshot(dev) == before
    return ei.value


# --- kernel profiles ------------------------------------------------------------------------


def test_kernel_profiles_and_defaults() -> None:
    """Three profiles; the default is mainline, except for the pre-6.17 policy."""
    assert {"msm-pre-6.17", "6.17", "mainline"} <= set(KERNELS)
    assert DEFAULT_KERNEL == "mainline"
    assert Device("msm", "gpuvm_vma_ref").kernel.name == "mainline"
    assert Device("msm", "legacy_pre_6_17").kernel.name == "msm-pre-6.17"
    assert Device("msm", "gpuvm_vma_ref", kernel="6.17").kernel is KERNELS["6.17"]
    custom = KernelProfile("x", True, False, False, False)
    assert Device("nouveau", kernel=custom).kernel is custom
    with pytest.raises(ValueError, match="unknown kernel"):
        Device("msm", kernel="5.4")


def test_snapshot_records_the_kernel() -> None:
    a = Device("msm", "gpuvm_vma_ref", kernel="6.17", name="g")
    b = Device("msm", "gpuvm_vma_ref", kernel="mainline", name="g")
    assert snapshot(a)[0][1] == "6.17" and snapshot(b)[0][1] == "mainline"


def test_no_en_vm_bind_before_the_series() -> None:
    """``adreno_set_param`` before the 6.17 series has no ``MSM_PARAM_EN_VM_BIND``:
    ``-EINVAL``, even with a policy that would allow VM_BIND."""
    dev = Device("msm", "gpuvm_vma_ref", kernel="msm-pre-6.17")
    f = dev.open()
    err = refused(dev, E.EINVAL, f.set_param_vm_bind)
    assert isinstance(err, ModeError)
    Device("msm", "gpuvm_vma_ref", kernel="6.17").open().set_param_vm_bind()
