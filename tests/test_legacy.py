"""The legacy path: first-fit iova allocator, BO-owned VMAs, get/set iova, pin/unpin,
evict/purge, and teardown at buffer free."""

from __future__ import annotations

import pytest
from flip_scenarios import of
from hypothesis import given
from hypothesis import strategies as st

from gpuvm import EventBus, EventLog, GemObject, GpuVm, RefDirection, VaIndex, explain
from gpuvm.core.errors import Busy, InvalidValue, NoSpace, NotPinned
from gpuvm.core.events import Freed, Mapped, TlbInvalidated, Unmapped, VmaCreated, VmaDestroyed
from legacy import AddressSpace, LegacyVma, bo_vmas, first_fit, path
from legacy.aspace import PAGE_SIZE, ReservedNode
from legacy.vma import KernelVma

P = PAGE_SIZE


def st8(v: KernelVma) -> tuple[bool, int]:
    """(mapped, pin count) of a VMA, read through a call so checks do not narrow."""
    return v.mapped, v.pin_count


def aspace(
    size: int = 64 * P, reserve: tuple[int, int] = (0, 0), **kw: object
) -> tuple[AddressSpace, EventLog]:
    bus = EventBus()
    log = EventLog()
    bus.subscribe(log)
    a = AddressSpace(P, size, reserve[0], reserve[1], name="as", bus=bus, **kw)  # type: ignore[arg-type]
    return a, log


def bo(size: int, bus: EventBus | None = None, name: str = "") -> GemObject:
    return GemObject(size, name=name, bus=bus or EventBus())


# --- allocator ------------------------------------------------------------------------------


def test_first_fit_lowest_aligned_hole() -> None:
    a, _ = aspace()
    b1, b2 = bo(3 * P), bo(P)
    v1 = path.get_iova(a, b1)
    v2 = path.get_iova(a, b2)
    assert (v1.addr, v1.range) == (P, 3 * P)
    assert v2.addr == 4 * P
    # a 16 KiB-aligned request skips to the next multiple of 0x4000
    assert a.alloc_iova(P, 4 * P) == 8 * P
    # the hole left by freeing b1 is reused first
    b1.put()
    assert path.get_iova(a, bo(2 * P)).addr == P


def test_first_fit_steps_around_reserved_range_and_taken() -> None:
    a, _ = aspace(16 * P, reserve=(2 * P, 4 * P))
    assert isinstance(a.reserved, ReservedNode)
    assert a.alloc_iova(P) == P
    assert a.alloc_iova(2 * P) == 6 * P  # [P, 2P) is free but too small below the reservation
    assert a.alloc_iova(P, taken=[(P, 2 * P)]) == 6 * P
    assert not a.range_valid(3 * P, P)


def test_enospc_when_no_hole_fits_and_nothing_changes() -> None:
    a, log = aspace(4 * P)
    path.get_iova(a, bo(2 * P))
    big = bo(3 * P)
    before = (list(a.index), a.refs.total)
    with pytest.raises(NoSpace) as ei:
        path.get_iova(a, big)
    assert ei.value.errno == 28  # ENOSPC
    assert (list(a.index), a.refs.total) == before
    assert bo_vmas(big) is None
    assert not log.of(VmaCreated)[1:]


@given(
    spans=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 6)), max_size=12),
    size=st.integers(1, 10),
    align_log=st.integers(0, 3),
)
def test_first_fit_matches_brute_force(
    spans: list[tuple[int, int]], size: int, align_log: int
) -> None:
    """First fit returns exactly the lowest aligned free start (checked page by page)."""
    index: VaIndex[ReservedNode] = VaIndex(RefDirection.BO_HOLDS_VMA)
    used: set[int] = set()
    for start, n in spans:
        if any(p in used for p in range(start, start + n)):
            continue
        used.update(range(start, start + n))
        index.add(ReservedNode(start * P, n * P))
    align = (1 << align_log) * P
    got = first_fit(index, 0, 48 * P, size * P, align)
    want = None
    for s in range(0, 48 - size + 1, 1 << align_log):
        if not any(p in used for p in range(s, s + size)):
            want = s * P
            break
    assert got == want


# --- one index type, two directions --------------------------------------------------------


def test_same_index_type_knows_its_direction() -> None:
    a, _ = aspace()
    vm = GpuVm(0, 1 << 32)
    assert isinstance(a.index, VaIndex) and isinstance(vm.index, VaIndex)
    assert a.direction is RefDirection.BO_HOLDS_VMA
    assert vm.direction is RefDirection.VM_BO_HOLDS_GEM


# --- VMAs -----------------------------------------------------------------------------------


def test_get_iova_is_lazy_and_vma_holds_no_buffer_ref() -> None:
    a, log = aspace()
    b = bo(2 * P, a.bus)
    vma = path.get_iova(a, b)
    assert isinstance(vma, LegacyVma) and not vma.mapped and vma.pin_count == 0
    assert path.get_iova(a, b) is vma  # one VMA per (buffer, VM)
    assert b.refcount == 1  # only the creator: the VMA holds no buffer reference
    assert a.refs.count(vma) == 1  # ... but holds its address space
    assert not log.of(Mapped)
    assert [type(e) for e in log.of(VmaCreated)] == [VmaCreated]
    assert "VMA(as" in explain(a)


