"""Kernel-managed address spaces of the legacy path (``msm_gem_address_space``) and their
iova allocator.

The allocator is in the spirit of ``drm_mm_insert_node_in_range``: :func:`first_fit`
walks the occupied intervals of a :class:`~gpuvm.core.vatree.VaIndex` in address order and
returns the lowest aligned start whose ``[addr, addr+size)`` meets none of them; no hole
means ``-ENOSPC``.  (msm asks drm_mm for the best-fitting hole; the choice of hole changes
addresses, not the counts of maps, unmaps and ``-ENOSPC`` the model is for.)  It works on
any index, so the driver layer reuses it to pick iovas in GPUVM-backed kernel-managed VMs.

:class:`AddressSpace` keeps its VMAs on the same VA index type as ``GpuVm``, created with
:attr:`~gpuvm.core.vatree.RefDirection.BO_HOLDS_VMA`: a buffer owns its VMAs, a VMA holds its
address space and not its buffer.  A reserved range sits in the index as a node of its own
(like GPUVM's kernel-reserved node), so the allocator steps around it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs

from gpuvm.core.errors import InitOverflow, InvalidValue, NoSpace, UseAfterFree
from gpuvm.core.events import (
    EventBus,
    Freed,
    Mapped,
    RefGot,
    TlbInvalidated,
    Unmapped,
    VmaCreated,
    VmaDestroyed,
)
from gpuvm.core.gem import GemObject
from gpuvm.core.refs import OWNER, RefCount
from gpuvm.core.u64 import add_overflows, check_u64
from gpuvm.core.vatree import RefDirection, VaIndex
from legacy.iova import PAGE_SIZE, align_up, first_fit
from legacy.vma import KernelVma, LegacyVma, bo_vmas

__all__ = ["PAGE_SIZE", "AddressSpace", "ReservedNode", "align_up", "first_fit"]


def _check_align(align: object) -> None:
    if type(align) is not int or align <= 0 or align & (align - 1):
        raise InvalidValue(f"alignment must be a power of two, got {align!r}")


@attrs.define(slots=True, eq=False, repr=False)
class ReservedNode:
    """The reserved range of an address space, kept in its index so allocation avoids it."""

    addr: int
    range: int

    def __repr__(self) -> str:
        return f"Reserved[{self.addr:#x}+{self.range:#x}]"


class AddressSpace:
    """A legacy kernel-managed address space ``[start, start+range)``
    (``msm_gem_address_space`` with its ``drm_mm``).

    The owner holds one reference (:data:`~gpuvm.core.refs.OWNER`) and every VMA holds one, so
    a per-file address space whose file is closed lives on until the last buffer mapped in
    it is freed.  ``tlb_kind`` tells cost observers how an unmap invalidates: ``"per_page"``
    for an ordinary IOMMU domain (the msm KMS VM), ``"context_flush"`` for per-process page
    tables.  ``on_free`` runs when the last reference goes.
    """

    bo_owns_vmas = True
    """New VMAs go on the buffer's list and die at buffer free (the legacy trigger)."""

    kernel_managed = True

    __slots__ = (
        "align",
        "bus",
        "freed",
        "index",
        "layout_epoch",
        "name",
        "on_free",
        "page_size",
        "range",
        "refs",
        "reserve_range",
        "reserve_start",
        "reserved",
        "start",
        "tlb_kind",
    )

    def __init__(
        self,
        start: int,
        range: int,
        reserve_start: int = 0,
        reserve_range: int = 0,
        *,
        name: str = "aspace",
        bus: EventBus | None = None,
        tlb_kind: str = "context_flush",
        align: int = PAGE_SIZE,
        page_size: int = PAGE_SIZE,
        on_free: Callable[[AddressSpace], None] | None = None,
    ) -> None:
        for label, v in (
            ("start", start),
            ("range", range),
            ("reserve_start", reserve_start),
            ("reserve_range", reserve_range),
        ):
            check_u64(label, v)
        if add_overflows(start, range) or add_overflows(reserve_start, reserve_range):
            raise InitOverflow(f"address space {name} window or reserved range overflows u64")
        _check_align(align)
        self.start = start
        self.range = range
        self.reserve_start = reserve_start
        self.reserve_range = reserve_range
        self.name = name
        self.bus = bus if bus is not None else EventBus()
        self.tlb_kind = tlb_kind
        self.align = align
        self.page_size = page_size
        self.on_free = on_free
        self.freed = False
        self.layout_epoch = 0  # bumped when a VMA is created or closed (plan_iovas)
        self.index: VaIndex[LegacyVma | ReservedNode] = VaIndex(RefDirection.BO_HOLDS_VMA)
        self.reserved: ReservedNode | None = None
        if reserve_range:
            self.reserved = ReservedNode(reserve_start, reserve_range)
            self.index.add(self.reserved)
        self.refs = RefCount(self, on_zero=self._release)
        self.refs.get(OWNER)

    def __repr__(self) -> str:
        return f"AddressSpace({self.name})" + (" (freed)" if self.freed else "")

    # --- basic properties ------------------------------------------------------------

    @property
    def end(self) -> int:
        return self.start + self.range

    @property
    def direction(self) -> RefDirection:
        """Which way references point between this VM's mappings and their buffers."""
        return self.index.direction

    @property
    def vmas(self) -> list[LegacyVma]:
        """Every VMA, ascending by iova (the reserved node excluded)."""
        return [n for n in self.index if isinstance(n, LegacyVma)]

    def keepers(self) -> Iterable[object]:
        return list(self.refs.holders)

    def check_alive(self, what: str = "access") -> None:
        if self.freed:
            raise UseAfterFree(f"{what} on freed {self!r}")

    # --- the allocator ---------------------------------------------------------------

    def range_valid(self, addr: int, size: int) -> bool:
        """Inside the window and outside the reserved range."""
        if addr < self.start or addr + size > self.end or size <= 0:
            return False
        r = self.reserved
        return r is None or not (addr < r.addr + r.range and r.addr < addr + size)

    def alloc_iova(
        self, size: int, align: int | None = None, taken: Iterable[tuple[int, int]] = ()
    ) -> int:
        """First-fit iova for ``size`` bytes (``drm_mm_insert_node_in_range``); raises
        :class:`~gpuvm.core.errors.NoSpace` when no hole fits.  Nothing is reserved yet: the
        caller passes the result to :meth:`new_vma`."""
        self.check_alive("alloc_iova")
        check_u64("size", size)
        a = self.align if align is None else align
        _check_align(a)
        addr = first_fit(self.index, self.start, self.end, size, a, taken)
        if addr is None:
            raise NoSpace(f"no hole of {size:#x} bytes (align {a:#x}) in {self.name}")
        return addr

    def check_iova(self, addr: int, size: int) -> None:
        """A user-chosen iova must be aligned, inside the window and free
        (``drm_mm_insert_node_in_range`` over exactly that range: ``-ENOSPC`` otherwise)."""
        self.check_alive("check_iova")
        check_u64("iova", addr)
        check_u64("size", size)
        if addr % self.align:
            raise InvalidValue(f"iova {addr:#x} is not aligned to {self.align:#x}")
        if not self.range_valid(addr, size):
            raise NoSpace(f"[{addr:#x}, +{size:#x}) is outside {self.name}'s usable window")
        hit = self.index.first_overlap(addr, addr + size - 1)
        if hit is not None:
            raise NoSpace(f"[{addr:#x}, +{size:#x}) in {self.name} is occupied by {hit!r}")

    # --- VMAs --------------------------------------------------------------------------

    def vma_of(self, obj: GemObject) -> LegacyVma | None:
        """``lookup_vma``: the buffer's VMA in this address space (walk of its list)."""
        lst = bo_vmas(obj)
        vma = lst.find(self) if lst is not None else None
        return vma if isinstance(vma, LegacyVma) else None

    def new_vma(self, obj: GemObject, addr: int, size: int) -> LegacyVma:
        """``msm_gem_vma_init``: reserve ``[addr, addr+size)`` for ``obj`` (not mapped) and
        put the VMA on the buffer's list.  The caller has checked the range
        (:meth:`alloc_iova` / :meth:`check_iova`)."""
        self.check_alive("new_vma")
        obj.check_alive("new_vma")
        if self.vma_of(obj) is not None:
            raise AssertionError(f"{obj!r} already has a VMA in {self.name}")
        vma = LegacyVma(self, obj, addr, size)
        self.index.add(vma)
        self.layout_epoch += 1
        self.refs.get(vma)
        bo_vmas(obj, create=True).vmas.append(vma)  # type: ignore[union-attr]
        if self.bus.route[RefGot] or self.bus.route[VmaCreated]:
            self.bus.emit(RefGot(self, vma))
            self.bus.emit(VmaCreated(self, vma))
        return vma

    def map_vma(self, vma: KernelVma) -> None:
        """``msm_gem_vma_map``: write the page tables if not yet mapped."""
        if vma.mapped:
            return
        vma.mapped = True
        if self.bus.route[Mapped]:
            self.bus.emit(Mapped(self, vma.addr, vma.range, vma.obj, 0))

    def unmap_vma(self, vma: KernelVma) -> None:
        """``msm_gem_vma_purge``: clear the page tables (and invalidate the TLB) if mapped;
        the iova stays reserved."""
        if not vma.mapped:
            return
        vma.mapped = False
        if self.bus.route[Unmapped] or self.bus.route[TlbInvalidated]:
            self.bus.emit(Unmapped(self, vma.addr, vma.range))
            self.bus.emit(TlbInvalidated(self, vma.addr, vma.range))

    def close_vma(self, vma: KernelVma) -> None:
        """``msm_gem_vma_close``: release the iova, take the VMA off its buffer's list and
        drop its address-space reference.  The VMA must be unmapped."""
        assert isinstance(vma, LegacyVma) and vma.vm is self and not vma.closed
        if vma.mapped:
            raise AssertionError(f"close of mapped {vma!r}")
        self.index.discard(vma)
        self.layout_epoch += 1
        lst = bo_vmas(vma.obj)
        if lst is not None and vma in lst.vmas:
            lst.vmas.remove(vma)
        vma.closed = True
        vma.pin_count = 0
        if self.bus.route[VmaDestroyed]:
            self.bus.emit(VmaDestroyed(self, vma))
        self.put(vma)

    # --- lifetime ----------------------------------------------------------------------

    def get(self, holder: object = OWNER) -> AddressSpace:
        """``msm_gem_address_space_get``."""
        self.check_alive("get")
        self.refs.acquire(holder, self.bus)
        return self

    def put(self, holder: object = OWNER) -> None:
        """``msm_gem_address_space_put``; freed at zero."""
        self.check_alive("put")
        self.refs.release(holder, self.bus)

    def _release(self) -> None:
        if self.vmas:
            raise AssertionError(f"{self.name} released with VMAs left")
        self.freed = True
        if self.on_free is not None:
            self.on_free(self)
        self.bus.emit(Freed(self))

    def leaks(self) -> list[str]:
        """What keeps this address space alive besides its owner: one line per VMA."""
        return [f"{v!r} (owned by {v.obj!r})" for v in self.vmas]

    # --- invariants --------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Disjoint VMAs inside the usable window, one per buffer, each on its buffer's list
        and holding exactly one reference here; total = owners + VMAs."""
        if self.freed:
            return
        self.index.check()
        seen: set[int] = set()
        n = 0
        for node in self.index:
            if isinstance(node, ReservedNode):
                if node is not self.reserved:
                    raise AssertionError(f"stray reserved node {node!r} in {self.name}")
                continue
            n += 1
            if node.vm is not self or node.closed:
                raise AssertionError(f"{node!r} in {self.name}'s index but closed or foreign")
            if not self.range_valid(node.addr, node.range):
                raise AssertionError(f"{node!r} outside {self.name}'s usable window")
            if node.obj.freed:
                raise AssertionError(f"{node!r} survives its freed buffer")
            if id(node.obj) in seen:
                raise AssertionError(f"two VMAs of {node.obj!r} in {self.name}")
            seen.add(id(node.obj))
            lst = bo_vmas(node.obj)
            if lst is None or lst.vmas.count(node) != 1:
                raise AssertionError(f"{node!r} is not on its buffer's VMA list exactly once")
            if node.pin_count < 0 or (node.pin_count and not node.mapped):
                raise AssertionError(f"{node!r}: pinned but unmapped, or negative pin count")
            if self.refs.count(node) != 1:
                raise AssertionError(f"{node!r} holds {self.refs.count(node)} refs")
        self.refs.check()
        owners = sum(c for h, c in self.refs.holders.items() if not isinstance(h, LegacyVma))
        if self.refs.total != owners + n:
            raise AssertionError(f"{self.name} refcount {self.refs.total} != {owners} + {n}")
