"""Fault injection in a VM_BIND array: op ``k`` fails after ops ``0..k-1`` ran, so the
driver's own failure path is modelled and can be checked.

* msm (``drivers/gpu/drm/msm/msm_gem_vma.c``, ``vm_bind_job_prepare``): the ops are applied
  to the GPUVM tree one by one while the job is prepared; when op ``i`` fails with ``i > 0``
  the earlier ops are *not* undone, the VM is marked unusable (``msm_gem_vm_unusable``) and
  the error is returned.  Every later VM_BIND and SUBMIT on that context is ``-EPIPE``
  ("context is unusable", :class:`~gpuvm.core.errors.ContextUnusable`).  A failure of op 0
  changes nothing.  (The kernel had only queued the page-table writes of ops ``0..i-1``,
  which are dropped with the job: the tree and the page tables disagree, hence "unusable".
  The model emits the page-table events of those ops as it applies them.)
* xe: :func:`gpuvm.drm.xe.vm_bind` with ``fail_at`` (``vm_bind_ioctl_ops_unwind`` restores
  the VM exactly).

:func:`vm_bind_fault` is the msm form: it validates the whole array exactly as
:meth:`gpuvm.drm.file.DrmFile.vm_bind` does (a validation error changes nothing), then
applies ops ``0..k-1`` and fails op ``k`` with
:class:`~gpuvm.core.errors.InjectedFault`.
"""

from __future__ import annotations

import errno as E
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gpuvm.core.args import check_int
from gpuvm.core.errors import InjectedFault, ModeError, NotSupported
from gpuvm.drm.driver import DriverVm
from gpuvm.drm.file import BindMap, BindUnmap, _check_bind, _check_bind_args, _check_usable

if TYPE_CHECKING:
    from gpuvm.drm.file import DrmFile

__all__ = ["vm_bind_fault"]


def vm_bind_fault(
    file: DrmFile, ops: Sequence[BindMap | BindUnmap], fail_at: int, *, errno: int = E.ENOMEM
) -> None:
    """An msm VM_BIND whose op ``fail_at`` fails in ``vm_bind_job_prepare``: ops before it
    stay applied and, if there were any, the VM becomes unusable; raises
    :class:`~gpuvm.core.errors.InjectedFault` (``errno``)."""
    file._ioctl("VM_BIND")
    _check_bind_args(ops)
    device = file.device
    if device.flavour.name != "msm":
        name = device.flavour.name
        raise NotSupported(f"VM_BIND fault injection is modelled for msm (and xe), not {name}")
    if not device.policy.supports_vm_bind:
        raise ModeError(f"{device.policy.name} has no VM_BIND", errno=E.EINVAL)
    check_int("fail_at", fail_at, 0, max(len(ops) - 1, 0))
    check_int("errno", errno, 1, 4095)
    rule = file._gate("vm_bind")
    vm = file._vm_for(rule)
    assert isinstance(vm, DriverVm) and not vm.kernel_managed
    _check_usable(vm, "VM_BIND")
    reqs = file._bind_requests(vm, ops)
    _check_bind(vm, reqs)
    file._enter(rule, vm)
    if fail_at:
        vm.bind(reqs[:fail_at])
        vm.unusable = True
    raise InjectedFault(f"vm_bind_job_prepare: op {fail_at} failed (injected)", errno=errno)
