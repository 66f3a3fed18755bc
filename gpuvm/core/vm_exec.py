"""The ``drm_exec`` lock sets of a :class:`GpuVm` and the validation of evicted buffers.

Models ``drm_gpuvm_prepare_vm`` / ``drm_gpuvm_prepare_objects`` / ``drm_gpuvm_prepare_range``,
``drm_gpuvm_exec_lock`` / ``drm_gpuvm_exec_lock_range``, ``drm_gpuvm_sm_map_exec_lock`` /
``drm_gpuvm_sm_unmap_exec_lock`` and ``drm_gpuvm_validate`` of
``drivers/gpu/drm/drm_gpuvm.c``.  A lock set is the frozenset of reservation objects the
kernel would hand to ``drm_exec``; nothing is locked.  These are the bodies of the
``GpuVm`` methods of the same names (see :mod:`gpuvm.core.vm`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from gpuvm.core.errors import NoObject, NotSupported
from gpuvm.core.events import Validated
from gpuvm.core.gem import GemObject, Resv
from gpuvm.core.ops import MapRequest, Op, RemapOp, UnmapOp
from gpuvm.core.refcount import Holder
from gpuvm.core.u64 import U64_MAX, check_u64
from gpuvm.core.vmbo import VmBo

if TYPE_CHECKING:
    from gpuvm.core.vm import GpuVm


_WALK = Holder("list walk")


def prepare_vm(vm: GpuVm) -> frozenset[Resv]:
    """``drm_gpuvm_prepare_vm``: the VM's own reservation."""
    vm._no_fence("drm_gpuvm_prepare_vm")
    return frozenset({vm.resv})


def prepare_objects(vm: GpuVm) -> frozenset[Resv]:
    """``drm_gpuvm_prepare_objects``: every extobj's reservation.  Under RESV_PROTECTED
    it also lists evicted extobjs on the evict list (the deferred add).  Zombies (left on
    the list by a deferred put under RESV_PROTECTED) are skipped."""
    vm._no_fence("drm_gpuvm_prepare_objects")
    vm.need_vm_resv("drm_gpuvm_prepare_objects")
    live = [vm_bo for vm_bo in vm.extobj if not vm_bo.zombie]
    out = {vm_bo.obj.resv for vm_bo in live}
    if vm._protected:
        for vm_bo in live:
            if vm_bo.evicted:
                vm.evict.setdefault(vm_bo, None)
    return frozenset(out)


def prepare_range(vm: GpuVm, addr: int, range: int) -> frozenset[Resv]:
    """``drm_gpuvm_prepare_range``: the reservation of every object mapped in the range.
    An object-less VA (or the kernel node) is refused: the kernel passes NULL to
    drm_exec there."""
    check_u64("addr", addr)
    check_u64("range", range)
    vm._no_fence("drm_gpuvm_prepare_range")
    vas = vm.index.range_walk(addr, (addr + range) & U64_MAX)
    for va in vas:
        if va.obj is None:
            raise NoObject(f"prepare_range over object-less {va!r}")
    return frozenset(va.obj.resv for va in vas if va.obj is not None)


def exec_lock(vm: GpuVm, extra: Iterable[GemObject] = ()) -> frozenset[Resv]:
    """``drm_gpuvm_exec_lock``: VM reservation, all extobjs, plus extra objects."""
    return vm.prepare_vm() | vm.prepare_objects() | {o.resv for o in extra}


def exec_lock_range(vm: GpuVm, addr: int, range: int) -> frozenset[Resv]:
    """``drm_gpuvm_exec_lock_range``: only the objects mapped in the range
    (``drm_gpuvm_prepare_range`` in the ``drm_exec`` loop); the VM's own reservation is
    locked only if a VM-private object mapped there shares it."""
    return vm.prepare_range(addr, range)


def sm_map_exec_lock(vm: GpuVm, req: MapRequest) -> frozenset[Resv]:
    """``drm_gpuvm_sm_map_exec_lock``: the request's object, then the object of each VA
    an sm_map would remap or unmap."""
    out = set() if req.obj is None else {req.obj.resv}
    return frozenset(out | _touched_resvs(vm.sm_map_ops(req)))


def sm_unmap_exec_lock(vm: GpuVm, addr: int, range: int) -> frozenset[Resv]:
    """``drm_gpuvm_sm_unmap_exec_lock``."""
    return _touched_resvs(vm.sm_unmap_ops(addr, range))


def validate(vm: GpuVm, callback: Callable[[VmBo], int | None] | None = None) -> int:
    """``drm_gpuvm_validate``: call the driver's ``vm_bo_validate`` on each VmBo of the
    evict list, stopping at the first error, which is returned (negative errno) as the
    kernel does; earlier validations stay done.  Without a callback: -EOPNOTSUPP."""
    vm.check_alive("validate")
    vm._no_fence("drm_gpuvm_validate (reservation locks)")
    vm.need_vm_resv("drm_gpuvm_validate")
    cb = callback if callback is not None else vm.vm_bo_validate
    if cb is None:
        raise NotSupported(f"{vm.name} has no vm_bo_validate callback")
    for vm_bo in list(vm.evict):
        if vm_bo.freed or vm_bo.zombie or vm_bo not in vm.evict:
            continue  # zombies (kref 0) are skipped, as drm_gpuvm_bo_is_zombie
        vm_bo.get(_WALK)
        try:
            ret = cb(vm_bo) or 0
        finally:
            vm_bo.put(_WALK)
        if ret:
            return ret
        if vm.bus.route[Validated]:
            vm.bus.emit(Validated(vm_bo))
        if vm._protected and not vm_bo.evicted:
            vm.evict.pop(vm_bo, None)
    return 0


def _touched_resvs(ops: Iterable[Op]) -> frozenset[Resv]:
    out: set[Resv] = set()
    for op in ops:
        va = op.va if isinstance(op, UnmapOp) else op.unmap.va if isinstance(op, RemapOp) else None
        if va is not None and va.obj is not None:
            out.add(va.obj.resv)
    return frozenset(out)
