"""The legacy operations on kernel-managed VMs (``msm_gem.c`` before the GPUVM conversion).

* :func:`get_iova` (``MSM_INFO_GET_IOVA``): look the buffer's VMA up or allocate an iova;
  nothing is mapped yet.
* :func:`set_iova` (``MSM_INFO_SET_IOVA``, per-process page tables): reserve a
  user-chosen iova; 0 deletes the VMA.
* :func:`pin` (``msm_gem_get_and_pin_iova``, submit, framebuffer prepare): get the VMA,
  map it on the first pin, count the pin.  :func:`pin_all` pins several buffers at once,
  all or nothing.
* :func:`unpin`: only lowers the count; the mapping stays.
* :func:`evict` / :func:`purge` (shrinker): unmap, keep the iova reserved.
* :func:`close_vma` (``put_iova_spaces(close=True)``): unmap and destroy one VMA.
* Buffer free tears every VMA of the buffer down: that is the buffer's
  :class:`~legacy.vma.BoVmas` free hook, installed with the first VMA.

Every function works on any :class:`~legacy.vma.KernelVm`, so the driver layer runs the same
operations on GPUVM-backed kernel-managed VMs.  Each validates before it changes anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gpuvm.core.args import check_instance, check_int, check_u64
from gpuvm.core.errors import Busy, InvalidValue, NotPinned
from gpuvm.core.gem import GemObject
from legacy.aspace import align_up
from legacy.vma import KernelVm, KernelVma, bo_vmas

__all__ = [
    "close_vma",
    "evict",
    "get_iova",
    "pin",
    "pin_all",
    "plan_iovas",
    "purge",
    "set_iova",
    "unpin",
    "vma_size",
]


def vma_size(vm: KernelVm, obj: GemObject) -> int:
    """A VMA covers the whole buffer, rounded up to the VM's page size."""
    if obj.size <= 0:
        raise InvalidValue(f"{obj!r} has size 0 and cannot be mapped")
    return align_up(obj.size, vm.page_size)


def plan_iovas(
    vm: KernelVm, objs: Iterable[GemObject], align: int | None = None
) -> dict[GemObject, int]:
    """The iova each buffer without a VMA in ``vm`` would get, allocating them in order as
    one call would; raises :class:`~gpuvm.core.errors.NoSpace` if one does not fit.  Nothing
    changes: this is the validation step of :func:`pin_all`.  A VM with a
    ``layout_epoch`` (both built-in kinds) gets the previous answer back when nothing it
    depends on has changed since."""
    vm.check_alive("plan")
    if type(objs) is not tuple:
        objs = tuple(objs)
    epoch = getattr(vm, "layout_epoch", None)
    if epoch is not None and _last_plan:
        m_vm, m_epoch, m_objs, m_align, m_plan = _last_plan[0]
        if m_vm is vm and m_epoch == epoch and m_align == align and m_objs == objs:
            for obj in objs:
                if obj.freed:
                    obj.check_alive("get_iova")
            return dict(m_plan)
    plan: dict[GemObject, int] = {}
    taken: list[tuple[int, int]] = []
    for obj in objs:
        obj.check_alive("get_iova")
        if obj in plan or vm.vma_of(obj) is not None:
            continue
        size = vma_size(vm, obj)
        addr = (
            vm.alloc_iova(size, taken=taken)
            if align is None
            else vm.alloc_iova(size, align, taken=taken)
        )
        plan[obj] = addr
        taken.append((addr, addr + size))
    if epoch is not None:
        _last_plan[:] = [(vm, epoch, objs, align, dict(plan))]
    return plan


_Plan = tuple[KernelVm, object, tuple[GemObject, ...], int | None, dict[GemObject, int]]
_last_plan: list[_Plan] = []
"""The last plan made, with the VM's ``layout_epoch`` it was made at: a validation step
followed by the operation it validated (``check_fb_prepare`` then ``on_fb_prepare``) plans
once.  The epoch changes with every VMA created, closed, linked or unlinked, so a plan is
reused only while every input it read is unchanged."""


def get_iova(vm: KernelVm, obj: GemObject, align: int | None = None) -> KernelVma:
    """``msm_gem_get_iova``: the buffer's VMA in ``vm``, allocating an iova on first use
    (lazily: no page-table work).  Raises :class:`~gpuvm.core.errors.NoSpace` when the
    allocator has no hole."""
    check_instance("obj", obj, GemObject)
    if align is not None:
        check_int("align", align, 1, 1 << 63)
    vma = vm.vma_of(obj)
    if vma is not None:
        return vma
    addr = plan_iovas(vm, [obj], align)[obj]
    return vm.new_vma(obj, addr, vma_size(vm, obj))


