"""VmBo management on the VM's side: create, find, obtain, link, unlink, deferred cleanup.

Models ``drm_gpuvm_bo_create`` / ``drm_gpuvm_bo_find`` / ``drm_gpuvm_bo_obtain`` (renamed
``drm_gpuvm_bo_obtain_locked`` in the newest tree) / ``drm_gpuvm_bo_obtain_prealloc`` (both
versions, by ``GpuVm(obtain_locked=...)``), ``drm_gpuvm_is_extobj``, ``drm_gpuvm_bo_evict``,
``drm_gpuva_link`` / ``drm_gpuva_unlink`` / ``drm_gpuva_unlink_defer`` and
``drm_gpuvm_bo_deferred_cleanup`` of ``drivers/gpu/drm/drm_gpuvm.c``.  The VmBo itself (its
reference count, puts, the extobj / evict list entries, zombies) is
:class:`gpuvm.core.vmbo.VmBo`.  These are the bodies of the ``GpuVm`` methods of the same
names (see :mod:`gpuvm.core.vm`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuvm.core.errors import LinkError, LockMisuse, NotInserted
from gpuvm.core.events import RefGot, VaLinked, VaUnlinked, VmBoCreated
from gpuvm.core.gem import GemObject
from gpuvm.core.refcount import CALLER
from gpuvm.core.va import Va
from gpuvm.core.vmbo import VmBo

if TYPE_CHECKING:
    from gpuvm.core.vm import GpuVm


def bo_create(vm: GpuVm, obj: GemObject, holder: object = CALLER) -> VmBo:
    """``drm_gpuvm_bo_create``: a new VmBo (refcount 1 for ``holder``, holding the VM
    and ``obj``), **not** on the GEM's list."""
    if vm.freed or obj.freed:
        vm.check_alive("bo_create")
        obj.check_alive("bo_create")
    if vm.fence_depth:
        vm._no_fence("drm_gpuvm_bo_create")
    vm_bo = VmBo(vm, obj)
    vm_bo.refs.get(holder)
    vm.refs.get(vm_bo)
    obj.get(vm_bo)
    vm.vm_bos[vm_bo] = None
    route = vm.bus.route
    if route[VmBoCreated]:
        vm.bus.emit(VmBoCreated(vm_bo))
    if route[RefGot]:
        vm.bus.emit(RefGot(vm_bo, holder))
        vm.bus.emit(RefGot(vm, vm_bo))
    return vm_bo


def bo_find(vm: GpuVm, obj: GemObject, holder: object = CALLER) -> VmBo | None:
    """``drm_gpuvm_bo_find``: the listed VmBo of ``obj`` in this VM, +1 for ``holder``."""
    if obj.freed:
        obj.check_alive("bo_find")
    if vm.lock_checks:
        vm.need_gem_lock(obj, "drm_gpuvm_bo_find")
    vm_bo = obj.vm_bo_for(vm)
    if vm_bo is not None:
        vm_bo.get(holder)
    return vm_bo


def bo_obtain(vm: GpuVm, obj: GemObject, holder: object = CALLER) -> VmBo:
    """``drm_gpuvm_bo_obtain`` (``drm_gpuvm_bo_obtain_locked`` in the newest tree): find, or
    create and append to the GEM's list.  The caller holds the GEM's gpuva lock.  With the
    newest API (``GpuVm(obtain_locked=True)``, the default) a call on an IMMEDIATE_MODE VM is
    recorded as the kernel's WARN (that mode must use :func:`bo_obtain_prealloc`: this
    allocates under the gpuva mutex) and then proceeds, as the kernel does."""
    vm_bo = _obtain(vm, obj, holder)
    if vm._obtain_locked and vm._immediate:  # recorded once the call can no longer fail
        vm._warn(
            f"drm_gpuvm_bo_obtain_locked on {vm.name}, which is in IMMEDIATE_MODE "
            "(use drm_gpuvm_bo_obtain_prealloc)"
        )
    return vm_bo


def _obtain(vm: GpuVm, obj: GemObject, holder: object) -> VmBo:
    """The body of :func:`bo_obtain`, also the model's own lookup in ``apply`` (a model
    step, not a driver call, so no WARN)."""
    if vm.fence_depth:
        vm._no_fence("drm_gpuvm_bo_obtain")
    vm_bo = vm.bo_find(obj, holder)
    if vm_bo is not None:
        return vm_bo
    vm._check_lock_mode(obj)
    vm_bo = vm.bo_create(obj, holder)
    obj.vm_bos.append(vm_bo)
    vm_bo.listed = True
    return vm_bo