def test_pin_maps_once_unpin_only_lowers() -> None:
    a, log = aspace()
    b = bo(2 * P, a.bus)
    v = path.pin(a, b)
    path.pin(a, b)
    assert st8(v) == (True, 2)
    assert len(log.of(Mapped)) == 1
    path.unpin(a, b)
    path.unpin(a, b)
    assert st8(v) == (True, 0)
    assert not log.of(Unmapped)
    with pytest.raises(NotPinned):
        path.unpin(a, b)
    a.check_invariants()


def test_evict_and_purge_unmap_but_keep_the_iova() -> None:
    a, log = aspace(tlb_kind="per_page")
    b = bo(2 * P, a.bus)
    v = path.pin(a, b)
    with pytest.raises(Busy):
        path.evict(b)
    assert st8(v) == (True, 1)
    path.unpin(a, b)
    assert path.evict(b) == [v]
    assert st8(v) == (False, 0) and v in a.vmas and v.addr == P
    assert [(e.addr, e.range) for e in of(log, Unmapped)] == [(P, 2 * P)]
    assert [(e.addr, e.range) for e in of(log, TlbInvalidated)] == [(P, 2 * P)]
    assert path.purge(b) == []  # already unmapped: nothing to do
    path.pin(a, b)  # re-pin maps again at the same iova
    assert st8(v) == (True, 1) and len(log.of(Mapped)) == 2 and v.addr == P
    assert a.tlb_kind == "per_page"


def test_set_iova_places_deletes_and_refuses() -> None:
    a, log = aspace()
    b = bo(2 * P, a.bus)
    v = path.set_iova(a, b, 8 * P)
    assert v is not None and v.addr == 8 * P
    assert path.set_iova(a, b, 8 * P) is v
    with pytest.raises(Busy):
        path.set_iova(a, b, 12 * P)  # the kernel's WARN path: another iova for the buffer
    other = bo(P, a.bus)
    with pytest.raises(NoSpace):
        path.set_iova(a, other, 9 * P)  # overlaps b
    with pytest.raises(NoSpace):
        path.set_iova(a, other, 100 * P)  # outside the window
    with pytest.raises(InvalidValue):
        path.set_iova(a, other, 8 * P + 1)
    path.pin(a, b)
    assert path.set_iova(a, b, 0) is None  # clear_iova has no pin check: pinned goes too
    assert a.vmas == [] and len(log.of(VmaDestroyed)) == 1
    assert len(log.of(Unmapped)) == 1
    assert path.set_iova(a, b, 0) is None  # deleting nothing is fine
    a.check_invariants()


def test_buffer_free_tears_down_every_vma() -> None:
    bus = EventBus()
    log = EventLog()
    bus.subscribe(log)
    kms = AddressSpace(P, 64 * P, name="kms", bus=bus, tlb_kind="per_page")
    ctx = AddressSpace(P, 64 * P, name="ctx", bus=bus)
    b = bo(2 * P, bus, name="b")
    path.pin(kms, b)
    path.get_iova(ctx, b)  # not mapped: no unmap at free
    lst = bo_vmas(b)
    assert lst is not None and len(lst.vmas) == 2
    b.put()
    assert kms.vmas == [] and ctx.vmas == [] and lst.vmas == []
    kinds = [type(e).__name__ for e in log.events if not type(e).__name__.startswith("Ref")]
    assert kinds[-5:] == ["Unmapped", "TlbInvalidated", "VmaDestroyed", "VmaDestroyed", "Freed"]
    assert [e.vm for e in of(log, Unmapped)] == [kms]


def test_address_space_lives_until_its_last_vma_goes() -> None:
    a, log = aspace()
    b = bo(P, a.bus)
    path.pin(a, b)
    a.put()  # owner drops its reference (file close): the VMA still holds the VM
    assert a.refs.total == 1
    b.put()  # buffer free tears the VMA down, dropping the last reference
    assert a.refs.total == 0 and a.freed
    assert [e.obj for e in of(log, Freed)] == [a, b]  # the VM goes inside the buffer's free


def test_close_vma_refuses_pinned() -> None:
    a, _ = aspace()
    b = bo(P, a.bus)
    path.pin(a, b)
    with pytest.raises(Busy):
        path.close_vma(a, b)
    path.unpin(a, b)
    assert path.close_vma(a, b) is True
    assert path.close_vma(a, b) is False


def test_pin_all_is_all_or_nothing() -> None:
    a, _ = aspace(4 * P)
    b1, b2 = bo(2 * P, a.bus), bo(3 * P, a.bus)
    with pytest.raises(NoSpace):
        path.pin_all(a, [b1, b2])
    assert a.vmas == [] and bo_vmas(b1) is None
    assert [v.pin_count for v in path.pin_all(a, [b1, b1])] == [2, 2]


def test_invariants_catch_corruption() -> None:
    a, _ = aspace()
    b = bo(P, a.bus)
    v = path.pin(a, b)
    a.check_invariants()
    v.pin_count = -1
    with pytest.raises(AssertionError, match="pin"):
        a.check_invariants()
    v.pin_count = 0
    lst = bo_vmas(b)
    assert lst is not None
    lst.vmas.clear()
    with pytest.raises(AssertionError, match="buffer's VMA list"):
        a.check_invariants()


def test_zero_size_buffer_cannot_be_mapped() -> None:
    a, _ = aspace()
    with pytest.raises(InvalidValue):
        path.get_iova(a, bo(0))
