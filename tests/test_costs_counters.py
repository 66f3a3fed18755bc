"""Cost counters observe model events: per VM, per device, per frame; keep is free."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpuvm import GemObject, GpuVm, MapRequest
from gpuvm.core.errors import GpuvmError, InvalidValue
from gpuvm.core.events import (
    EventBus,
    EventLog,
    FrameEnd,
    Ioctl,
    Mapped,
    Migrated,
    TlbInvalidated,
    Unmapped,
    VmaCreated,
    VmaDestroyed,
)
from gpuvm.observe.costs import CostCounters, Counts, FrameScopeError, pages_touched

P = 4096
FHD = 8_294_400  # 1920x1080 ARGB8888: 2025 pages of 4 KiB


class KmsVm(GpuVm):
    """A VM that declares itself an ordinary IOMMU domain (per-page invalidation)."""

    tlb_kind = "per_page"


class HugeVm(GpuVm):
    page_size = 2 << 20


def setup(vm_cls: type[GpuVm] = GpuVm, **kw: Any) -> tuple[GpuVm, CostCounters, EventBus]:
    bus = EventBus()
    vm = vm_cls(0, 1 << 40, name="vm", bus=bus)
    return vm, CostCounters(bus, **kw), bus


def bo(bus: EventBus, size: int = 64 * P, name: str = "bo") -> GemObject:
    return GemObject(size, name=name, bus=bus)


def state(vm: GpuVm, objs: list[GemObject]) -> object:
    """Everything observable about the model, for before/after comparisons."""
    vm.check_invariants()
    return (
        [(a, r, o.name if o else None, off) for a, r, o, off in vm.layout()],
        vm.generation,
        vm.kref,
        sorted((h.__class__.__name__, n) for h, n in vm.refs.holders.items()),
        [(o.name, o.refcount, o.freed, len(o.vm_bos)) for o in objs],
    )


# --- basic counting -----------------------------------------------------------------------


def test_map_unmap_counts_per_vm_and_device() -> None:
    bus = EventBus()
    a = GpuVm(0, 1 << 40, name="a", bus=bus)
    b = KmsVm(0, 1 << 40, name="b", bus=bus)
    c = CostCounters(bus)
    obj = bo(bus, FHD)
    a.map(0x100000, FHD, obj)
    b.map(0x200000, FHD, obj)
    b.unmap(0x200000, FHD)
    ca, cb, tot = c.vm(a), c.vm(b), c.total()
    assert (ca.map_ops, ca.unmap_ops, ca.pages_mapped, ca.pages_unmapped) == (1, 0, 2025, 0)
    assert (cb.map_ops, cb.unmap_ops, cb.pages_mapped, cb.pages_unmapped) == (1, 1, 2025, 2025)
    assert (cb.tlb_range_invalidations, cb.tlb_range_pages, cb.tlb_flushes) == (1, 2025, 0)
    assert ca.tlb_invalidations == 0
    assert tot.map_ops == 2 and tot.unmap_ops == 1 and tot.bytes_mapped == 2 * FHD
    assert ca + cb == tot
    assert list(c.per_vm()) == [a, b]


def test_each_mapped_event_is_one_map_call_and_keep_is_free() -> None:
    vm, c, bus = setup()
    obj = bo(bus)
    vm.map(0, 2 * P, obj, 0)
    assert c.total().map_ops == 1
    # identical re-map: UNMAP(keep) + MAP, the core emits no page-table event at all
    before = c.total()
    ops = vm.sm_map_ops(MapRequest(0, 2 * P, obj, 0))
    assert any(getattr(op, "keep", False) for op in ops)
    vm.apply(ops)
    assert c.total() == before
    # re-map inside the VA with matching offset: REMAP(keep) + MAP, still nothing written
    vm.map(P, P, obj, P)
    assert c.total() == before
    # growing the mapping keeps [0, 2P) and writes only [2P, 4P): one map call, two pages
    vm.map(0, 4 * P, obj, 0)
    d = c.total() - before
    assert (d.map_ops, d.pages_mapped, d.unmap_ops, d.tlb_invalidations) == (1, 2, 0, 0)


def test_a_map_split_in_two_runs_counts_two_map_calls() -> None:
    vm, c, bus = setup()
    obj, other = bo(bus, name="x"), bo(bus, name="y")
    vm.map(2 * P, P, obj, 2 * P)  # the middle page, kept by the next request
    vm.map(0, P, other, 0)
    before = c.total()
    vm.map(0, 5 * P, obj, 0)  # unmaps `other`, keeps the middle, writes [0,2P) and [3P,5P)
    d = c.total() - before
    assert (d.map_ops, d.pages_mapped) == (2, 4)
    assert (d.unmap_ops, d.pages_unmapped, d.tlb_flushes) == (1, 1, 1)


def test_remap_charges_only_the_hole() -> None:
    vm, c, bus = setup()
    obj = bo(bus)
    vm.map(0, 8 * P, obj, 0)
    before = c.total()
    vm.unmap(3 * P, 2 * P)
    d = c.total() - before
    assert (d.unmap_ops, d.pages_unmapped, d.tlb_flushes, d.tlb_flush_pages) == (1, 2, 1, 2)
    assert d.map_ops == 0  # the surviving pieces keep their PTEs


# --- page sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page_size", "pages"), [(4096, 2025), (16384, 507), (65536, 127), (2 << 20, 4)]
)
def test_pages_by_page_size(page_size: int, pages: int) -> None:
    vm, c, bus = setup(page_size=page_size)
    vm.map(0, FHD, bo(bus, FHD))
    vm.unmap(0, FHD)
    t = c.total()
    assert (t.pages_mapped, t.pages_unmapped, t.tlb_flush_pages) == (pages, pages, pages)
    assert t.pages_by_size == ((page_size, pages, pages),)
    assert t.pages_for_size(page_size) == (pages, pages)
    assert t.pages_for_size(1234) == (0, 0)


def test_page_size_resolution_order() -> None:
    bus = EventBus()
    plain = GpuVm(0, 1 << 40, name="plain", bus=bus)
    huge = HugeVm(0, 1 << 40, name="huge", bus=bus)
    forced = HugeVm(0, 1 << 40, name="forced", bus=bus)
    c = CostCounters(bus, page_size=lambda vm: 65536)
    c.configure_vm(forced, page_size=16384)
    assert c.page_size_of(plain) == 65536  # the function
    assert c.page_size_of(huge) == 2 << 20  # the VM's own attribute beats the function
    assert c.page_size_of(forced) == 16384  # configure_vm beats both
    obj = bo(bus, FHD)
    for vm in (plain, huge, forced):
        vm.map(0, FHD, obj)
    assert c.total().pages_by_size == ((16384, 507, 0), (65536, 127, 0), (2 << 20, 4, 0))
    assert c.total().pages_mapped == 507 + 127 + 4


def test_unaligned_ranges_count_every_touched_page() -> None:
    assert pages_touched(0, P, P) == 1
    assert pages_touched(1, P, P) == 2
    assert pages_touched(P - 1, 2, P) == 2
    vm, c, bus = setup(page_size=2 << 20)
    obj = bo(bus, 4 << 20)
    vm.map((2 << 20) - P, 2 * P, obj)  # straddles a 2 MiB boundary
    assert c.total().pages_mapped == 2


def test_configure_vm_after_first_event_applies_to_later_events() -> None:
    vm, c, bus = setup()
    obj = bo(bus, 4 << 20)
    vm.map(0, 2 << 20, obj)
    c.configure_vm(vm, page_size=2 << 20, tlb_kind="per_page")
    vm.unmap(0, 2 << 20)
    t = c.vm(vm)
    assert t.pages_by_size == ((4096, 512, 0), (2 << 20, 0, 1))
    assert (t.tlb_range_invalidations, t.tlb_range_pages, t.tlb_flushes) == (1, 1, 0)


@pytest.mark.parametrize("bad", [0, -4096, 3000, 4096.0, "4k"])
def test_bad_page_sizes_are_rejected(bad: Any) -> None:
    vm, c, _ = setup()
    with pytest.raises(InvalidValue):
        CostCounters(page_size=bad)
    with pytest.raises(InvalidValue):
        c.configure_vm(vm, page_size=bad)
    assert c.page_size_of(vm) == P


# --- TLB kinds ----------------------------------------------------------------------------


def test_tlb_kind_resolution_order() -> None:
    bus = EventBus()
    gpu = GpuVm(0, 1 << 40, name="gpu", bus=bus)
    kms = KmsVm(0, 1 << 40, name="kms", bus=bus)
    c = CostCounters(bus)
    assert c.tlb_kind_of(gpu) == "context_flush"  # the default
    assert c.tlb_kind_of(kms) == "per_page"  # the VM's attribute
    c.configure_vm(kms, tlb_kind="context_flush")
    assert c.tlb_kind_of(kms) == "context_flush"
    c2 = CostCounters(tlb_kind=lambda vm: "per_page" if vm.name == "gpu" else "context_flush")
    assert c2.tlb_kind_of(gpu) == "per_page"
    assert CostCounters(tlb_kind="per_page").tlb_kind_of(gpu) == "per_page"
    with pytest.raises(InvalidValue, match="tlb_kind"):
        CostCounters(tlb_kind="sometimes")
    with pytest.raises(InvalidValue):
        c.configure_vm(gpu, tlb_kind="sometimes")


def test_per_page_and_flush_invalidations_are_split() -> None:
    bus = EventBus()
    gpu = GpuVm(0, 1 << 40, name="gpu", bus=bus)
    kms = KmsVm(0, 1 << 40, name="kms", bus=bus)
    c = CostCounters(bus)
    obj = bo(bus, 16 * P)
    for vm in (gpu, kms):
        vm.map(0, 16 * P, obj)
        vm.unmap(0, 4 * P)
        vm.unmap(8 * P, 8 * P)
    g, k = c.vm(gpu), c.vm(kms)
    assert (g.tlb_flushes, g.tlb_flush_pages, g.tlb_range_invalidations) == (2, 12, 0)
    assert (k.tlb_range_invalidations, k.tlb_range_pages, k.tlb_flushes) == (2, 12, 0)
    assert c.total().tlb_invalidations == 4 and c.total().tlb_pages == 24


def test_bad_vm_declarations_fall_back_with_a_warning_and_never_raise() -> None:
    class Odd(GpuVm):
        tlb_kind = "weird"
        page_size = 3000

    bus = EventBus()
    vm = Odd(0, 1 << 40, name="odd", bus=bus)

    def boom(vm: object) -> int:
        raise RuntimeError("no")

    c = CostCounters(bus, page_size=boom)
    vm.map(0, P, bo(bus))
    assert c.tlb_kind_of(vm) == "context_flush"
    assert c.page_size_of(vm) == P
    assert len(c.warnings) == 3
    assert c.total().map_ops == 1


# --- other events -------------------------------------------------------------------------


def test_vmas_migrations_ioctls() -> None:
    bus = EventBus()
    c = CostCounters(bus)
    aspace, obj = object(), object()
    bus.emit(VmaCreated(aspace, "vma1"))
    bus.emit(VmaCreated(aspace, "vma2"))
    bus.emit(VmaDestroyed(aspace, "vma1"))
    bus.emit(Migrated(obj, "vram", "system", FHD))
    bus.emit(Ioctl("ADDFB2"))
    bus.emit(Ioctl("GEM_CLOSE"))
    bus.emit(Ioctl("GEM_CLOSE"))
    t = c.total()
    assert (t.vmas_created, t.vmas_destroyed) == (2, 1)
    assert (t.migrations, t.bytes_migrated) == (1, FHD)
    assert t.ioctls == 3 and t.ioctls_by_name == (("ADDFB2", 1), ("GEM_CLOSE", 2))
    assert c.vm(aspace).vmas_created == 2


def test_event_subclasses_are_dispatched_and_others_ignored() -> None:
    class BigMapped(Mapped):
        pass

    bus = EventBus()
    c = CostCounters(bus)
    vm = object()
    bus.emit(BigMapped(vm, 0, 2 * P, None, 0))
    bus.emit(Mapped(vm, 0, P, None, 0))
    bus.emit(FrameEnd(0))
    assert c.total().map_ops == 2 and c.total().pages_mapped == 3


# --- frames -------------------------------------------------------------------------------


def test_frame_scopes_record_one_frame_each() -> None:
    vm, c, bus = setup()
    objs = [bo(bus, FHD, f"fb{i}") for i in range(3)]
    vm.map(0, FHD, objs[0])
    for i in range(1, 7):
        with c.frame() as f:
            vm.unmap(((i - 1) % 3) << 24, FHD)
            vm.map((i % 3) << 24, FHD, objs[i % 3])
        assert f.counts is not None and f.counts.frames == 1 and f.index == i - 1
        assert (f.counts.map_ops, f.counts.unmap_ops, f.counts.tlb_invalidations) == (1, 1, 1)
    assert len(c.frames) == 6
    steady = c.frames_sum(2)
    assert steady.frames == 4 and steady.map_ops == 4
    assert steady.per_frame()["map_ops"] == 1.0
    assert c.total().frames == 6
    assert c.vm(vm).frames == 6
    assert c.total().map_ops == 7  # the warm-up map was outside any frame


def test_nested_frame_scopes_are_rejected_without_changing_anything() -> None:
    vm, c, bus = setup()
    obj = bo(bus)
    with c.frame() as outer:
        vm.map(0, P, obj)
        before = (c.total(), len(c.frames))
        with pytest.raises(FrameScopeError, match="do not nest") as info, c.frame():
            pass
        assert isinstance(info.value, GpuvmError)
        assert (c.total(), len(c.frames)) == before
        vm.map(P, P, obj, P)
    assert outer.counts is not None and outer.counts.map_ops == 2
    assert len(c.frames) == 1


def test_a_scope_left_by_an_exception_records_nothing_and_closes() -> None:
    vm, c, bus = setup()
    with pytest.raises(ZeroDivisionError), c.frame() as f:
        vm.map(0, P, bo(bus))
        _ = 1 / 0
    assert f.counts is None and len(c.frames) == 0 and c.total().frames == 0
    with c.frame() as g:
        pass
    assert g.counts == Counts(frames=1)


def test_frame_end_events_delimit_frames_outside_scopes() -> None:
    vm, c, bus = setup()
    obj = bo(bus)
    vm.map(0, P, obj)
    bus.emit(FrameEnd(0))
    vm.map(P, P, obj, P)
    vm.map(2 * P, P, obj, 2 * P)
    bus.emit(FrameEnd(1))
    bus.emit(FrameEnd(2))
    assert [f.map_ops for f in c.frames] == [1, 2, 0]
    # inside an explicit scope, FrameEnd is not a boundary: the scope is one frame
    with c.frame() as f:
        vm.map(3 * P, P, obj, 3 * P)
        bus.emit(FrameEnd(3))
        vm.map(4 * P, P, obj, 4 * P)
    assert f.counts is not None and f.counts.map_ops == 2
    assert len(c.frames) == 4
    assert Counts.sum(c.frames) == c.total()


def test_keep_frames_false_still_counts_frames() -> None:
    vm, c, bus = setup(keep_frames=False)
    obj = bo(bus)
    mark = c.total()
    for i in range(5):
        vm.map(i * P, P, obj, i * P)
        bus.emit(FrameEnd(i))
    assert c.frames == [] or len(c.frames) == 0
    steady = c.total() - mark
    assert steady.frames == 5 and steady.per_frame()["map_ops"] == 1.0


def test_per_frame_needs_frames() -> None:
    with pytest.raises(FrameScopeError):
        Counts(map_ops=3).per_frame()


def test_detach_and_reset() -> None:
    vm, c, bus = setup()
    obj = bo(bus)
    vm.map(0, P, obj)
    c.reset()
    assert c.total() == Counts() and c.per_vm() == {}
    vm.map(P, P, obj, P)
    c.detach()
    vm.map(2 * P, P, obj, 2 * P)
    assert c.total().map_ops == 1
    assert bus.listeners == []


# --- counts arithmetic --------------------------------------------------------------------


def test_counts_arithmetic_and_json() -> None:
    a = Counts(map_ops=1, pages_mapped=5, pages_by_size=((4096, 5, 0),), ioctls_by_name=(("X", 1),))
    b = Counts(unmap_ops=2, pages_unmapped=3, pages_by_size=((4096, 0, 3), (65536, 0, 0)))
    s = a + b
    assert s.pages_by_size == ((4096, 5, 3),)
    assert s - b == a
    assert Counts.sum([a, b, Counts()]) == s
    assert json.loads(json.dumps(s.as_dict()))["pages_by_size"] == {
        "4096": {"mapped": 5, "unmapped": 3}
    }


# --- observers do not change the model ----------------------------------------------------


def _script(vm: GpuVm, objs: list[GemObject]) -> None:
    a, b = objs
    vm.map(0, 8 * P, a)
    vm.map(2 * P, 2 * P, b)
    vm.map(0, 8 * P, a)  # partial keep
    vm.unmap(P, 3 * P)
    vm.bind([MapRequest(16 * P, 4 * P, b, 0), MapRequest(18 * P, P, a, 0)])
    vm.map(16 * P, 4 * P, b, 0)


def _run(with_counters: bool) -> tuple[object, list[tuple[str, tuple[Any, ...]]], Counts | None]:
    bus = EventBus()
    log = EventLog()
    bus.subscribe(log)
    c = CostCounters(bus) if with_counters else None
    vm = GpuVm(0, 1 << 40, name="vm", bus=bus)
    objs = [bo(bus, 32 * P, "a"), bo(bus, 32 * P, "b")]
    if c is not None:
        with c.frame():
            _script(vm, objs)
    else:
        _script(vm, objs)
    events = [
        (e.kind, tuple(v for k, v in sorted(vars_of(e).items()) if isinstance(v, int | str)))
        for e in log.events
    ]
    return state(vm, objs), events, None if c is None else c.total()


def vars_of(e: object) -> dict[str, Any]:
    return {k: getattr(e, k) for k in getattr(e, "__slots__", ()) if hasattr(e, k)}


def test_counters_never_change_the_model() -> None:
    s0, ev0, _ = _run(False)
    s1, ev1, counts = _run(True)
    assert s0 == s1
    assert ev0 == ev1
    assert counts is not None and counts.map_ops > 0


def test_counting_is_deterministic() -> None:
    _, _, a = _run(True)
    _, _, b = _run(True)
    assert a is not None and b is not None and a == b
    assert json.dumps(a.as_dict()) == json.dumps(b.as_dict())


# --- property: counters agree with a reference count over the event log ------------------

PAGES = 32
req = st.tuples(
    st.booleans(),
    st.integers(0, PAGES - 1),
    st.integers(1, 8),
    st.integers(0, 1),
    st.integers(0, 4),
)


@given(st.lists(req, max_size=25), st.sampled_from([4096, 8192, 65536]), st.booleans())
def test_counts_match_the_event_log(
    reqs: list[tuple[bool, int, int, int, int]], page_size: int, per_page: bool
) -> None:
    bus = EventBus()
    log = EventLog()
    bus.subscribe(log)
    vm = GpuVm(0, PAGES * P + 16 * P, name="vm", bus=bus)
    c = CostCounters(bus, page_size=page_size, tlb_kind="per_page" if per_page else "context_flush")
    objs = [bo(bus, 64 * P, "a"), bo(bus, 64 * P, "b")]
    for i, (is_map, start, n, which, off) in enumerate(reqs):
        with c.frame():
            if is_map:
                vm.map(start * P, n * P, objs[which], off * P)
            else:
                vm.unmap(start * P, n * P)
        if i % 3 == 0:
            bus.emit(FrameEnd(i))
        vm.check_invariants()

    def pages(e: Any) -> int:
        return pages_touched(e.addr, e.range, page_size)

    mapped = log.of(Mapped)
    unmapped = log.of(Unmapped)
    tlb = log.of(TlbInvalidated)
    t = c.total()
    assert t.map_ops == len(mapped) and t.unmap_ops == len(unmapped)
    assert t.pages_mapped == sum(pages(e) for e in mapped)
    assert t.pages_unmapped == sum(pages(e) for e in unmapped)
    assert t.tlb_invalidations == len(tlb) == len(unmapped)
    assert t.tlb_pages == sum(pages(e) for e in tlb)
    assert (t.tlb_range_invalidations > 0) == (per_page and len(tlb) > 0)
    assert Counts.sum(c.frames) == t
    assert c.vm(vm) == t
