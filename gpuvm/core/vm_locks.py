"""Lock-held checks, IMMEDIATE_MODE and fence-signalling sections of a :class:`GpuVm`.

Models what ``drivers/gpu/drm/drm_gpuvm.c`` asserts with lockdep rather than enforces:
``drm_gem_gpuva_assert_lock_held`` (the GEM's ``gpuva.lock`` under IMMEDIATE_MODE, else its
``dma_resv``), ``drm_gpuvm_resv_assert_held`` (the VM's ``resv`` guarding the extobj / evict
lists of a RESV_PROTECTED VM), ``drm_gpuvm_immediate_mode``, and the rule that nothing in a
``dma_fence_begin_signalling`` section may allocate, sleep or take a reservation lock.  The
lock checks run only with ``GpuVm(lock_checks=True)``.  These are the bodies of the
``GpuVm`` methods of the same names (see :mod:`gpuvm.core.vm`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from gpuvm.core.errors import (
    FenceSignallingViolation,
    ImmediateModeMismatch,
    LockMisuse,
    LockNotHeld,
    NotImmediateMode,
)
from gpuvm.core.gem import GemObject, Lock
from gpuvm.core.vmbo import VmBo

if TYPE_CHECKING:
    from gpuvm.core.vm import GpuVm


def check_immediate(vm: GpuVm, what: str) -> None:
    """Refuse a deferred operation on a VM without IMMEDIATE_MODE (kernel: WARN)."""
    if not vm._immediate:
        raise NotImmediateMode(f"{what} on {vm.name}, which is not in IMMEDIATE_MODE")


def _no_fence(vm: GpuVm, what: str) -> None:
    if vm.fence_depth:
        raise FenceSignallingViolation(
            f"{what} in a fence-signalling section of {vm.name} (it may allocate, "
            "sleep or take reservation locks)"
        )


def gem_lock(vm: GpuVm, obj: GemObject) -> Lock:
    """The lock guarding ``obj``'s VmBo list for this VM (``drm_gem_gpuva_assert_lock_held``):
    the GEM's own ``gpuva.lock`` under IMMEDIATE_MODE, else its ``resv``."""
    return obj.gpuva_lock if vm._immediate else obj.resv


def need_gem_lock(vm: GpuVm, obj: GemObject | None, what: str) -> None:
    """With ``lock_checks``: refuse ``what`` unless ``obj``'s gpuva lock is held."""
    if vm.lock_checks and obj is not None:
        lk = vm.gem_lock(obj)
        if not lk.held:
            raise LockNotHeld(f"{what} on {obj!r} without {lk!r} held")


def need_vm_resv(vm: GpuVm, what: str) -> None:
    """With ``lock_checks`` on a RESV_PROTECTED VM: refuse ``what`` unless the VM's
    ``resv`` is held (it guards the extobj / evict lists there)."""
    if vm.lock_checks and vm._protected and not vm.resv.held:
        raise LockNotHeld(f"{what} on RESV_PROTECTED {vm.name} without its resv held")


def need_obj_resv(vm: GpuVm, obj: GemObject, what: str) -> None:
    """With ``lock_checks``: refuse ``what`` unless ``obj.resv`` is held."""
    if vm.lock_checks and not obj.resv.held:
        raise LockNotHeld(f"{what} on {obj!r} without {obj.resv!r} held")


def _need_destroy_locks(vm: GpuVm, vm_bo: VmBo, what: str) -> None:
    """What ``drm_gpuvm_bo_destroy`` asserts: the GEM's gpuva lock, and the VM's resv
    under RESV_PROTECTED."""
    vm.need_gem_lock(vm_bo.obj, what)
    vm.need_vm_resv(what)


def _check_lock_mode(vm: GpuVm, obj: GemObject) -> None:
    """Every VM listing ``obj`` must agree on IMMEDIATE_MODE: it decides which lock
    guards the GEM's VmBo list (``gpuva.lock`` or ``resv``), and VMs disagreeing on it
    would guard one list with two locks (the kernel documents the rule, never checks
    it).  Raises :class:`ImmediateModeMismatch` before a new VmBo would be listed."""
    mine = vm._immediate
    for vm_bo in obj.vm_bos:
        other = vm_bo.vm
        if other is not vm and other._immediate is not mine:
            raise ImmediateModeMismatch(
                f"{obj!r} is listed by {other.name} "
                f"({'with' if not mine else 'without'} IMMEDIATE_MODE); {vm.name} "
                f"({'with' if mine else 'without'} it) cannot share its VmBo list"
            )


def _need_takes_gem_lock(vm: GpuVm, obj: GemObject, what: str) -> None:
    """A deferred call locks the GEM's gpuva mutex itself: already held is a
    self-deadlock."""
    if vm.lock_checks and obj.gpuva_lock.held:
        raise LockMisuse(f"{what} takes {obj.gpuva_lock!r}, which is already held")


@contextmanager
def fence_signalling(vm: GpuVm) -> Iterator[GpuVm]:
    """A fence-signalling critical section (``dma_fence_begin_signalling`` /
    ``_end_signalling``, e.g. a job's ``run_job``) for work on this VM: inside it,
    anything that may allocate, sleep or take a reservation lock is refused with
    :class:`FenceSignallingViolation` (op-list creation, ``bo_create`` / ``bo_obtain``,
    non-deferred VmBo puts and unlinks, ``apply``/``bind``, locking, ``validate``,
    deferred cleanup).  Insert, remove, link, the callback ``sm_map``/``sm_unmap`` and
    the deferred ``put_deferred`` / ``unlink_defer`` are allowed."""
    vm.fence_depth += 1
    try:
        yield vm
    finally:
        vm.fence_depth -= 1
