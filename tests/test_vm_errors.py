"""Every rejection the core implements (drm_gpuvm.c's errnos, and the misuse the kernel
only WARNs about or leaves undefined): the right GpuvmError subclass,
the kernel errno, and a whole-model snapshot (layout, VA identities, every holder dict,
GEM lists, extobj/evict lists, generation, warnings) unchanged, with no event emitted.

Each case runs against the same busy scene: a VM with a kernel-reserved node, linked
mappings of an external and a VM-private buffer, a sparse mapping, a raw inserted VA,
a VmBo held by a caller and evicted, and a second VM sharing a buffer.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from snapshot import snapshot, unchanged

from gpuvm import (
    CALLER,
    OWNER,
    AlreadyInserted,
    ArgumentTypeError,
    GemObject,
    GpuVm,
    GpuvmError,
    Holder,
    InitOverflow,
    InvalidArgument,
    InvalidRange,
    InvalidValue,
    LeakError,
    LinkError,
    MapOp,
    MapRequest,
    NoObject,
    NotImmediateMode,
    NotInserted,
    NotSupported,
    OpList,
    OutOfBounds,
    Piece,
    PrefetchOp,
    RefcountUnderflow,
    RemapOp,
    StaleOps,
    UnmapOp,
    UnmapRequest,
    UseAfterFree,
    Va,
    VaExists,
    VaInUse,
    VmBo,
    ZeroRange,
    compiled,
)
from gpuvm.core.events import Freed

TOP = 1 << 64


@attrs.define
class Scene:
    vm: GpuVm
    vm2: GpuVm
    ext: GemObject  # external to vm (own resv), mapped in vm and vm2
    priv: GemObject  # VM-private: shares vm.resv
    other: GemObject  # never mapped
    va_ext: Va
    va_priv: Va
    va_sparse: Va
    raw: Va  # inserted, not linked
    vb_ext: VmBo  # also held by CALLER, evicted
    va2: Va
    vb2: VmBo

    def roots(self) -> tuple[object, ...]:
        return (self.vm, self.vm2, self.ext, self.priv, self.other, self.raw)


def scene() -> Scene:
    vm = GpuVm(0x1000, 0x10000, reserve_start=0x1000, reserve_range=0x100, name="vm")
    vm2 = GpuVm(0, 0x10000, name="vm2")
    ext = GemObject(0x1000, name="ext")
    priv = GemObject(0x1000, name="priv", resv=vm.resv)
    other = GemObject(0x1000, name="other")
    (va_ext,) = vm.map(0x2000, 0x100, ext, 0)
    (va_priv,) = vm.map(0x3000, 0x100, priv, 0x10)
    (va_sparse,) = vm.map(0x4000, 0x100, None, 0)
    raw = vm.insert(0x5000, 0x100, ext, 0x40)
    vb_ext = vm.bo_obtain(ext)
    vb_ext.evict(True)
    (va2,) = vm2.map(0x2000, 0x100, ext, 0)
    vb2 = va2.vm_bo
    assert vb2 is not None
    vm.check_invariants()
    vm2.check_invariants()
    return Scene(vm, vm2, ext, priv, other, va_ext, va_priv, va_sparse, raw, vb_ext, va2, vb2)


Case = tuple[str, Callable[[Scene], Any], type[GpuvmError], int]

EINVAL, EEXIST, EBUSY = errno.EINVAL, errno.EEXIST, errno.EBUSY
ESTALE, EOPNOTSUPP, EFAULT = errno.ESTALE, errno.EOPNOTSUPP, errno.EFAULT

CASES: list[Case] = [
    # --- zero ranges (the kernel accepts them and builds an inverted interval) ---
    ("insert zero range", lambda s: s.vm.insert(0x6000, 0, s.ext, 0), ZeroRange, EINVAL),
    (
        "sm_map zero range",
        lambda s: s.vm.sm_map_ops(MapRequest(0x2000, 0, s.ext)),
        ZeroRange,
        EINVAL,
    ),
    ("sm_unmap zero range", lambda s: s.vm.sm_unmap_ops(0x2050, 0), ZeroRange, EINVAL),
    ("map zero range", lambda s: s.vm.map(0x2050, 0, s.ext), ZeroRange, EINVAL),
    ("unmap zero range", lambda s: s.vm.unmap(0x2050, 0), ZeroRange, EINVAL),
    (
        "sm_map cb zero range",
        lambda s: s.vm.sm_map(MapRequest(0x2050, 0), lambda op: 0),
        ZeroRange,
        EINVAL,
    ),
    ("sm_unmap cb zero range", lambda s: s.vm.sm_unmap(0x2050, 0, lambda op: 0), ZeroRange, EINVAL),
    # --- drm_gpuvm_range_valid failures ---
    ("insert below window", lambda s: s.vm.insert(0x0, 0x100), InvalidRange, EINVAL),
    ("insert straddling window start", lambda s: s.vm.insert(0xF00, 0x200), InvalidRange, EINVAL),
    ("insert past window end", lambda s: s.vm.insert(0x10F00, 0x200), InvalidRange, EINVAL),
    ("insert overflowing u64", lambda s: s.vm.insert(TOP - 0x10, 0x20), InvalidRange, EINVAL),
    ("insert in kernel node", lambda s: s.vm.insert(0x1080, 0x10), InvalidRange, EINVAL),
    ("insert over kernel node end", lambda s: s.vm.insert(0x10FF, 0x10), InvalidRange, EINVAL),
    (
        "sm_map outside window",
        lambda s: s.vm.sm_map_ops(MapRequest(0x11000, 1)),
        InvalidRange,
        EINVAL,
    ),
    ("sm_map overflow", lambda s: s.vm.sm_map_ops(MapRequest(TOP - 1, 1)), InvalidRange, EINVAL),
    (
        "sm_map kernel node",
        lambda s: s.vm.sm_map_ops(MapRequest(0x1000, 0x2000)),
        InvalidRange,
        EINVAL,
    ),
    ("sm_unmap outside window", lambda s: s.vm.sm_unmap_ops(0x0, 0x1001), InvalidRange, EINVAL),
    ("sm_unmap kernel node", lambda s: s.vm.sm_unmap_ops(0x10FF, 1), InvalidRange, EINVAL),
    ("map kernel node", lambda s: s.vm.map(0x1000, 0x10, s.ext), InvalidRange, EINVAL),
    ("unmap overflow", lambda s: s.vm.unmap(TOP - 1, 1), InvalidRange, EINVAL),
    # --- the tree ---
    ("insert onto a VA", lambda s: s.vm.insert(0x20FF, 0x10, s.ext), VaExists, EEXIST),
    ("insert onto a raw VA", lambda s: s.vm.insert(0x4F00, 0x101), VaExists, EEXIST),
    ("insert covering VAs", lambda s: s.vm.insert(0x1100, 0x8000), VaExists, EEXIST),
    ("double insert", lambda s: s.vm.insert_va(s.raw), AlreadyInserted, EEXIST),
    ("insert into a second VM", lambda s: s.vm2.insert_va(s.va_ext), AlreadyInserted, EEXIST),
    ("remove never inserted", lambda s: s.vm.remove(Va(0x7000, 0x10)), NotInserted, EINVAL),
    ("remove another VM's VA", lambda s: s.vm.remove(s.va2), NotInserted, EINVAL),
    # --- link / unlink ---
    ("link object mismatch", lambda s: s.vm.link(s.raw, s.vm.bo_create(s.priv)), LinkError, EINVAL),
    ("link VM mismatch", lambda s: s.vm.link(s.raw, s.vb2), LinkError, EINVAL),
    ("link twice", lambda s: s.vm.link(s.va_ext, s.vb_ext), LinkError, EINVAL),
    ("unlink unlinked", lambda s: s.vm.unlink(s.raw), LinkError, EINVAL),
    (
        "link uninserted",
        lambda s: s.vm.link(Va(0x7000, 0x10, s.ext), s.vb_ext),
        NotInserted,
        EINVAL,
    ),
    ("obtain_prealloc foreign", lambda s: s.vm.bo_obtain_prealloc(s.vb2), LinkError, EINVAL),
    (
        "obtain_prealloc outside IMMEDIATE_MODE",
        lambda s: s.vm.bo_obtain_prealloc(s.vb_ext),
        NotImmediateMode,
        EINVAL,
    ),
    ("bo_unmap_ops foreign", lambda s: s.vm.bo_unmap_ops(s.vb2), LinkError, EINVAL),
    ("bo_evict foreign", lambda s: s.vm.bo_evict(s.vb2), LinkError, EINVAL),
    # --- freeing VAs ---
    ("free inserted VA", lambda s: s.vm.free_va(s.raw), VaInUse, EBUSY),
    ("free linked VA", lambda s: s.vm.free_va(s.va_ext), VaInUse, EBUSY),
    # --- reference counts ---
    ("VmBo extra put", lambda s: s.vb2.put(CALLER), RefcountUnderflow, EINVAL),
    ("VmBo put by a VA not linked", lambda s: s.vb_ext.put(s.raw), RefcountUnderflow, EINVAL),
    ("GEM put by a stranger", lambda s: s.ext.put(Holder("stranger")), RefcountUnderflow, EINVAL),
    ("VM put by a stranger", lambda s: s.vm.put(Holder("stranger")), RefcountUnderflow, EINVAL),
    ("VM put by a removed VA", lambda s: s.vm.put(Va(0x7000, 1)), RefcountUnderflow, EINVAL),
    (
        "close without owner ref",
        lambda s: s.vm.close(),
        RefcountUnderflow,
        EINVAL,
    ),
    ("teardown with leaks", lambda s: s.vm.teardown(strict=True), LeakError, EBUSY),
    # --- validation, locking ---
    ("validate without callback", lambda s: s.vm.validate(), NotSupported, EOPNOTSUPP),
    (
        "prepare_range over sparse VA",
        lambda s: s.vm.prepare_range(0x3000, 0x1100),
        NoObject,
        EINVAL,
    ),
    (
        "prepare_range over kernel node",
        lambda s: s.vm.prepare_range(0x1000, 0x10),
        NoObject,
        EINVAL,
    ),
    ("exec_lock_range over sparse", lambda s: s.vm.exec_lock_range(0x4000, 1), NoObject, EINVAL),
    # --- values that are not u64 ---
    ("insert negative addr", lambda s: s.vm.insert(-1, 0x10), InvalidArgument, EINVAL),
    ("insert 2**64 range", lambda s: s.vm.insert(0x6000, TOP), InvalidArgument, EINVAL),
    (
        "insert 2**64 offset",
        lambda s: s.vm.insert(0x6000, 0x10, s.ext, TOP),
        InvalidArgument,
        EINVAL,
    ),
    ("insert float addr", lambda s: s.vm.insert(0x6000 + 0.5, 0x10), ArgumentTypeError, EINVAL),  # type: ignore[arg-type]
    ("map bool range", lambda s: s.vm.map(0x6000, True), ArgumentTypeError, EINVAL),
    (
        "sm_map negative offset",
        lambda s: s.vm.sm_map_ops(MapRequest(0x6000, 1, s.ext, -1)),
        InvalidArgument,
        EINVAL,
    ),
    ("sm_map 2**64 addr", lambda s: s.vm.sm_map_ops(MapRequest(TOP, 1)), InvalidArgument, EINVAL),
    ("sm_unmap negative range", lambda s: s.vm.sm_unmap_ops(0x6000, -1), InvalidArgument, EINVAL),
    ("find_first negative", lambda s: s.vm.find_first(-1, 1), InvalidArgument, EINVAL),
    ("find 2**64", lambda s: s.vm.find(TOP, 1), InvalidArgument, EINVAL),
    ("find_prev 2**64", lambda s: s.vm.find_prev(TOP), InvalidArgument, EINVAL),
    ("find_next negative", lambda s: s.vm.find_next(-1), InvalidArgument, EINVAL),
    ("interval_empty negative", lambda s: s.vm.interval_empty(0, -1), InvalidArgument, EINVAL),
    ("prefetch 2**64", lambda s: s.vm.prefetch_ops(TOP, 0), InvalidArgument, EINVAL),
    ("prepare_range negative", lambda s: s.vm.prepare_range(-1, 5), InvalidArgument, EINVAL),
    ("iter_range 2**64", lambda s: s.vm.iter_range(0, TOP), InvalidArgument, EINVAL),
    # --- bind is all or nothing ---
    (
        "bind with one bad request",
        lambda s: s.vm.bind(
            [UnmapRequest(0x2000, 0x100), MapRequest(0x6000, 0x10, s.ext), MapRequest(0x1000, 1)]
        ),
        InvalidRange,
        EINVAL,
    ),
    (
        "bind with a zero unmap last",
        lambda s: s.vm.bind([MapRequest(0x2000, 0x200, s.priv), UnmapRequest(0x2000, 0)]),
        ZeroRange,
        EINVAL,
    ),
    (
        "bind with a bad offset",
        lambda s: s.vm.bind([UnmapRequest(0x2000, 0x100), MapRequest(0x6000, 1, s.ext, TOP)]),
        InvalidArgument,
        EINVAL,
    ),
]


@pytest.mark.parametrize(("name", "call", "exc", "err"), CASES, ids=[c[0] for c in CASES])
def test_rejection_leaves_model_unchanged(
    name: str, call: Callable[[Scene], Any], exc: type[GpuvmError], err: int
) -> None:
    if name == "insert float addr" and compiled():
        pytest.skip(
            "compiled core: mypyc refuses a float for an int parameter with its own TypeError "
            "before the model's check (docs/compiled.md)"
        )
    if name == "map bool range" and compiled():
        pytest.skip(
            "compiled core: mypyc turns a bool passed for an int parameter into 0 or 1 before "
            "the model's check sees it (docs/compiled.md)"
        )
    s = scene()
    if name == "close without owner ref":
        s.vm.get(Holder("keeper"))  # so that dropping OWNER first does not free the VM
        s.vm.put(OWNER)
        call = lambda s: s.vm.close()  # noqa: E731
    if name == "link object mismatch":
        pre = s.vm.bo_create(s.priv)  # set up outside the snapshot
        call = lambda s: s.vm.link(s.raw, pre)  # noqa: E731
    with unchanged(*s.roots()), pytest.raises(exc) as ei:
        call(s)
    assert type(ei.value) is exc
    assert isinstance(ei.value, GpuvmError)
    assert ei.value.errno == err
    kernel_names = {errno.EOPNOTSUPP: "EOPNOTSUPP", errno.EDEADLK: "EDEADLK"}
    assert ei.value.errno_name == kernel_names.get(err, errno.errorcode[err])
    assert ei.value.errno_name in str(ei.value)
    s.vm.check_invariants()
    s.vm2.check_invariants()


# --- stale op lists ---------------------------------------------------------------------


def test_stale_ops_after_any_tree_change() -> None:
    s = scene()
    ops = s.vm.sm_map_ops(MapRequest(0x2000, 0x200, s.other, 0))
    s.vm.map(0x8000, 0x10, s.priv)  # the VA space changes: the list is stale
    with unchanged(*s.roots()), pytest.raises(StaleOps) as ei:
        s.vm.apply(ops)
    assert ei.value.errno == ESTALE
    # and a list built from a remove-only change is stale too
    ops = s.vm.sm_unmap_ops(0x2000, 0x100)
    s.vm.remove(s.raw)
    with unchanged(*s.roots()), pytest.raises(StaleOps):
        s.vm.apply(ops)


def test_stale_ops_from_another_vm() -> None:
    s = scene()
    ops = s.vm2.sm_unmap_ops(0x2000, 0x100)
    with unchanged(*s.roots()), pytest.raises(StaleOps) as ei:
        s.vm.apply(ops)
    assert ei.value.errno == ESTALE
    # the same list is fine on its own VM
    s.vm2.apply(ops)
    assert s.vm2.vas == []


def test_fresh_list_applies_once_then_is_stale() -> None:
    s = scene()
    ops = s.vm.sm_unmap_ops(0x2000, 0x100)
    s.vm.apply(ops)
    with unchanged(*s.roots()), pytest.raises(StaleOps):
        s.vm.apply(ops)


HAND_MADE: list[tuple[str, Callable[[Scene], list[Any]], type[GpuvmError]]] = [
    ("remap without pieces", lambda s: [RemapOp(None, None, UnmapOp(s.va_ext))], InvalidRange),
    (
        "piece outside its VA",
        lambda s: [RemapOp(Piece(0x1F00, 0x10, s.ext, 0), None, UnmapOp(s.va_ext))],
        InvalidRange,
    ),
    (
        "piece of another object",
        lambda s: [RemapOp(Piece(0x2000, 0x10, s.priv, 0), None, UnmapOp(s.va_ext))],
        InvalidRange,
    ),
    ("map over a VA", lambda s: [MapOp(0x2080, 0x100, s.other, 0)], VaExists),
    (
        "two maps overlapping",
        lambda s: [MapOp(0x8000, 0x10, None, 0), MapOp(0x8008, 0x10, None, 0)],
        VaExists,
    ),
    ("unmap twice", lambda s: [UnmapOp(s.va_ext), UnmapOp(s.va_ext)], StaleOps),
    ("unmap a foreign VA", lambda s: [UnmapOp(s.va2)], StaleOps),
    ("unmap a removed VA", lambda s: [UnmapOp(Va(0x2000, 0x100, s.ext))], StaleOps),
    ("unmap the kernel node", lambda s: [UnmapOp(_knode(s.vm))], InvalidRange),
    ("prefetch op", lambda s: [PrefetchOp(s.va_ext)], StaleOps),
    ("map zero range", lambda s: [UnmapOp(s.va_ext), MapOp(0x2000, 0, s.ext, 0)], ZeroRange),
    ("map in kernel node", lambda s: [MapOp(0x1000, 0x10, s.ext, 0)], InvalidRange),
    ("map a freed object", lambda s: [MapOp(0x8000, 0x10, _freed(), 0)], UseAfterFree),
]


def _knode(vm: GpuVm) -> Va:
    assert vm.kernel_node is not None
    return vm.kernel_node


def _freed() -> GemObject:
    g = GemObject(0x10, name="gone")
    g.put()
    return g


@pytest.mark.parametrize(("name", "make", "exc"), HAND_MADE, ids=[c[0] for c in HAND_MADE])
def test_hand_made_op_lists_are_validated_whole(
    name: str, make: Callable[[Scene], list[Any]], exc: type[GpuvmError]
) -> None:
    """``apply`` validates the whole list before the first change: a good op before a bad
    one is not applied either."""
    s = scene()
    ops = [UnmapOp(s.va_priv), *make(s)]
    with unchanged(*s.roots()), pytest.raises(exc) as ei:
        s.vm.apply(ops)
    assert ei.value.errno == exc.errno


# --- WARN-and-carry-on cases ---------------------------------------------------------------


def test_remove_kernel_node_warns_and_does_nothing_else() -> None:
    s = scene()
    knode = s.vm.kernel_node
    assert knode is not None
    before = snapshot(*s.roots())
    s.vm.remove(knode)
    after = snapshot(*s.roots())
    assert len(s.vm.warnings) == 1 and "kernel" in s.vm.warnings[0]
    # everything but the warnings list is as it was
    s.vm.warnings.clear()
    assert snapshot(*s.roots()) == before
    assert after != before
    assert knode.inserted and knode in list(s.vm)
    s.vm.check_invariants()


def test_link_of_objectless_va_is_a_recorded_noop() -> None:
    s = scene()
    s.vm.link(s.va_sparse, s.vb_ext)
    assert s.va_sparse.vm_bo is None and s.va_sparse not in s.vb_ext.vas
    assert len(s.vm.warnings) == 1
    s.vm.check_invariants()


# --- construction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "exc"),
    [
        ({"start": TOP - 0x10, "range": 0x20}, InitOverflow),
        ({"start": 0, "range": TOP}, InvalidValue),
        ({"start": 1, "range": TOP - 1}, InitOverflow),
        ({"start": 0, "range": 0x100, "reserve_start": TOP - 1, "reserve_range": 2}, InitOverflow),
        ({"start": -1, "range": 0x100}, InvalidValue),
        ({"start": 0, "range": 0x100, "reserve_range": -5}, InvalidValue),
    ],
)
def test_init_rejections_take_no_reference(kw: dict[str, Any], exc: type[GpuvmError]) -> None:
    r_obj = GemObject(0, name="r_obj")
    with unchanged(r_obj), pytest.raises(exc) as ei:
        GpuVm(**kw, r_obj=r_obj)
    assert ei.value.errno == EINVAL


def test_init_limits_accepted() -> None:
    vm = GpuVm(0, TOP - 1, reserve_start=TOP - 2, reserve_range=1)
    assert vm.kernel_node is not None
    vm.map(0, TOP - 2, None, 0)
    assert vm.layout() == [(0, TOP - 2, None, 0)]
    vm.check_invariants()


@pytest.mark.parametrize("size", [-1, TOP, 1.0])
def test_gem_size_must_be_u64(size: Any) -> None:
    with pytest.raises(InvalidValue):
        GemObject(size)


# --- use after free ----------------------------------------------------------------------


def test_operations_on_freed_objects() -> None:
    s = scene()
    gone = _freed()
    with unchanged(*s.roots()), pytest.raises(UseAfterFree) as ei:
        s.vm.map(0x8000, 0x10, gone, 0)
    assert ei.value.errno == EFAULT
    with unchanged(*s.roots()), pytest.raises(UseAfterFree):
        s.vm.bo_obtain(gone)
    with unchanged(*s.roots()), pytest.raises(UseAfterFree):
        s.vm.insert(0x8000, 0x10, gone, 0)
    with unchanged(*s.roots()), pytest.raises(UseAfterFree):
        s.vm.bind([UnmapRequest(0x2000, 0x100), MapRequest(0x8000, 0x10, gone)])
    freed_vm = GpuVm(0, 0x100)
    freed_vm.close()
    assert freed_vm.freed
    for call in (
        lambda: freed_vm.map(0, 1, None),
        lambda: freed_vm.insert(0, 1),
        lambda: freed_vm.get(),
        lambda: freed_vm.close(),
        lambda: freed_vm.bo_create(s.other),
        lambda: freed_vm.validate(lambda vb: 0),
    ):
        with unchanged(*s.roots(), freed_vm), pytest.raises(UseAfterFree):
            call()


def test_bounds_check_is_optional() -> None:
    vm = GpuVm(0, 0x1000, check_bounds=True)
    bo = GemObject(0x100)
    vm.map(0, 0x80, bo, 0x80)
    with unchanged(vm, bo), pytest.raises(OutOfBounds) as ei:
        vm.map(0x200, 0x80, bo, 0x81)
    assert ei.value.errno == EINVAL
    with unchanged(vm, bo), pytest.raises(OutOfBounds):
        vm.insert(0x400, 0x101, bo, 0)
    # off by default, as in the kernel
    loose = GpuVm(0, 0x1000)
    loose.map(0, 0x200, bo, 0xFFFF)
    assert loose.layout() == [(0, 0x200, bo, 0xFFFF)]


def test_bind_holds_its_objects_until_done() -> None:
    """An earlier request dropping the last mapping of an object a later request maps
    must not free it in between (the kernel holds the handle lookup's reference)."""
    vm = GpuVm(0, 0x1000)
    bo = GemObject(0x100)
    vm.map(0, 0x10, bo, 0)
    bo.put()  # only the mapping keeps it alive now
    vm.bind([UnmapRequest(0, 0x10), MapRequest(0x20, 0x10, bo, 0)])
    assert not bo.freed and vm.layout() == [(0x20, 0x10, bo, 0)]
    assert bo.refcount == 1 and bo.refs.holders == {bo.vm_bos[0]: 1}
    vm.bind([UnmapRequest(0x20, 0x10)])
    assert bo.freed
    vm.check_invariants()  # type: ignore[unreachable]  # mypy narrowed bo.freed


# --- the snapshot helper itself ----------------------------------------------------------


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.vm.map(0x8000, 0x10, s.other),
        lambda s: s.vm.remove(s.raw),
        lambda s: s.vb_ext.get(Holder("x")),
        lambda s: s.ext.get(Holder("x")),
        lambda s: s.vb_ext.evict(False),
        lambda s: s.vm.warnings.append("w"),
        lambda s: setattr(s.va_ext, "invalidated", True),
        lambda s: s.vm.prepare_objects() and s.vm.bo_obtain(s.other).extobj_add(),
        lambda s: s.vm2.get(Holder("x")),
    ],
)
def test_snapshot_sees_every_kind_of_change(mutate: Callable[[Scene], Any]) -> None:
    s = scene()
    with (
        pytest.raises(AssertionError, match=r"state changed|events emitted"),
        unchanged(*s.roots()),
    ):
        mutate(s)