def bo_obtain_prealloc(vm: GpuVm, pre: VmBo, holder: object = CALLER) -> VmBo:
    """``drm_gpuvm_bo_obtain_prealloc``: on a hit, drop ``pre`` (destroying it) and
    return the hit with a new reference; else list ``pre`` and return it.  ``pre`` must
    come from :meth:`bo_create` with the same holder.

    Two versions, chosen by ``GpuVm(obtain_locked=...)``.  The newest (default; "drm/gpuvm:
    take GEM lock inside drm_gpuvm_bo_obtain_prealloc()",
    ``<20251128-gpuvm-rust-v1-1-ebf66bf234e0@google.com>``) requires IMMEDIATE_MODE (the
    kernel WARNs and takes the wrong lock; the model refuses, :class:`NotImmediateMode`),
    takes the GEM's ``gpuva.lock`` itself (a caller already holding it self-deadlocks:
    :class:`LockMisuse`) and frees a dropped ``pre`` after unlocking, outside every list
    (``drm_gpuvm_bo_destroy_not_in_lists``), so no destroy locks are needed.  The older one
    wants the caller to hold the gpuva lock, and the destroy locks when ``pre`` dies."""
    if pre.vm is not vm:
        raise LinkError(f"{pre!r} belongs to another VM")
    pre.check_alive("obtain_prealloc")
    if vm._obtain_locked:
        return _obtain_prealloc_locking(vm, pre, holder)
    if vm.lock_checks:
        vm.need_gem_lock(pre.obj, "drm_gpuvm_bo_obtain_prealloc")
        if pre.obj.vm_bo_for(vm) is not None and pre.refs.total == 1:
            vm._need_destroy_locks(pre, "drm_gpuvm_bo_obtain_prealloc")
    if pre.listed:
        raise LinkError(f"{pre!r} is already on its GEM's list")
    pre.refs.check_put(holder)
    if pre.obj.vm_bo_for(vm) is None:
        vm._check_lock_mode(pre.obj)
    hit = pre.obj.vm_bo_for(vm)
    if hit is not None:
        hit.get(holder)
        pre.put(holder)
        return hit
    pre.obj.vm_bos.append(pre)
    pre.listed = True
    return pre


def _obtain_prealloc_locking(vm: GpuVm, pre: VmBo, holder: object) -> VmBo:
    """The newest ``drm_gpuvm_bo_obtain_prealloc`` (see :func:`bo_obtain_prealloc`)."""
    vm.check_immediate("drm_gpuvm_bo_obtain_prealloc")
    obj = pre.obj
    if vm.lock_checks and obj.gpuva_lock.held:
        raise LockMisuse(
            f"drm_gpuvm_bo_obtain_prealloc takes {obj.gpuva_lock!r} itself, but the caller "
            "holds it (self-deadlock)"
        )
    if pre.listed:
        raise LinkError(f"{pre!r} is already on its GEM's list")
    pre.refs.check_put(holder)
    hit = obj.vm_bo_for(vm)
    if hit is None:
        vm._check_lock_mode(obj)
    if hit is not None:
        hit.get(holder)
        pre.refs.release(holder, vm.bus, pre._free_not_in_lists)
        return hit
    obj.vm_bos.append(pre)
    pre.listed = True
    return pre


def is_extobj(vm: GpuVm, obj: GemObject | None) -> bool:
    """``drm_gpuvm_is_extobj``: the object does not share the VM's reservation."""
    return obj is not None and obj.resv is not vm.r_obj.resv


def bo_evict(vm: GpuVm, vm_bo: VmBo, evict: bool = True) -> None:
    """``drm_gpuvm_bo_evict`` for a VmBo of this VM (see :meth:`VmBo.evict`)."""
    if vm_bo.vm is not vm:
        raise LinkError(f"{vm_bo!r} belongs to another VM")
    vm_bo.evict(evict)