def set_iova(vm: KernelVm, obj: GemObject, iova: int) -> KernelVma | None:
    """``msm_gem_set_iova`` / ``clear_iova``: put the buffer's VMA at a user-chosen iova.

    ``iova == 0`` deletes the VMA (unmap, release the iova), pinned or not: ``clear_iova``
    has no pin check (a later unpin finds no VMA).  A VMA already at that iova is returned
    as is; one at another iova is ``-EBUSY`` (the kernel WARNs, deletes it, then fails; the
    model only fails).  A taken or out-of-window range is ``-ENOSPC``.
    """
    check_instance("obj", obj, GemObject)
    check_u64("iova", iova)
    vm.check_alive("set_iova")
    obj.check_alive("set_iova")
    vma = vm.vma_of(obj)
    if iova == 0:
        if vma is None:
            return None
        vma.user_cleared = True
        vm.unmap_vma(vma)
        vm.close_vma(vma)
        return None
    if vma is not None:
        if vma.addr != iova:
            raise Busy(f"set_iova {iova:#x}: {obj!r} already has {vma!r}")
        return vma
    size = vma_size(vm, obj)
    vm.check_iova(iova, size)
    return vm.new_vma(obj, iova, size)


def pin(vm: KernelVm, obj: GemObject) -> KernelVma:
    """``msm_gem_get_and_pin_iova``: get the VMA, map it if not mapped (the only place a
    legacy VMA is mapped), count one pin."""
    return pin_all(vm, [obj])[0]


def pin_all(vm: KernelVm, objs: Sequence[GemObject]) -> list[KernelVma]:
    """Pin each buffer of ``objs`` in ``vm`` (a submit's BO table, a framebuffer's planes),
    all or nothing: every iova is planned before the first VMA is made."""
    plan = plan_iovas(vm, objs)
    out: list[KernelVma] = []
    for obj in objs:
        vma = vm.vma_of(obj)
        if vma is None:
            vma = vm.new_vma(obj, plan[obj], vma_size(vm, obj))
        vm.map_vma(vma)
        vma.pin_count += 1
        out.append(vma)
    return out


def unpin(vm: KernelVm, obj: GemObject) -> KernelVma:
    """``msm_gem_unpin_iova`` (legacy): lower the pin count; the mapping stays until
    something else removes it."""
    vma = vm.vma_of(obj)
    if vma is None or vma.pin_count <= 0:
        raise NotPinned(f"unpin of {obj!r} in {vm.name}, which is not pinned there")
    vma.pin_count -= 1
    return vma


def _own_vmas(obj: GemObject) -> list[KernelVma]:
    lst = bo_vmas(obj)
    return list(lst.vmas) if lst is not None else []


def evict(obj: GemObject, vmas: Iterable[KernelVma] | None = None) -> list[KernelVma]:
    """The shrinker's evict path: unmap every VMA of the buffer (by default its own list),
    keeping each iova reserved.  A pinned VMA makes the buffer unevictable (``-EBUSY``).
    Returns the VMAs that were mapped."""
    todo = _own_vmas(obj) if vmas is None else list(vmas)
    for vma in todo:
        if vma.pin_count:
            raise Busy(f"evict of {obj!r}: {vma!r} is pinned")
    done = [v for v in todo if v.mapped]
    for vma in done:
        vma.vm.unmap_vma(vma)  # type: ignore[attr-defined]
    return done


def purge(obj: GemObject, vmas: Iterable[KernelVma] | None = None) -> list[KernelVma]:
    """The shrinker's purge path (``MADV_DONTNEED`` buffers): as :func:`evict`; the VMAs are
    kept ("Don't close VMAs on purge"), the caller drops the backing."""
    return evict(obj, vmas)


def close_vma(vm: KernelVm, obj: GemObject) -> bool:
    """``put_iova_spaces(obj, vm, close=True)``: unmap and destroy the buffer's VMA in
    ``vm``, if any; a pinned one refuses (``-EBUSY``).  True if a VMA was destroyed."""
    vma = vm.vma_of(obj)
    if vma is None:
        return False
    if vma.pin_count:
        raise Busy(f"close of pinned {vma!r}")
    vm.unmap_vma(vma)
    vm.close_vma(vma)
    return True