def test_snapshot_sees_events_alone() -> None:
    s = scene()
    with pytest.raises(AssertionError, match="events emitted"), unchanged(*s.roots()):
        s.vm.bus.emit(Freed(s.other))


# --- op lists built by the VM vs by hand -------------------------------------------------


def test_hand_built_oplist_at_current_generation_is_still_validated() -> None:
    """Only lists the VM built itself skip the structural checks; an OpList a caller
    stamps with the current generation is checked in full."""
    s = scene()
    forged = OpList(s.vm, s.vm.generation, (RemapOp(None, None, UnmapOp(s.va_ext)),))
    with unchanged(*s.roots()), pytest.raises(InvalidRange):
        s.vm.apply(forged)
    forged = OpList(s.vm, s.vm.generation, (MapOp(0x2000, 0x10, s.other, 0),))
    with unchanged(*s.roots()), pytest.raises(VaExists):
        s.vm.apply(forged)


def test_object_freed_after_ops_were_built() -> None:
    """Freeing a request's object does not change the VA space (no new generation), so
    the list is fresh; apply must still refuse to map a freed object, changing nothing."""
    s = scene()
    ops = s.vm.sm_map_ops(MapRequest(0x2000, 0x200, s.other, 0))
    s.other.put()
    assert s.other.freed
    with unchanged(*s.roots()), pytest.raises(UseAfterFree):
        s.vm.apply(ops)
    with unchanged(*s.roots()), pytest.raises(StaleOps):
        s.vm2.apply(ops)


