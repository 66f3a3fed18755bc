"""Driver-side objects shared by the device, file, PRIME, KMS and policy modules.

* :class:`Bo`: the driver's GEM object (``msm_gem_object``): a
  :class:`~gpuvm.core.gem.GemObject` plus the handle count, the dma-buf pointer (export cache
  or import), the import attachment, the 6.17 ``vma_ref`` count and a busy count.
* :class:`DriverVm`: a ``GpuVm`` that knows how its unmaps invalidate the TLB
  (``tlb_kind``) and its page size, for cost observers; used for VM_BIND contexts.
* :class:`ManagedVm` and :class:`ManagedVa`: a GPUVM-backed *kernel-managed* VM (msm 6.17
  legacy contexts and the KMS VM): the driver picks iovas with the legacy first-fit
  allocator and maps synchronously; each VMA is a ``drm_gpuva`` linked to its VmBo, so it
  holds its buffer.  It implements :class:`legacy.vma.KernelVm`, so the legacy
  operations (:mod:`legacy.path`) run on it unchanged.
* :class:`Tally`: a count with holders that can return to zero and rise again (an
  ``atomic_t`` such as ``vma_ref``), and :class:`Job`: an in-flight submit.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import attrs

from gpuvm.core.errors import NoSpace, RefcountUnderflow
from gpuvm.core.events import EventBus, Mapped, TlbInvalidated, Unmapped, VmaCreated, VmaDestroyed
from gpuvm.core.gem import GemObject, Resv
from gpuvm.core.refs import OWNER, Holder, describe
from gpuvm.core.va import Va
from gpuvm.core.vatree import RefDirection
from gpuvm.core.vm import GpuVm, GpuVmFlags
from gpuvm.core.vmbo import VmBo
from legacy.aspace import PAGE_SIZE, first_fit
from legacy.vma import KernelVma, bo_vmas

if TYPE_CHECKING:
    from gpuvm.drm.dmabuf import Attachment, DmaBuf

__all__ = ["Bo", "DriverVm", "Job", "ManagedVa", "ManagedVm", "Tally"]

_NEW = Holder("new vma")
_job_ids = itertools.count(1)


@attrs.define(slots=True, eq=False, repr=False)
class Tally:
    """A count with holders that may fall to zero and rise again (``atomic_t``), e.g. msm's
    per-buffer ``vma_ref``.  :meth:`put` returns the new total."""

    holders: dict[object, int] = attrs.field(factory=dict)
    total: int = 0

    def get(self, holder: object) -> int:
        self.holders[holder] = self.holders.get(holder, 0) + 1
        self.total += 1
        return self.total

    def check_put(self, holder: object) -> None:
        if self.holders.get(holder, 0) <= 0:
            raise RefcountUnderflow(f"tally put by {describe(holder)}, which holds nothing")

    def put(self, holder: object) -> int:
        self.check_put(holder)
        n = self.holders[holder] - 1
        if n:
            self.holders[holder] = n
        else:
            del self.holders[holder]
        self.total -= 1
        return self.total

    def __repr__(self) -> str:
        return f"Tally({self.total}: " + ", ".join(describe(h) for h in self.holders) + ")"


@attrs.define(slots=True, eq=False, repr=False)
class HandleRef:
    """The one buffer reference all GEM handles of a buffer share, over every file of the
    device: ``drm_gem_handle_create_tail`` takes it when ``handle_count`` goes from 0 to 1
    and ``drm_gem_object_handle_put_unlocked`` drops it when the count returns to 0.  Its
    keepers are the open handles, so a leak report still names the handle (and file) that
    keeps the buffer alive."""

    bo: Bo

    def keepers(self) -> Iterable[object]:
        bo = self.bo
        for f in getattr(bo.device, "files", ()):
            for h, b in sorted(f.handles.items()):
                if b is bo:
                    yield Holder(f"handle {h}", who=f)

    def __repr__(self) -> str:
        return f"handles of {self.bo!r}"


@attrs.define(slots=True, eq=False, repr=False)
class Bo(GemObject):
    """The driver's buffer object (``msm_gem_object`` / ``nouveau_bo``).

    ``handle_count`` counts handles over all files of the device, which together hold one
    reference, ``handle_ref`` (:class:`HandleRef`); ``dma_buf`` is the
    kernel's ``obj->dma_buf`` (the export cache of an exported buffer, or the dma-buf an
    imported one came from); ``import_attach`` is set on a foreign import; ``vma_ref`` is
    msm 6.17's count of userspace handles, dma-buf exports and pins; ``busy`` counts
    in-flight jobs using the buffer (its fences); ``purged`` marks a purged backing.
    """

    device: object = attrs.field(default=None, kw_only=True)
    handle_count: int = attrs.field(default=0, init=False)
    handle_ref: HandleRef = attrs.field(
        init=False, default=attrs.Factory(lambda self: HandleRef(self), takes_self=True)
    )
    dma_buf: DmaBuf | None = attrs.field(default=None, init=False)
    import_attach: Attachment | None = attrs.field(default=None, init=False)
    vma_ref: Tally = attrs.field(init=False, factory=Tally)
    busy: int = attrs.field(default=0, init=False)
    purged: bool = attrs.field(default=False, init=False)
    private_vm: GpuVm | None = attrs.field(default=None, init=False)
    """The VM whose reservation this VM-private buffer shares (xe ``bo->vm`` from
    ``DRM_XE_GEM_CREATE.vm_id``, msm ``MSM_BO_NO_SHARE``, amdgpu ``VM_ALWAYS_VALID``);
    such a buffer cannot be exported (``-EPERM``).  See :mod:`gpuvm.drm.xe`."""
    bind_align: int = attrs.field(default=0, init=False)
    """The alignment a VM_BIND of this buffer needs beyond the page (xe
    ``XE_BO_FLAG_INTERNAL_64K`` on ``XE_VRAM_FLAGS_NEED64K`` platforms: 64 KiB); 0: none."""

    def __repr__(self) -> str:
        return f"GEM {self.name}" + (" (freed)" if self.freed else "")

    @property
    def imported(self) -> bool:
        return self.import_attach is not None


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


@attrs.define(slots=True, eq=False, repr=False)
class Job:
    """An in-flight submit (``msm_gem_submit``): the buffers of its BO table, pinned in
    ``vm``, with the references the policy says a submit holds (buffer references and/or
    VmBo references).  Retiring it unpins and drops them."""

    file: object
    vm: object
    bos: tuple[Bo, ...]
    holds_bos: bool
    vm_bos: tuple[VmBo, ...] = ()
    pinned: bool = False
    vmas: tuple[object, ...] = ()
    """The VMAs the submit pinned, one per buffer of ``bos`` (legacy path)."""
    id: int = attrs.field(factory=lambda: next(_job_ids))
    retired: bool = attrs.field(default=False, init=False)

    def keepers(self) -> Iterable[object]:
        """An in-flight job is a root (the GPU is running it)."""
        return ()

    def __repr__(self) -> str:
        return f"Job{self.id}" + (" (retired)" if self.retired else "")


def make_bo(size: int, *, name: str, device: object, bus: EventBus, resv: Resv | None) -> Bo:
    """A new driver buffer with its creator's reference (``OWNER``)."""
    if resv is None:
        return Bo(size, name=name, bus=bus, device=device)
    return Bo(size, name=name, resv=resv, bus=bus, device=device)
