"""The VA tree of a :class:`GpuVm`: range validation, lookups, insert and remove.

Models ``drm_gpuvm_range_valid``, ``drm_gpuva_find_first`` / ``drm_gpuva_find`` /
``drm_gpuva_find_prev`` / ``drm_gpuva_find_next``, ``drm_gpuvm_interval_empty``,
``drm_gpuvm_for_each_va_range`` and ``drm_gpuva_insert`` / ``drm_gpuva_remove`` of
``drivers/gpu/drm/drm_gpuvm.c``: each inserted VA holds one VM reference, and every insert
or remove bumps ``vm.generation`` (which makes older op lists stale).  These are the bodies
of the ``GpuVm`` methods of the same names (see :mod:`gpuvm.core.vm`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuvm.core.errors import (
    AlreadyInserted,
    InvalidRange,
    InvalidValue,
    NotInserted,
    OutOfBounds,
    UseAfterFree,
    VaExists,
    VaInUse,
    ZeroRange,
)
from gpuvm.core.events import VaInserted, VaRemoved
from gpuvm.core.gem import GemObject
from gpuvm.core.u64 import U64_MAX, check_u64
from gpuvm.core.va import Va

if TYPE_CHECKING:
    from gpuvm.core.vm import GpuVm


def range_valid(vm: GpuVm, addr: object, range: object) -> bool:
    """``drm_gpuvm_range_valid``: no u64 overflow, inside the window, outside the
    kernel-reserved node.  A zero range passes, as in the kernel; a value that is not an
    ``int`` is simply not a valid range (typed ``object`` so the compiled build answers
    False too instead of refusing the argument)."""
    if type(addr) is not int or type(range) is not int:
        return False
    if addr < 0 or range < 0 or addr > U64_MAX or range > U64_MAX:
        return False
    end = addr + range
    if end > U64_MAX:
        return False
    if addr < vm.start or end > vm.start + vm.range:
        return False
    kr = vm.reserve_range
    return not (kr and addr < vm.reserve_start + kr and vm.reserve_start < end)


def _check_range(vm: GpuVm, what: str, addr: int, range: int) -> None:
    if (
        type(addr) is int
        and type(range) is int
        and range > 0
        and vm.start <= addr
        and addr + range <= vm.start + vm.range
        and not (
            vm.reserve_range
            and addr < vm.reserve_start + vm.reserve_range
            and vm.reserve_start < addr + range
        )
    ):
        return  # the common case, decided without building any message
    check_u64("addr", addr)
    check_u64("range", range)
    if range == 0:
        raise ZeroRange(f"{what} with range 0 at {addr:#x} (the kernel mishandles it)")
    if not vm.range_valid(addr, range):
        raise InvalidRange(
            f"{what} [{addr:#x}, +{range:#x}) is not valid in {vm.name} "
            f"(window [{vm.start:#x}, {vm.end:#x}), reserved "
            f"[{vm.reserve_start:#x}, +{vm.reserve_range:#x}))"
        )


def _check_target(
    vm: GpuVm, what: str, addr: int, range: int, obj: GemObject | None, offset: int
) -> None:
    """What a new mapping must satisfy, for an insert or a map request: a valid range,
    a u64 offset, a live GEM (or no object) and, with ``check_bounds``, an object range
    inside the object."""
    vm._check_range(what, addr, range)
    if type(offset) is not int or not 0 <= offset <= U64_MAX:
        check_u64("offset", offset)
    if obj is not None:
        if not isinstance(obj, GemObject):
            raise InvalidValue(f"{what}: the object is not a GEM: {obj!r}")
        if obj.freed:
            obj.check_alive(what)
        if vm.check_bounds and offset + range > obj.size:
            vm._check_bounds(addr, range, obj, offset)  # raises


def _check_bounds(vm: GpuVm, addr: int, range: int, obj: GemObject, offset: int) -> None:
    if vm.check_bounds and offset + range > obj.size:
        raise OutOfBounds(
            f"mapping {obj.name}@{offset:#x}+{range:#x} at {addr:#x} passes its end ({obj.size:#x})"
        )


def find_first(vm: GpuVm, addr: int, range: int) -> Va | None:
    """``drm_gpuva_find_first``: the lowest VA meeting ``[addr, addr+range-1]``."""
    if not (type(addr) is int and type(range) is int and 0 <= addr <= U64_MAX >= range >= 0):
        check_u64("addr", addr)  # raises, or accepts an int subclass
        check_u64("range", range)
    return vm.index.first_overlap(addr, (addr + range - 1) & U64_MAX)


def find(vm: GpuVm, addr: int, range: int) -> Va | None:
    """``drm_gpuva_find``: the VA at exactly ``[addr, addr+range)``, or None."""
    va = vm.find_first(addr, range)
    if va is not None and va.addr == addr and va.range == range:
        return va
    return None


def find_prev(vm: GpuVm, start: int) -> Va | None:
    """``drm_gpuva_find_prev``: the VA meeting ``[start-1, start]`` (kernel quirk: the
    VA at ``start`` itself if nothing covers ``start-1``)."""
    check_u64("start", start)
    prev = (start - 1) & U64_MAX
    if not vm.range_valid(prev, 1):
        return None
    return vm.index.first_overlap(prev, start)


def find_next(vm: GpuVm, end: int) -> Va | None:
    """``drm_gpuva_find_next``: the VA meeting ``[end, end+1]`` (kernel quirk: a VA
    starting at ``end+1`` if nothing covers ``end``)."""
    check_u64("end", end)
    if not vm.range_valid(end, 1):
        return None
    return vm.index.first_overlap(end, end + 1)


def interval_empty(vm: GpuVm, addr: int, range: int) -> bool:
    """``drm_gpuvm_interval_empty``."""
    return vm.find_first(addr, range) is None


def iter_range(vm: GpuVm, addr: int, end: int) -> list[Va]:
    """``drm_gpuvm_for_each_va_range``: the VAs met walking ``[addr, end)`` (the kernel
    node is not skipped)."""
    check_u64("addr", addr)
    check_u64("end", end)
    return vm.index.range_walk(addr, end)


def insert(
    vm: GpuVm,
    addr: int,
    range: int,
    obj: GemObject | None = None,
    offset: int = 0,
    *,
    sparse: bool = False,
) -> Va:
    """Allocate a :class:`Va` and ``drm_gpuva_insert`` it (not linked)."""
    va = Va(addr, range, obj, offset, sparse=sparse)
    vm.insert_va(va)
    return va


def insert_va(vm: GpuVm, va: Va) -> None:
    """``drm_gpuva_insert``: -EINVAL for a bad range, -EEXIST over an occupied range;
    takes a VM reference held by the VA."""
    if vm.freed:
        vm.check_alive("insert")
    if va.freed:
        raise UseAfterFree(f"insert of freed {va!r}")
    if va.inserted:
        raise AlreadyInserted(f"{va!r} is already inserted in {va.vm!r}")
    vm._check_target("insert", va.addr, va.range, va.obj, va.offset)
    hit = vm.index.first_overlap(va.addr, va.addr + va.range - 1)
    if hit is not None:
        raise VaExists(f"insert {va!r}: range occupied by {hit!r}")
    vm._insert(va)


def _insert(vm: GpuVm, va: Va) -> None:
    va.vm = vm
    va.inserted = True
    vm.index.add(va)
    vm.generation += 1
    vm.refs.get(va)
    if vm.bus.route[VaInserted]:
        vm.bus.emit(VaInserted(vm, va))


def remove(vm: GpuVm, va: Va) -> None:
    """``drm_gpuva_remove``: take the VA out of the tree and drop its VM reference.  The
    kernel node is refused with a recorded WARN, as in the kernel."""
    if va.kernel_node:
        vm._warn(f"remove of the kernel-reserved node {va!r} ignored")
        return
    if not va.inserted or va.vm is not vm or va not in vm.index:
        raise NotInserted(f"remove of {va!r}, which is not inserted in {vm.name}")
    vm._remove(va)


def _remove(vm: GpuVm, va: Va) -> None:
    vm.index.discard(va)
    va.inserted = False
    vm.generation += 1
    if vm.bus.route[VaRemoved]:
        vm.bus.emit(VaRemoved(vm, va))
    vm.put(va)


def free_va(vm: GpuVm, va: Va) -> None:
    """The driver frees a VA; refused while it is still inserted or linked."""
    if va.inserted or va.vm_bo is not None:
        raise VaInUse(f"free of {va!r} while still inserted or linked")
    va.freed = True
