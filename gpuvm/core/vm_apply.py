"""The canonical driver of a :class:`GpuVm`: apply op lists, map, unmap and bind.

The kernel leaves applying ops to the driver (its ``sm_step_map`` / ``sm_step_remap`` /
``sm_step_unmap`` callbacks, built from ``drm_gpuva_map`` / ``drm_gpuva_remap`` /
``drm_gpuva_unmap``, ``drm_gpuvm_bo_obtain``, ``drm_gpuvm_bo_extobj_add`` and
``drm_gpuva_link`` / ``unlink`` of ``drivers/gpu/drm/drm_gpuvm.c``); this module is how a
well-behaved driver does it, all or nothing, emitting page-table events for observers.  A
multi-op ``bind`` is a driver's VM_BIND ioctl.  These are the bodies of the ``GpuVm``
methods of the same names (see :mod:`gpuvm.core.vm`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, cast

from gpuvm.core import vm_bos
from gpuvm.core.errors import InvalidRange, InvalidValue, StaleOps, VaExists
from gpuvm.core.events import Mapped, TlbInvalidated, Unmapped
from gpuvm.core.gem import GemObject
from gpuvm.core.ops import MapOp, MapRequest, Op, OpList, PrefetchOp, RemapOp, UnmapOp, UnmapRequest
from gpuvm.core.refcount import Holder
from gpuvm.core.u64 import U64_MAX
from gpuvm.core.va import Va
from gpuvm.core.vmbo import VmBo

if TYPE_CHECKING:
    from gpuvm.core.vm import GpuVm


_APPLY = Holder("apply")
_BIND = Holder("bind")


def _validate_ops(vm: GpuVm, ops: Sequence[Op]) -> None:
    """Check that ``ops`` can be applied in full: fresh, and structurally consistent
    with the current tree (every named VA inserted here, pieces inside their VA, new
    ranges free once the named VAs are gone)."""
    if isinstance(ops, OpList):
        if ops.vm is not vm:
            raise StaleOps(f"ops built for {ops.vm!r} applied to {vm!r}")
        if ops.generation != vm.generation:
            raise StaleOps(
                f"ops built at generation {ops.generation}, {vm.name} is at "
                f"{vm.generation}: recompute them"
            )
        if vm._issued_gen == ops.generation and vm._issued.get(id(ops)) is ops:
            # Built here at this generation: consistent with the tree by construction.
            # Only what can change without a tree change is re-checked: the objects.
            for op in ops.ops:
                if type(op) is MapOp and op.obj is not None:
                    if op.obj.freed:
                        op.obj.check_alive("map")
                    if vm.check_bounds:
                        vm._check_bounds(op.addr, op.range, op.obj, op.offset)
            return
    elif not isinstance(ops, Sequence):
        raise InvalidValue(f"not an op list: {ops!r}")
    removed: set[int] = set()
    new: list[tuple[int, int]] = []

    def take(va: Va) -> None:
        if va.kernel_node:
            raise InvalidRange(f"op names the kernel-reserved node {va!r}")
        if not va.inserted or va.vm is not vm or va not in vm.index:
            raise StaleOps(f"op names {va!r}, which is not inserted in {vm.name}")
        if id(va) in removed:
            raise StaleOps(f"op list names {va!r} twice")
        removed.add(id(va))

    def place(addr: int, range_: int, what: str) -> None:
        for va in vm.index.range_walk(addr, addr + range_):
            if id(va) not in removed:
                raise VaExists(f"{what} [{addr:#x}, +{range_:#x}) overlaps {va!r}")
        for a, r in new:
            if addr < a + r and a < addr + range_:
                raise VaExists(f"{what} [{addr:#x}, +{range_:#x}) overlaps another op")
        new.append((addr, range_))

    # Items typed as objects: the compiled build would refuse a non-op with mypyc's own
    # TypeError when taking it out of a Sequence[Op], before the InvalidValue below.
    for item in cast("Sequence[object]", ops):
        if isinstance(item, UnmapOp):
            take(item.va)
        elif isinstance(item, RemapOp):
            va = item.unmap.va
            take(va)
            if item.prev is None and item.next is None:
                raise InvalidRange(f"REMAP of {va!r} with no piece")
            for piece, edge in ((item.prev, "prev"), (item.next, "next")):
                if piece is None:
                    continue
                if piece.obj is not va.obj or piece.range <= 0:
                    raise InvalidRange(f"REMAP {edge} piece {piece!r} does not fit {va!r}")
                if piece.addr < va.addr or piece.end > va.end:
                    raise InvalidRange(f"REMAP {edge} piece {piece!r} outside {va!r}")
                place(piece.addr, piece.range, f"REMAP {edge}")
        elif isinstance(item, MapOp):
            vm._check_map_request(MapRequest(item.addr, item.range, item.obj, item.offset))
            place(item.addr, item.range, "MAP")
        elif isinstance(item, PrefetchOp):
            raise StaleOps("PREFETCH ops are not applied; hand them to the driver")
        else:
            raise InvalidValue(f"not an op: {item!r}")


def _need_apply_locks(vm: GpuVm, ops: Iterable[Op]) -> None:
    """The locks applying ``ops`` needs: the gpuva lock of every object it links or
    unlinks, and under RESV_PROTECTED the VM's resv when it will ``extobj_add`` (any MAP
    of an object) or destroy a VmBo (one whose last VA goes)."""
    objs: dict[int, GemObject] = {}
    change: dict[int, tuple[VmBo, int]] = {}  # VmBo -> change of its reference count
    needs_resv = False
    for op in ops:
        if isinstance(op, MapOp):
            if op.obj is not None:
                objs.setdefault(id(op.obj), op.obj)
                needs_resv = True
            continue
        if isinstance(op, UnmapOp):
            va, delta = op.va, -1
        elif isinstance(op, RemapOp):
            va = op.unmap.va
            delta = (op.prev is not None) + (op.next is not None) - 1
        else:
            continue
        if va.obj is not None:
            objs.setdefault(id(va.obj), va.obj)
        if va.vm_bo is not None:
            vb, d = change.get(id(va.vm_bo), (va.vm_bo, 0))
            change[id(vb)] = (vb, d + delta)
    for obj in objs.values():
        vm.need_gem_lock(obj, "apply")
    if needs_resv or any(vb.refs.total + d <= 0 for vb, d in change.values()):
        vm.need_vm_resv("apply")


def apply(vm: GpuVm, ops: Sequence[Op]) -> list[Va]:
    """Apply an op list the canonical way and return the VAs it created.

    MAP: a new VA is inserted and linked to ``bo_obtain(obj)`` (put on the extobj list
    if external), obtained before the first op runs, as drivers do before sm_map, so
    an UNMAP of the object's last mapping in the same list cannot destroy that VmBo
    (and free the object) under the MAP; REMAP: the old VA leaves the tree, the pieces
    are inserted (flags copied) and linked to the old VmBo, then the old VA is
    unlinked; UNMAP: unlink and remove.  Page-table events skip every part a ``keep``
    op preserves.  The whole list is validated before anything changes.
    """
    if vm.freed:
        vm.check_alive("apply")
    vm._validate_ops(ops)
    if vm.fence_depth:
        vm._no_fence("apply (bo_obtain and VmBo puts)")
    if vm.lock_checks:
        vm._need_apply_locks(ops)
    seq: Sequence[Op] = ops.ops if type(ops) is OpList else ops  # the tuple: no __iter__ calls
    route = vm.bus.route
    emit = vm.bus.emit if route[Mapped] or route[Unmapped] or route[TlbInvalidated] else None
    created: list[Va] = []
    kept: list[tuple[int, int]] = []
    mine = vm._immediate
    for op in seq:
        if isinstance(op, MapOp) and op.obj is not None:
            for vb in op.obj.vm_bos:
                if vb.vm._immediate is not mine:
                    vm._check_lock_mode(op.obj)
    map_bos: dict[int, VmBo] = {}
    for op in seq:
        if isinstance(op, MapOp) and op.obj is not None and id(op.obj) not in map_bos:
            map_bo = vm_bos._obtain(vm, op.obj, _APPLY)
            map_bo.extobj_add()
            map_bos[id(op.obj)] = map_bo
    for op in seq:
        if isinstance(op, UnmapOp):
            va = op.va
            if op.keep:
                kept.append((va.addr, va.end))
            elif emit is not None:
                emit(Unmapped(vm, va.addr, va.range))
                emit(TlbInvalidated(vm, va.addr, va.range))
            if va.vm_bo is not None:
                vm.unlink(va)
            vm._remove(va)
            va.freed = True
        elif isinstance(op, RemapOp):
            old = op.unmap.va
            lo, hi = op.hole()
            if op.unmap.keep:
                kept.append((lo, hi))
            elif emit is not None:
                emit(Unmapped(vm, lo, hi - lo))
                emit(TlbInvalidated(vm, lo, hi - lo))
            vm_bo = old.vm_bo
            vm._remove(old)
            for piece in (op.prev, op.next):
                if piece is None:
                    continue
                nva = Va(
                    piece.addr,
                    piece.range,
                    piece.obj,
                    piece.offset,
                    sparse=old.sparse,
                    invalidated=old.invalidated,
                    user_flags=old.user_flags,
                )
                vm._insert(nva)
                if vm_bo is not None:
                    vm.link(nva, vm_bo)
                created.append(nva)
            if vm_bo is not None:
                vm.unlink(old)
            old.freed = True
        elif isinstance(op, MapOp):
            va = Va(op.addr, op.range, op.obj, op.offset, sparse=op.obj is None)
            vm._insert(va)
            if op.obj is not None:
                vm.link(va, map_bos[id(op.obj)])
            created.append(va)
            if emit is not None:
                for a, r in _subtract(op.addr, op.end, kept):
                    emit(Mapped(vm, a, r, op.obj, (op.offset + a - op.addr) & U64_MAX))
    for map_bo in map_bos.values():
        map_bo.put(_APPLY)
    return created


def map(
    vm: GpuVm, addr: int, range: int, obj: GemObject | None = None, offset: int = 0
) -> list[Va]:
    """Compute and apply the ops of one map request (a one-op VM_BIND)."""
    return vm.apply(vm.sm_map_ops(MapRequest(addr, range, obj, offset)))


def unmap(vm: GpuVm, addr: int, range: int) -> list[Va]:
    """Compute and apply the ops that empty ``[addr, addr+range)``."""
    return vm.apply(vm.sm_unmap_ops(addr, range))


def _need_bind_locks(vm: GpuVm, reqs: list[MapRequest | UnmapRequest]) -> None:
    """Every object a bind will touch: the requests' objects and those of the VAs that
    meet any request's range now (a later request only meets those, or pieces and
    mappings of them, so this is exactly the set the binds' applies will need)."""
    touched: list[Op] = []
    for req in reqs:
        if isinstance(req, MapRequest) and req.obj is not None:
            touched.append(MapOp(req.addr, req.range, req.obj, req.offset))
        end = (req.addr + req.range) & U64_MAX
        touched += [UnmapOp(va) for va in vm.index.range_walk(req.addr, end)]
    vm._need_apply_locks(touched)  # the kernel node has no object: never locked