def link(vm: GpuVm, va: Va, vm_bo: VmBo) -> None:
    """``drm_gpuva_link``: append ``va`` to ``vm_bo``'s list and take a VmBo reference
    held by the VA.  An object-less VA is silently not linked, as in the kernel."""
    if va.obj is None:
        vm._warn(f"link of object-less {va!r} ignored (kernel: silent no-op)")
        return
    if not va.inserted or va.vm is None:
        raise NotInserted(f"link of {va!r}, which was never inserted (kernel NULL deref)")
    if va.vm_bo is not None:
        raise LinkError(f"{va!r} is already linked to {va.vm_bo!r}")
    vm_bo.check_alive("link")
    if vm_bo.obj is not va.obj:
        raise LinkError(f"link of {va!r} to {vm_bo!r}: object mismatch")
    if vm_bo.vm is not va.vm:
        raise LinkError(f"link of {va!r} (in {va.vm!r}) to {vm_bo!r}: VM mismatch")
    if vm_bo.vm.lock_checks:
        vm_bo.vm.need_gem_lock(va.obj, "drm_gpuva_link")
    # vm_bo.get(va), inlined (hot path): the VmBo is alive, so its count is too.
    refs = vm_bo.refs
    holders = refs.holders
    holders[va] = holders.get(va, 0) + 1
    refs.total += 1
    bus = vm_bo.vm.bus
    if bus.route[RefGot]:
        bus.emit(RefGot(vm_bo, va))
    va.vm_bo = vm_bo
    vm_bo.vas[va] = None
    if vm.bus.route[VaLinked]:
        vm.bus.emit(VaLinked(va, vm_bo))


def unlink(vm: GpuVm, va: Va) -> None:
    """``drm_gpuva_unlink``: drop ``va`` from its VmBo, putting the VmBo reference it
    held (which may destroy the VmBo, and with it drop VM and buffer references)."""
    vm._unlink(va, deferred=False)


def unlink_defer(vm: GpuVm, va: Va) -> None:
    """``drm_gpuva_unlink_defer`` (IMMEDIATE_MODE only): as :meth:`unlink`, but the VmBo
    reference is dropped with :meth:`VmBo.put_deferred`, so a VmBo whose last reference
    this was becomes a zombie on the VM's deferred list instead of being destroyed
    here.  Allowed in a fence-signalling section.  An object-less VA is a no-op."""
    vm._unlink(va, deferred=True)


def _unlink(vm: GpuVm, va: Va, *, deferred: bool) -> None:
    """The body of both unlinks: every check first (linked, holds its reference, the
    mode's rules), then off the VmBo's list and one put of the right kind."""
    if va.obj is None and va.vm_bo is None:
        return
    vm_bo = va.vm_bo
    what = "drm_gpuva_unlink_defer" if deferred else "drm_gpuva_unlink"
    if vm_bo is None:
        raise LinkError(f"{what} of {va!r}, which is not linked")
    vm = vm_bo.vm  # the VmBo's own VM: drm_gpuva_unlink is given the VA alone
    if deferred:
        vm.check_immediate(what)
    elif vm.fence_depth:
        vm._no_fence(f"{what} (its VmBo put may sleep; use unlink_defer)")
    if vm_bo.refs.holders.get(va, 0) <= 0:
        vm_bo.refs.check_put(va)  # raises
    if deferred:
        vm._need_takes_gem_lock(vm_bo.obj, what)
    elif vm.lock_checks:
        vm.need_gem_lock(va.obj, what)
        if vm_bo.refs.total == 1:
            vm._need_destroy_locks(vm_bo, what)
    del vm_bo.vas[va]
    va.vm_bo = None
    if vm.bus.route[VaUnlinked]:
        vm.bus.emit(VaUnlinked(va, vm_bo))
    if deferred:
        vm_bo.put_deferred(va)
    else:
        vm_bo.put(va)


def bo_deferred_cleanup(vm: GpuVm) -> list[VmBo]:
    """``drm_gpuvm_bo_deferred_cleanup``: take every zombie off the deferred list (an
    llist: newest first), take them off the extobj / evict lists under RESV_PROTECTED,
    then free each, dropping its VM and buffer references.  Returns the freed VmBos in
    the order they were freed."""
    vm.check_alive("bo_deferred_cleanup")
    vm._no_fence("drm_gpuvm_bo_deferred_cleanup")
    if vm.lock_checks and vm.bo_defer and vm._protected and vm.resv.held:
        raise LockMisuse(
            f"drm_gpuvm_bo_deferred_cleanup locks {vm.name}'s resv, which is already held"
        )
    zombies = vm.bo_defer[::-1]
    vm.bo_defer.clear()
    if vm._protected:
        for vm_bo in zombies:
            vm.extobj.pop(vm_bo, None)
            vm.evict.pop(vm_bo, None)
    for vm_bo in zombies:
        vm_bo._free_not_in_lists()
    return zombies
