"""The driver layer's VM classes: :class:`DriverVm`, :class:`ManagedVm` and :class:`ManagedVa`.

* :class:`DriverVm`: a ``GpuVm`` that knows how its unmaps invalidate the TLB
  (``tlb_kind``) and its page size, for cost observers; used for VM_BIND contexts.
* :class:`ManagedVm` and :class:`ManagedVa`: a GPUVM-backed *kernel-managed* VM (msm 6.17
  legacy contexts and the KMS VM): the driver picks iovas with the legacy first-fit
  allocator and maps synchronously; each VMA is a ``drm_gpuva`` linked to its VmBo, so it
  holds its buffer.  It implements :class:`legacy.vma.KernelVm`, so the legacy
  operations (:mod:`legacy.path`) run on it unchanged.

Re-exported by :mod:`gpuvm.drm.driver`.  A module of its own, with no attrs class, so that
the compiled build (``GPUVM_COMPILE=1``, ``docs/compiled.md``) compiles these classes as
native subclasses of the native ``GpuVm`` / ``Va``: every pageflip and submit runs through
them.  They allow interpreted subclasses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gpuvm.core.errors import NoSpace
from gpuvm.core.events import EventBus, Mapped, TlbInvalidated, Unmapped, VmaCreated, VmaDestroyed
from gpuvm.core.gem import GemObject
from gpuvm.core.refs import OWNER, Holder
from gpuvm.core.va import Va
from gpuvm.core.vatree import RefDirection
from gpuvm.core.vm import GpuVm, GpuVmFlags
from gpuvm.core.vmbo import VmBo
from legacy.aspace import PAGE_SIZE, first_fit
from legacy.vma import KernelVma, bo_vmas

try:  # mypyc reads the decorator at compile time; interpreted it does nothing
    from mypy_extensions import mypyc_attr
except ImportError:  # installed without mypy

    def mypyc_attr(*args: object, **kwargs: object) -> Callable[[type], type]:  # type: ignore[misc]
        return lambda cls: cls


__all__ = ["DriverVm", "ManagedVa", "ManagedVm"]

_NEW = Holder("new vma")


@mypyc_attr(allow_interpreted_subclasses=True)
class DriverVm(GpuVm):
    """A ``GpuVm`` made by the driver layer, labelled for cost observers: ``tlb_kind`` is
    ``"per_page"`` (an IOMMU domain invalidated range by range, the msm KMS VM) or
    ``"context_flush"`` (per-process page tables: one whole-context flush per unmap).
    VM_BIND (user-managed) contexts are plain DriverVms."""

    kernel_managed = False

    __slots__ = ("page_size", "role", "tlb_kind", "unusable")

    def __init__(
        self,
        start: int,
        range: int,
        reserve_start: int = 0,
        reserve_range: int = 0,
        *,
        name: str,
        bus: EventBus,
        tlb_kind: str = "context_flush",
        page_size: int = PAGE_SIZE,
        role: str = "context",
        flags: GpuVmFlags | int = 0,
        vm_free: Callable[[GpuVm], None] | None = None,
        obtain_locked: bool = True,
    ) -> None:
        super().__init__(
            start,
            range,
            reserve_start,
            reserve_range,
            name=name,
            bus=bus,
            flags=flags,
            vm_free=vm_free if vm_free is not None else _no_free,
            direction=RefDirection.VM_BO_HOLDS_GEM,
            obtain_locked=obtain_locked,
        )
        self.tlb_kind = tlb_kind
        self.page_size = page_size
        self.role = role
        self.unusable = False
        """msm ``msm_gem_vm_unusable``: a VM_BIND failed part-way (later SUBMIT / VM_BIND
        ``-EPIPE``); see :mod:`gpuvm.drm.bind_faults`."""

    def _insert(self, va: Va) -> None:
        """A VM_BIND context's VMA comes to exist when its VA is inserted (MAP, or a REMAP
        piece): emit ``VmaCreated`` as kernel-managed VMs do at iova allocation."""
        super()._insert(va)
        if not self.kernel_managed and self.bus.route[VmaCreated]:
            self.bus.emit(VmaCreated(self, va))

    def _remove(self, va: Va) -> None:
        if not self.kernel_managed and self.bus.route[VmaDestroyed]:
            self.bus.emit(VmaDestroyed(self, va))
        super()._remove(va)


def _no_free(vm: GpuVm) -> None:
    return None


@mypyc_attr(allow_interpreted_subclasses=True)
class ManagedVa(Va):
    """A VMA of a GPUVM-backed kernel-managed VM (``msm_gem_vma`` embedding its
    ``drm_gpuva``): linked to its VmBo (so it holds its buffer), plus the legacy ``mapped``
    flag and pin count.  Who owns it (for :func:`~gpuvm.core.refs.explain`) is the VM's
    ``vma_owner`` policy: the buffer itself when the VM keeps the legacy teardown trigger,
    else whatever will tear it down.  A plain slotted class, as its base :class:`Va` is."""

    __slots__ = ("mapped", "pin_count", "user_cleared")

    mapped: bool
    pin_count: int
    user_cleared: bool

    def __init__(
        self,
        addr: int,
        range: int,
        obj: GemObject | None = None,
        offset: int = 0,
        sparse: bool = False,
        invalidated: bool = False,
        user_flags: int = 0,
    ) -> None:
        super().__init__(addr, range, obj, offset, sparse, invalidated, user_flags)
        self.mapped = False
        self.pin_count = 0
        self.user_cleared = False

    def keepers(self) -> Iterable[object]:
        vm = self.vm
        if self.freed or not isinstance(vm, ManagedVm):
            return ()
        return vm.vma_owner(self)

    def __repr__(self) -> str:
        where = self.vm.name if self.vm is not None else "?"
        what = self.obj.name if self.obj is not None else "null"
        state = "freed" if self.freed else ("mapped" if self.mapped else "unmapped")
        pins = f" pin {self.pin_count}" if self.pin_count else ""
        return f"VMA({where} {self.addr:#x}+{self.range:#x} {what} {state}{pins})"


def _root(va: ManagedVa) -> Iterable[object]:
    return ()


@mypyc_attr(allow_interpreted_subclasses=True)
class ManagedVm(DriverVm):
    """A GPUVM-backed kernel-managed VM: the driver picks iovas (first fit, as the legacy
    allocator) and maps synchronously at pin time.

    ``bo_owns_vmas`` keeps the legacy teardown trigger (new VMAs go on the buffer's list and
    are torn down at buffer free); with GPUVM's hard VmBo references that trigger can never
    fire for a mapped buffer (the cycle buffer -> VMA -> VmBo -> buffer).  ``weak_refs``
    models the rejected ``DRM_GPUVM_VA_WEAK_REF``: each new VmBo gives up its buffer
    reference.  ``vma_owner(vma)`` names what owns a VMA, for holder chains.
    """

    kernel_managed = True

    __slots__ = ("_links", "align", "bo_owns_vmas", "vma_owner", "weak_refs")

    def __init__(
        self,
        start: int,
        range: int,
        reserve_start: int = 0,
        reserve_range: int = 0,
        *,
        name: str,
        bus: EventBus,
        tlb_kind: str = "context_flush",
        page_size: int = PAGE_SIZE,
        role: str = "context",
        bo_owns_vmas: bool = False,
        weak_refs: bool = False,
        vma_owner: Callable[[ManagedVa], Iterable[object]] | None = None,
        vm_free: Callable[[GpuVm], None] | None = None,
        obtain_locked: bool = True,
    ) -> None:
        super().__init__(
            start,
            range,
            reserve_start,
            reserve_range,
            name=name,
            bus=bus,
            tlb_kind=tlb_kind,
            page_size=page_size,
            role=role,
            vm_free=vm_free,
            obtain_locked=obtain_locked,
        )
        self.align = page_size
        self._links = 0
        self.bo_owns_vmas = bo_owns_vmas
        self.weak_refs = weak_refs
        if vma_owner is None:
            vma_owner = _bo_owner if bo_owns_vmas else _root
        self.vma_owner = vma_owner

    # --- legacy.vma.KernelVm ------------------------------------------------------------

    @property
    def layout_epoch(self) -> tuple[int, int]:
        """Changes whenever a VA is inserted, removed, linked or unlinked: everything
        :meth:`vma_of` and :meth:`alloc_iova` read (see :func:`legacy.path.plan_iovas`)."""
        return (self.generation, self._links)

    def link(self, va: Va, vm_bo: VmBo) -> None:
        super().link(va, vm_bo)
        self._links += 1

    def unlink(self, va: Va) -> None:
        super().unlink(va)
        self._links += 1

    def unlink_defer(self, va: Va) -> None:
        super().unlink_defer(va)
        self._links += 1

    def vma_of(self, obj: GemObject) -> ManagedVa | None:
        """``lookup_vma``: the buffer's VMA here (one per buffer in a kernel-managed VM)."""
        for vm_bo in obj.vm_bos:  # obj.vm_bo_for(self), inlined: a hot lookup
            if vm_bo.vm is self:
                for va in vm_bo.vas:
                    if isinstance(va, ManagedVa):
                        return va
                return None
        return None

    def alloc_iova(
        self, size: int, align: int | None = None, taken: Iterable[tuple[int, int]] = ()
    ) -> int:
        """First-fit iova in the VM window (the kernel-reserved node is in the index)."""
        self.check_alive("alloc_iova")
        a = self.align if align is None else align
        addr = first_fit(self.index, self.start, self.end, size, a, taken)
        if addr is None:
            raise NoSpace(f"no hole of {size:#x} bytes (align {a:#x}) in {self.name}")
        return addr

    def check_iova(self, addr: int, size: int) -> None:
        """A user-chosen iova must be free and inside the window (``-ENOSPC``)."""
        self.check_alive("check_iova")
        if not self.range_valid(addr, size) or not self.interval_empty(addr, size):
            raise NoSpace(f"[{addr:#x}, +{size:#x}) is not free in {self.name}")

    def new_vma(self, obj: GemObject, addr: int, size: int) -> ManagedVa:
        """``msm_gem_vma_new``: insert a VA at ``[addr, addr+size)`` and link it to the
        buffer's VmBo (obtained, put on the extobj list if external).  Not mapped."""
        if self.freed or obj.freed:
            self.check_alive("new_vma")
            obj.check_alive("new_vma")
        va = ManagedVa(addr, size, obj, 0)
        self.insert_va(va)
        vm_bo = self.bo_obtain(obj, _NEW)
        if self.weak_refs and vm_bo.holds_obj:
            vm_bo.drop_obj_ref()
        vm_bo.extobj_add()
        self.link(va, vm_bo)
        vm_bo.put(_NEW)
        if self.bo_owns_vmas:
            bo_vmas(obj, create=True).vmas.append(va)  # type: ignore[union-attr]
        if self.bus.route[VmaCreated]:
            self.bus.emit(VmaCreated(self, va))
        return va

    def map_vma(self, vma: KernelVma) -> None:
        """``msm_gem_vma_map``: write the page tables if not mapped (clears eviction)."""
        if vma.mapped:
            return
        vma.mapped = True
        assert isinstance(vma, ManagedVa)
        if vma.vm_bo is not None and vma.vm_bo.evicted:
            vma.vm_bo.evict(False)
        if self.bus.route[Mapped]:
            self.bus.emit(Mapped(self, vma.addr, vma.range, vma.obj, vma.offset))

    def unmap_vma(self, vma: KernelVma) -> None:
        """``msm_gem_vma_unmap``: clear the page tables and invalidate; the VA stays."""
        if not vma.mapped:
            return
        vma.mapped = False
        if self.bus.route[Unmapped] or self.bus.route[TlbInvalidated]:
            self.bus.emit(Unmapped(self, vma.addr, vma.range))
            self.bus.emit(TlbInvalidated(self, vma.addr, vma.range))

    def close_vma(self, vma: KernelVma) -> None:
        """``msm_gem_vma_close``: remove the VA and unlink it (dropping its VmBo reference,
        which may destroy the VmBo and free the buffer).  The VMA must be unmapped."""
        assert isinstance(vma, ManagedVa) and vma.vm is self and not vma.freed
        if vma.mapped:
            raise AssertionError(f"close of mapped {vma!r}")
        obj = vma.obj
        if obj is not None:
            lst = bo_vmas(obj)
            if lst is not None and vma in lst.vmas:
                lst.vmas.remove(vma)
        vma.pin_count = 0
        if self.bus.route[VmaDestroyed]:
            self.bus.emit(VmaDestroyed(self, vma))
        self.remove(vma)
        if vma.vm_bo is not None:
            self.unlink(vma)
        self.free_va(vma)

    @property
    def vmas(self) -> list[ManagedVa]:
        return [va for va in self.vas if isinstance(va, ManagedVa)]

    def close(self) -> None:
        """``msm_gem_vm_close``: unmap and close every VMA, then drop the owner reference."""
        self.check_alive("close")
        self.refs.check_put(OWNER)
        for va in self.vmas:
            self.unmap_vma(va)
            self.close_vma(va)
        self.put(OWNER)

    def check_invariants(self) -> None:
        """GPUVM's invariants plus: one VMA per buffer, pinned VMAs mapped, VMAs on their
        buffer's list iff the VM keeps the legacy trigger, weak VmBos iff weak refs."""
        super().check_invariants()
        if self.freed:
            return
        seen: set[int] = set()
        for va in self.vas:
            if not isinstance(va, ManagedVa) or va.obj is None:
                raise AssertionError(f"{va!r} in kernel-managed {self.name} is not a VMA")
            if id(va.obj) in seen:
                raise AssertionError(f"two VMAs of {va.obj!r} in {self.name}")
            seen.add(id(va.obj))
            if va.pin_count < 0 or (va.pin_count and not va.mapped):
                raise AssertionError(f"{va!r}: pinned but unmapped, or negative pin count")
            lst = bo_vmas(va.obj)
            listed = lst is not None and va in lst.vmas
            if listed != self.bo_owns_vmas:
                raise AssertionError(f"{va!r} on its buffer's list: {listed}")
        for vm_bo in self.vm_bos:
            if vm_bo.holds_obj == self.weak_refs:
                raise AssertionError(f"{vm_bo!r} holds_obj={vm_bo.holds_obj} in {self.name}")


def _bo_owner(va: ManagedVa) -> Iterable[object]:
    return () if va.obj is None else (va.obj,)