def bind(vm: GpuVm, requests: Iterable[MapRequest | UnmapRequest]) -> list[Va]:
    """A multi-op VM_BIND, all or nothing: every request is validated against the VM
    before the first is applied (sm_map and sm_unmap can only fail on the request's own
    range, never on the layout), then each is computed and applied in order."""
    raw: list[object] = list(requests)  # objects until checked (see _validate_ops)
    vm.check_alive("bind")
    vm._no_fence("bind")
    for req in raw:
        if isinstance(req, MapRequest):
            vm._check_map_request(req)
            if req.obj is not None:
                vm._check_lock_mode(req.obj)
        elif isinstance(req, UnmapRequest):
            vm._check_range("sm_unmap", req.addr, req.range)
        else:
            raise InvalidValue(f"not a bind request: {req!r}")
    reqs = cast("list[MapRequest | UnmapRequest]", raw)
    if vm.lock_checks:
        vm._need_bind_locks(reqs)
    # Like the ioctl's handle lookups and its VM reference, hold every request's object
    # and the VM until the bind is done: an earlier request may drop the last mapping
    # of an object (or VM) a later request still needs.
    held: dict[int, GemObject] = {}
    for req in reqs:
        if isinstance(req, MapRequest) and req.obj is not None:
            held.setdefault(id(req.obj), req.obj)
    created: list[Va] = []
    vm.get(_BIND)
    for obj in held.values():
        obj.get(_BIND)
    try:
        for req in reqs:
            if isinstance(req, MapRequest):
                created += vm.apply(vm.sm_map_ops(req))
            else:
                created += vm.apply(vm.sm_unmap_ops(req.addr, req.range))
    finally:
        for obj in held.values():
            obj.put(_BIND)
        vm.put(_BIND)
    return [va for va in created if va.inserted]


def _subtract(lo: int, hi: int, cuts: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """``[lo, hi)`` minus the sorted, disjoint ``cuts``, as ``(addr, range)`` runs."""
    pos = lo
    for a, b in sorted(cuts):
        a, b = max(a, lo), min(b, hi)
        if a >= b:
            continue
        if a > pos:
            yield pos, a - pos
        pos = max(pos, b)
    if pos < hi:
        yield pos, hi - pos
