"""The cost counters' hot path: one handler per counted event type, tallying into flat lists.

:class:`~gpuvm.observe.costs.counters.CostCounters` subscribes these handlers to a bus
(:meth:`~gpuvm.core.events.EventBus.subscribe_handlers`); each is a closure over the
device tally and the per-VM states (no attribute lookups on the counters object).  A module
of its own, with the per-VM state class, so that the compiled build (``docs/compiled.md``)
compiles the handlers: every ``Mapped`` / ``Unmapped`` / ``TlbInvalidated`` / VMA / ioctl
event of a study runs through them.  The counters' public API stays in ``counters``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from gpuvm.core.events import (
    Event,
    Ioctl,
    Mapped,
    Migrated,
    TlbInvalidated,
    Unmapped,
    VmaCreated,
    VmaDestroyed,
)
from gpuvm.observe.costs import counts

__all__ = ["SlotKey", "VmState", "make_handlers"]

NF: Final = len(counts.INT_FIELDS)
_MAP_OPS: Final = counts.MAP_OPS
_UNMAP_OPS: Final = counts.UNMAP_OPS
_PAGES_MAPPED: Final = counts.PAGES_MAPPED
_PAGES_UNMAPPED: Final = counts.PAGES_UNMAPPED
_BYTES_MAPPED: Final = counts.BYTES_MAPPED
_BYTES_UNMAPPED: Final = counts.BYTES_UNMAPPED
_TLB_RANGE: Final = counts.TLB_RANGE
_TLB_RANGE_PAGES: Final = counts.TLB_RANGE_PAGES
_TLB_FLUSH: Final = counts.TLB_FLUSH
_TLB_FLUSH_PAGES: Final = counts.TLB_FLUSH_PAGES
_VMAS_CREATED: Final = counts.VMAS_CREATED
_VMAS_DESTROYED: Final = counts.VMAS_DESTROYED
_MIGRATIONS: Final = counts.MIGRATIONS
_BYTES_MIGRATED: Final = counts.BYTES_MIGRATED
_IOCTLS: Final = counts.IOCTLS
_MAX_EXACT: Final = counts.MAX_EXACT_TLB_SIZES

SlotKey = tuple[str, object]
"""A tally slot past the fixed fields: ``("mapped", page_size)``, ``("unmapped",
page_size)``, ``("ioctl", name)``, ``("tlb", (vm_kind, page_size, lo, hi))`` counting
invalidations of that size and ``("tlb_pages", ...)`` their pages (buckets only: an exact
size's pages are its size times its count)."""


class VmState:
    """What the counters know about one VM: its page size, TLB kind, its tally (a flat
    list in slot layout) and the slots of its page size."""

    __slots__ = ("acc", "mapped_slot", "page_size", "per_page", "unmapped_slot", "vm")

    vm: object
    acc: list[int]
    page_size: int
    per_page: bool
    mapped_slot: int
    unmapped_slot: int

    def __init__(self, vm: object) -> None:
        self.vm = vm
        self.acc = [0] * NF
        self.page_size = counts.DEFAULT_PAGE_SIZE
        self.per_page = False
        self.mapped_slot = 0
        self.unmapped_slot = 0


Handler = Callable[[Any], None]


def make_handlers(
    dev: list[int],
    vms: dict[int, VmState],
    state: Callable[[object], VmState],
    slot: Callable[[SlotKey], int],
) -> tuple[tuple[type[Event], Handler], ...]:
    """The handlers of the counted event types but ``FrameEnd`` (which the counters handle
    themselves): closures over ``dev`` (the device tally), ``vms`` (VM id -> state, filled by
    ``state(vm)`` on a VM's first event) and ``slot`` (the slot of a key, allocated on
    first use).  They change those containers in place only."""

    def mapped(e: Mapped) -> None:
        st = vms.get(id(e.vm)) or state(e.vm)
        ps = st.page_size
        a = e.addr
        r = e.range
        n = (a + r + ps - 1) // ps - a // ps
        v = st.acc
        v[_MAP_OPS] += 1
        v[_PAGES_MAPPED] += n
        v[_BYTES_MAPPED] += r
        v[st.mapped_slot] += n
        dev[_MAP_OPS] += 1
        dev[_PAGES_MAPPED] += n
        dev[_BYTES_MAPPED] += r
        dev[st.mapped_slot] += n

    def unmapped(e: Unmapped) -> None:
        st = vms.get(id(e.vm)) or state(e.vm)
        ps = st.page_size
        a = e.addr
        r = e.range
        n = (a + r + ps - 1) // ps - a // ps
        v = st.acc
        v[_UNMAP_OPS] += 1
        v[_PAGES_UNMAPPED] += n
        v[_BYTES_UNMAPPED] += r
        v[st.unmapped_slot] += n
        dev[_UNMAP_OPS] += 1
        dev[_PAGES_UNMAPPED] += n
        dev[_BYTES_UNMAPPED] += r
        dev[st.unmapped_slot] += n

    # (per_page, page_size, pages) -> (count slot, pages slot or -1)
    size_slots: dict[tuple[bool, int, int], tuple[int, int]] = {}
    exact_sizes: dict[tuple[bool, int], int] = {}

    def size_slot(per_page: bool, ps: int, n: int) -> tuple[int, int]:
        kind = "per_page" if per_page else "context_flush"
        seen = exact_sizes.get((per_page, ps), 0)
        if seen < _MAX_EXACT:
            exact_sizes[(per_page, ps)] = seen + 1
            lo = hi = n
        else:
            lo, hi = counts.size_bucket(n)
        key = (kind, ps, lo, hi)
        # A one-size bucket is exact: its pages are its size times its count.
        got = (slot(("tlb", key)), -1 if lo == hi else slot(("tlb_pages", key)))
        size_slots[(per_page, ps, n)] = got
        return got

    def tlb(e: TlbInvalidated) -> None:
        st = vms.get(id(e.vm)) or state(e.vm)
        ps = st.page_size
        a = e.addr
        n = (a + e.range + ps - 1) // ps - a // ps
        v = st.acc
        i, j = size_slots.get((st.per_page, ps, n)) or size_slot(st.per_page, ps, n)
        if len(v) <= max(i, j):
            v.extend([0] * (max(i, j) + 1 - len(v)))
        v[i] += 1
        dev[i] += 1
        if j >= 0:
            v[j] += n
            dev[j] += n
        if st.per_page:
            v[_TLB_RANGE] += 1
            v[_TLB_RANGE_PAGES] += n
            dev[_TLB_RANGE] += 1
            dev[_TLB_RANGE_PAGES] += n
        else:
            v[_TLB_FLUSH] += 1
            v[_TLB_FLUSH_PAGES] += n
            dev[_TLB_FLUSH] += 1
            dev[_TLB_FLUSH_PAGES] += n

    def vma_created(e: VmaCreated) -> None:
        (vms.get(id(e.vm)) or state(e.vm)).acc[_VMAS_CREATED] += 1
        dev[_VMAS_CREATED] += 1

    def vma_destroyed(e: VmaDestroyed) -> None:
        (vms.get(id(e.vm)) or state(e.vm)).acc[_VMAS_DESTROYED] += 1
        dev[_VMAS_DESTROYED] += 1

    def migrated(e: Migrated) -> None:
        dev[_MIGRATIONS] += 1
        dev[_BYTES_MIGRATED] += e.bytes

    ioctl_slots: dict[str, int] = {}

    def ioctl(e: Ioctl) -> None:
        i = ioctl_slots.get(e.name)
        if i is None:
            i = ioctl_slots[e.name] = slot(("ioctl", e.name))
        dev[_IOCTLS] += 1
        dev[i] += 1

    return (
        (Mapped, mapped),
        (Unmapped, unmapped),
        (TlbInvalidated, tlb),
        (VmaCreated, vma_created),
        (VmaDestroyed, vma_destroyed),
        (Migrated, migrated),
        (Ioctl, ioctl),
    )