def test_bounds_checked_at_apply_for_fresh_lists() -> None:
    vm = GpuVm(0, 0x1000)
    bo = GemObject(0x100)
    ops = vm.sm_map_ops(MapRequest(0, 0x80, bo, 0x90))  # bounds not checked yet
    vm.check_bounds = True
    with unchanged(vm, bo), pytest.raises(OutOfBounds):
        vm.apply(ops)


# --- wrong types are GpuvmErrors too -------------------------------------------------------

WRONG_TYPES: list[tuple[str, Callable[[Scene], Any]]] = [
    ("map a non-GEM", lambda s: s.vm.map(0x8000, 0x10, "not a gem", 0)),  # type: ignore[arg-type]
    ("sm_map_ops(None)", lambda s: s.vm.sm_map_ops(None)),  # type: ignore[arg-type]
    ("insert a non-GEM", lambda s: s.vm.insert(0x8000, 0x10, 42, 0)),  # type: ignore[arg-type]
    ("bind a non-request", lambda s: s.vm.bind([UnmapRequest(0x2000, 0x100), "x"])),  # type: ignore[list-item]
    ("apply a non-op", lambda s: s.vm.apply([UnmapOp(s.va_priv), "x"])),  # type: ignore[list-item]
    ("apply a non-list", lambda s: s.vm.apply(42)),  # type: ignore[arg-type]
    ("MapOp of a non-GEM", lambda s: s.vm.apply([MapOp(0x8000, 0x10, 3.5, 0)])),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("name", "call"), WRONG_TYPES, ids=[c[0] for c in WRONG_TYPES])
def test_wrong_types_raise_invalid_value(name: str, call: Callable[[Scene], Any]) -> None:
    if name == "sm_map_ops(None)" and compiled():
        pytest.skip(
            "compiled core: mypyc refuses a non-MapRequest for a MapRequest parameter (a "
            "native class) with its own TypeError before the model's check (docs/compiled.md)"
        )
    s = scene()
    with unchanged(*s.roots()), pytest.raises(InvalidValue) as ei:
        call(s)
    assert ei.value.errno == EINVAL
