"""The GPU VA space (``struct drm_gpuvm``) and its canonical driver handling of ops.

:class:`GpuVm` owns the VA index, the kernel-reserved node, the extobj and evict lists and
its own reference count.  It answers the kernel's lookups, generates split/merge ops
(:mod:`gpuvm.core.splitmerge`), and applies op lists the way a well-behaved driver does,
emitting page-table events for observers.  Every mutating call validates first and
mutates after, so a raised error leaves the VM, its VAs, VmBos and buffers unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from gpuvm.core.errors import (
    AlreadyInserted,
    FenceSignallingViolation,
    ImmediateModeMismatch,
    InitOverflow,
    InvalidRange,
    InvalidValue,
    LeakError,
    LinkError,
    LockMisuse,
    LockNotHeld,
    NoObject,
    NotImmediateMode,
    NotInserted,
    NotSupported,
    OutOfBounds,
    StaleOps,
    UseAfterFree,
    VaExists,
    VaInUse,
    ZeroRange,
)
from gpuvm.core.events import (
    EventBus,
    Freed,
    Mapped,
    RefGot,
    TlbInvalidated,
    Unmapped,
    VaInserted,
    Validated,
    VaLinked,
    VaRemoved,
    VaUnlinked,
    VmBoCreated,
    Warning,
)
from gpuvm.core.gem import GemObject, Lock, Resv
from gpuvm.core.ops import MapOp, MapRequest, Op, OpList, PrefetchOp, RemapOp, UnmapOp, UnmapRequest
from gpuvm.core.refs import CALLER, OWNER, Holder, RefCount
from gpuvm.core.splitmerge import (
    madvise_list,
    prefetch_steps,
    sm_map_list,
    sm_map_steps,
    sm_unmap_list,
    sm_unmap_steps,
)
from gpuvm.core.u64 import U64_MAX, add_overflows, check_u64
from gpuvm.core.va import Va
from gpuvm.core.vatree import RefDirection, VaIndex
from gpuvm.core.vmbo import VmBo

__all__ = ["GpuVm", "GpuVmFlags", "Va", "VmBo"]

_APPLY = Holder("apply")
_ISSUED_MAX = 64
"""Op lists remembered per generation as built by this VM (see ``GpuVm._issue``)."""
_BIND = Holder("bind")
_WALK = Holder("list walk")

Step = Callable[[Op], int | None]


class GpuVmFlags(enum.IntFlag):
    """``enum drm_gpuvm_flags``."""

    NONE = 0
    RESV_PROTECTED = 1 << 0
    """The extobj/evict lists are protected by the VM's reservation, not spinlocks."""
    IMMEDIATE_MODE = 1 << 1
    """The VM is modified in the fence-signalling path (version B and later)."""


class GpuVm:
    """A GPU VA space ``[start, start+range)`` (``drm_gpuvm_init``).

    ``reserve_start``/``reserve_range`` describe the kernel-reserved node, inserted only
    when ``reserve_range != 0``.  ``r_obj`` is the GEM whose reservation the VM's private
    buffers share; by default a dummy object (``drm_gpuvm_resv_object_alloc``).  The owner
    holds one reference (:data:`~gpuvm.core.refs.OWNER`).  ``check_bounds`` turns on the
    optional (unchecked in the kernel) test that a mapping stays inside its object.
    """

    __slots__ = (
        "__weakref__",
        "_flags",
        "_immediate",
        "_issued",
        "_issued_gen",
        "_protected",
        "bo_defer",
        "bus",
        "check_bounds",
        "evict",
        "extobj",
        "fence_depth",
        "freed",
        "generation",
        "index",
        "kernel_node",
        "lock_checks",
        "name",
        "r_obj",
        "range",
        "refs",
        "reserve_range",
        "reserve_start",
        "start",
        "vm_bo_validate",
        "vm_bos",
        "vm_free",
        "warnings",
    )

    def __init__(
        self,
        start: int,
        range: int,
        reserve_start: int = 0,
        reserve_range: int = 0,
        *,
        name: str = "vm",
        flags: GpuVmFlags | int = 0,
        r_obj: GemObject | None = None,
        bus: EventBus | None = None,
        check_bounds: bool = False,
        vm_bo_validate: Callable[[VmBo], int | None] | None = None,
        vm_free: Callable[[GpuVm], None] | None = None,
        direction: RefDirection = RefDirection.VM_BO_HOLDS_GEM,
        lock_checks: bool = False,
    ) -> None:
        check_u64("start", start)
        check_u64("range", range)
        check_u64("reserve_start", reserve_start)
        check_u64("reserve_range", reserve_range)
        if add_overflows(start, range):
            raise InitOverflow(f"VM window {start:#x}+{range:#x} overflows u64")
        if add_overflows(reserve_start, reserve_range):
            raise InitOverflow(f"reserved range {reserve_start:#x}+{reserve_range:#x} overflows")
        self.start = start
        self.range = range
        self.reserve_start = reserve_start
        self.reserve_range = reserve_range
        self.name = name
        self._flags = GpuVmFlags(flags)
        self._immediate = bool(self._flags & GpuVmFlags.IMMEDIATE_MODE)
        self._protected = bool(self._flags & GpuVmFlags.RESV_PROTECTED)
        self.bus = bus if bus is not None else EventBus()
        self.check_bounds = check_bounds
        self.vm_bo_validate = vm_bo_validate
        self.vm_free = vm_free
        self.lock_checks = lock_checks
        self.index: VaIndex[Va] = VaIndex(direction)
        self.extobj: dict[VmBo, None] = {}
        self.evict: dict[VmBo, None] = {}
        self.vm_bos: dict[VmBo, None] = {}
        self.bo_defer: list[VmBo] = []
        self.fence_depth = 0
        self.generation = 0
        self._issued: dict[int, OpList] = {}
        self._issued_gen = -1
        self.freed = False
        self.warnings: list[str] = []
        self.refs = RefCount(self, on_zero=self._fini)
        self.refs.get(OWNER)
        if r_obj is None:
            r_obj = GemObject(0, name=f"{name}.resv", bus=self.bus)
            r_obj.get(self)
            r_obj.put(OWNER)
        else:
            r_obj.get(self)
        self.r_obj = r_obj
        self.kernel_node: Va | None = None
        if reserve_range:
            node = Va(reserve_start, reserve_range)
            node.kernel_node = True
            node.inserted = True
            node.vm = self
            self.index.add(node)
            self.kernel_node = node

    def __repr__(self) -> str:
        return f"GpuVm({self.name})" + (" (freed)" if self.freed else "")

    # --- basic properties --------------------------------------------------------------

    @property
    def end(self) -> int:
        return self.start + self.range

    @property
    def resv(self) -> Resv:
        """The VM-wide reservation object (``drm_gpuvm_resv``)."""
        return self.r_obj.resv

    @property
    def direction(self) -> RefDirection:
        return self.index.direction

    @property
    def flags(self) -> GpuVmFlags:
        """The ``drm_gpuvm_flags`` the VM was made with (fixed for its lifetime)."""
        return self._flags

    @property
    def resv_protected(self) -> bool:
        return self._protected

    @property
    def immediate_mode(self) -> bool:
        """``drm_gpuvm_immediate_mode``: link / unlink may run in the fence-signalling path
        (deferred puts, the GEM's own gpuva lock)."""
        return self._immediate

    def check_immediate(self, what: str) -> None:
        """Refuse a deferred operation on a VM without IMMEDIATE_MODE (kernel: WARN)."""
        if not self._immediate:
            raise NotImmediateMode(f"{what} on {self.name}, which is not in IMMEDIATE_MODE")

    def _no_fence(self, what: str) -> None:
        if self.fence_depth:
            raise FenceSignallingViolation(
                f"{what} in a fence-signalling section of {self.name} (it may allocate, "
                "sleep or take reservation locks)"
            )

    # --- locks (checked only with lock_checks) ----------------------------------------------

    def gem_lock(self, obj: GemObject) -> Lock:
        """The lock guarding ``obj``'s VmBo list for this VM (``drm_gem_gpuva_assert_lock_held``):
        the GEM's own ``gpuva.lock`` under IMMEDIATE_MODE, else its ``resv``."""
        return obj.gpuva_lock if self._immediate else obj.resv

    def need_gem_lock(self, obj: GemObject | None, what: str) -> None:
        """With ``lock_checks``: refuse ``what`` unless ``obj``'s gpuva lock is held."""
        if self.lock_checks and obj is not None:
            lk = self.gem_lock(obj)
            if not lk.held:
                raise LockNotHeld(f"{what} on {obj!r} without {lk!r} held")

    def need_vm_resv(self, what: str) -> None:
        """With ``lock_checks`` on a RESV_PROTECTED VM: refuse ``what`` unless the VM's
        ``resv`` is held (it guards the extobj / evict lists there)."""
        if self.lock_checks and self._protected and not self.resv.held:
            raise LockNotHeld(f"{what} on RESV_PROTECTED {self.name} without its resv held")

    def need_obj_resv(self, obj: GemObject, what: str) -> None:
        """With ``lock_checks``: refuse ``what`` unless ``obj.resv`` is held."""
        if self.lock_checks and not obj.resv.held:
            raise LockNotHeld(f"{what} on {obj!r} without {obj.resv!r} held")

    def _need_destroy_locks(self, vm_bo: VmBo, what: str) -> None:
        """What ``drm_gpuvm_bo_destroy`` asserts: the GEM's gpuva lock, and the VM's resv
        under RESV_PROTECTED."""
        self.need_gem_lock(vm_bo.obj, what)
        self.need_vm_resv(what)

    def _check_lock_mode(self, obj: GemObject) -> None:
        """Every VM listing ``obj`` must agree on IMMEDIATE_MODE: it decides which lock
        guards the GEM's VmBo list (``gpuva.lock`` or ``resv``), and VMs disagreeing on it
        would guard one list with two locks (the kernel documents the rule, never checks
        it).  Raises :class:`ImmediateModeMismatch` before a new VmBo would be listed."""
        mine = self._immediate
        for vm_bo in obj.vm_bos:
            other = vm_bo.vm
            if other is not self and other._immediate is not mine:
                raise ImmediateModeMismatch(
                    f"{obj!r} is listed by {other.name} "
                    f"({'with' if not mine else 'without'} IMMEDIATE_MODE); {self.name} "
                    f"({'with' if mine else 'without'} it) cannot share its VmBo list"
                )

    def _need_takes_gem_lock(self, obj: GemObject, what: str) -> None:
        """A deferred call locks the GEM's gpuva mutex itself: already held is a
        self-deadlock."""
        if self.lock_checks and obj.gpuva_lock.held:
            raise LockMisuse(f"{what} takes {obj.gpuva_lock!r}, which is already held")

    @contextmanager
    def fence_signalling(self) -> Iterator[GpuVm]:
        """A fence-signalling critical section (``dma_fence_begin_signalling`` /
        ``_end_signalling``, e.g. a job's ``run_job``) for work on this VM: inside it,
        anything that may allocate, sleep or take a reservation lock is refused with
        :class:`FenceSignallingViolation` (op-list creation, ``bo_create`` / ``bo_obtain``,
        non-deferred VmBo puts and unlinks, ``apply``/``bind``, locking, ``validate``,
        deferred cleanup).  Insert, remove, link, the callback ``sm_map``/``sm_unmap`` and
        the deferred ``put_deferred`` / ``unlink_defer`` are allowed."""
        self.fence_depth += 1
        try:
            yield self
        finally:
            self.fence_depth -= 1

    @property
    def kref(self) -> int:
        return self.refs.total

    @property
    def vas(self) -> list[Va]:
        """Every inserted VA in ascending address order, the kernel node excluded."""
        return [va for va in self.index if not va.kernel_node]

    def layout(self) -> list[tuple[int, int, GemObject | None, int]]:
        """``(addr, range, obj, offset)`` of every VA, ascending."""
        return [va.layout() for va in self.index if not va.kernel_node]

    def keepers(self) -> Iterable[object]:
        return list(self.refs.holders)

    def check_alive(self, what: str = "access") -> None:
        if self.freed:
            raise UseAfterFree(f"{what} on freed {self!r}")

    # --- ranges and lookups ------------------------------------------------------------

    def range_valid(self, addr: int, range: int) -> bool:
        """``drm_gpuvm_range_valid``: no u64 overflow, inside the window, outside the
        kernel-reserved node.  A zero range passes, as in the kernel."""
        if type(addr) is not int or type(range) is not int:
            return False
        if addr < 0 or range < 0 or addr > U64_MAX or range > U64_MAX:
            return False
        end = addr + range
        if end > U64_MAX:
            return False
        if addr < self.start or end > self.start + self.range:
            return False
        kr = self.reserve_range
        return not (kr and addr < self.reserve_start + kr and self.reserve_start < end)

    def _check_range(self, what: str, addr: int, range: int) -> None:
        if (
            type(addr) is int
            and type(range) is int
            and range > 0
            and self.start <= addr
            and addr + range <= self.start + self.range
            and not (
                self.reserve_range
                and addr < self.reserve_start + self.reserve_range
                and self.reserve_start < addr + range
            )
        ):
            return  # the common case, decided without building any message
        check_u64("addr", addr)
        check_u64("range", range)
        if range == 0:
            raise ZeroRange(f"{what} with range 0 at {addr:#x} (the kernel mishandles it)")
        if not self.range_valid(addr, range):
            raise InvalidRange(
                f"{what} [{addr:#x}, +{range:#x}) is not valid in {self.name} "
                f"(window [{self.start:#x}, {self.end:#x}), reserved "
                f"[{self.reserve_start:#x}, +{self.reserve_range:#x}))"
            )

    def find_first(self, addr: int, range: int) -> Va | None:
        """``drm_gpuva_find_first``: the lowest VA meeting ``[addr, addr+range-1]``."""
        if not (type(addr) is int and type(range) is int and 0 <= addr <= U64_MAX >= range >= 0):
            check_u64("addr", addr)  # raises, or accepts an int subclass
            check_u64("range", range)
        return self.index.first_overlap(addr, (addr + range - 1) & U64_MAX)

    def find(self, addr: int, range: int) -> Va | None:
        """``drm_gpuva_find``: the VA at exactly ``[addr, addr+range)``, or None."""
        va = self.find_first(addr, range)
        if va is not None and va.addr == addr and va.range == range:
            return va
        return None

    def find_prev(self, start: int) -> Va | None:
        """``drm_gpuva_find_prev``: the VA meeting ``[start-1, start]`` (kernel quirk: the
        VA at ``start`` itself if nothing covers ``start-1``)."""
        check_u64("start", start)
        prev = (start - 1) & U64_MAX
        if not self.range_valid(prev, 1):
            return None
        return self.index.first_overlap(prev, start)

    def find_next(self, end: int) -> Va | None:
        """``drm_gpuva_find_next``: the VA meeting ``[end, end+1]`` (kernel quirk: a VA
        starting at ``end+1`` if nothing covers ``end``)."""
        check_u64("end", end)
        if not self.range_valid(end, 1):
            return None
        return self.index.first_overlap(end, end + 1)

    def interval_empty(self, addr: int, range: int) -> bool:
        """``drm_gpuvm_interval_empty``."""
        return self.find_first(addr, range) is None

    def iter_range(self, addr: int, end: int) -> list[Va]:
        """``drm_gpuvm_for_each_va_range``: the VAs met walking ``[addr, end)`` (the kernel
        node is not skipped)."""
        check_u64("addr", addr)
        check_u64("end", end)
        return self.index.range_walk(addr, end)

    def __iter__(self) -> Iterator[Va]:
        """``drm_gpuvm_for_each_va``: every VA including the kernel node."""
        return iter(list(self.index))

    # --- insert / remove ------------------------------------------------------------------

    def insert(
        self,
        addr: int,
        range: int,
        obj: GemObject | None = None,
        offset: int = 0,
        *,
        sparse: bool = False,
    ) -> Va:
        """Allocate a :class:`Va` and ``drm_gpuva_insert`` it (not linked)."""
        va = Va(addr, range, obj, offset, sparse=sparse)
        self.insert_va(va)
        return va

    def insert_va(self, va: Va) -> None:
        """``drm_gpuva_insert``: -EINVAL for a bad range, -EEXIST over an occupied range;
        takes a VM reference held by the VA."""
        if self.freed:
            self.check_alive("insert")
        if va.freed:
            raise UseAfterFree(f"insert of freed {va!r}")
        if va.inserted:
            raise AlreadyInserted(f"{va!r} is already inserted in {va.vm!r}")
        self._check_target("insert", va.addr, va.range, va.obj, va.offset)
        hit = self.index.first_overlap(va.addr, va.addr + va.range - 1)
        if hit is not None:
            raise VaExists(f"insert {va!r}: range occupied by {hit!r}")
        self._insert(va)

    def _insert(self, va: Va) -> None:
        va.vm = self
        va.inserted = True
        self.index.add(va)
        self.generation += 1
        self.refs.get(va)
        if self.bus.route[VaInserted]:
            self.bus.emit(VaInserted(self, va))

    def remove(self, va: Va) -> None:
        """``drm_gpuva_remove``: take the VA out of the tree and drop its VM reference.  The
        kernel node is refused with a recorded WARN, as in the kernel."""
        if va.kernel_node:
            self._warn(f"remove of the kernel-reserved node {va!r} ignored")
            return
        if not va.inserted or va.vm is not self or va not in self.index:
            raise NotInserted(f"remove of {va!r}, which is not inserted in {self.name}")
        self._remove(va)

    def _remove(self, va: Va) -> None:
        self.index.discard(va)
        va.inserted = False
        self.generation += 1
        if self.bus.route[VaRemoved]:
            self.bus.emit(VaRemoved(self, va))
        self.put(va)

    def free_va(self, va: Va) -> None:
        """The driver frees a VA; refused while it is still inserted or linked."""
        if va.inserted or va.vm_bo is not None:
            raise VaInUse(f"free of {va!r} while still inserted or linked")
        va.freed = True

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        self.bus.emit(Warning(self, message))

    def _check_bounds(self, addr: int, range: int, obj: GemObject, offset: int) -> None:
        if self.check_bounds and offset + range > obj.size:
            raise OutOfBounds(
                f"mapping {obj.name}@{offset:#x}+{range:#x} at {addr:#x} passes its end "
                f"({obj.size:#x})"
            )

    # --- VmBo management ----------------------------------------------------------------

    def bo_create(self, obj: GemObject, holder: object = CALLER) -> VmBo:
        """``drm_gpuvm_bo_create``: a new VmBo (refcount 1 for ``holder``, holding the VM
        and ``obj``), **not** on the GEM's list."""
        if self.freed or obj.freed:
            self.check_alive("bo_create")
            obj.check_alive("bo_create")
        if self.fence_depth:
            self._no_fence("drm_gpuvm_bo_create")
        vm_bo = VmBo(self, obj)
        vm_bo.refs.get(holder)
        self.refs.get(vm_bo)
        obj.get(vm_bo)
        self.vm_bos[vm_bo] = None
        route = self.bus.route
        if route[VmBoCreated]:
            self.bus.emit(VmBoCreated(vm_bo))
        if route[RefGot]:
            self.bus.emit(RefGot(vm_bo, holder))
            self.bus.emit(RefGot(self, vm_bo))
        return vm_bo

    def bo_find(self, obj: GemObject, holder: object = CALLER) -> VmBo | None:
        """``drm_gpuvm_bo_find``: the listed VmBo of ``obj`` in this VM, +1 for ``holder``."""
        if obj.freed:
            obj.check_alive("bo_find")
        if self.lock_checks:
            self.need_gem_lock(obj, "drm_gpuvm_bo_find")
        vm_bo = obj.vm_bo_for(self)
        if vm_bo is not None:
            vm_bo.get(holder)
        return vm_bo

    def bo_obtain(self, obj: GemObject, holder: object = CALLER) -> VmBo:
        """``drm_gpuvm_bo_obtain``: find, or create and append to the GEM's list."""
        if self.fence_depth:
            self._no_fence("drm_gpuvm_bo_obtain")
        vm_bo = self.bo_find(obj, holder)
        if vm_bo is not None:
            return vm_bo
        self._check_lock_mode(obj)
        vm_bo = self.bo_create(obj, holder)
        obj.vm_bos.append(vm_bo)
        vm_bo.listed = True
        return vm_bo

    def bo_obtain_prealloc(self, pre: VmBo, holder: object = CALLER) -> VmBo:
        """``drm_gpuvm_bo_obtain_prealloc``: on a hit, drop ``pre`` (destroying it) and
        return the hit with a new reference; else list ``pre`` and return it.  ``pre`` must
        come from :meth:`bo_create` with the same holder."""
        if pre.vm is not self:
            raise LinkError(f"{pre!r} belongs to another VM")
        pre.check_alive("obtain_prealloc")
        if self.lock_checks:
            self.need_gem_lock(pre.obj, "drm_gpuvm_bo_obtain_prealloc")
            if pre.obj.vm_bo_for(self) is not None and pre.refs.total == 1:
                self._need_destroy_locks(pre, "drm_gpuvm_bo_obtain_prealloc")
        if pre.listed:
            raise LinkError(f"{pre!r} is already on its GEM's list")
        pre.refs.check_put(holder)
        if pre.obj.vm_bo_for(self) is None:
            self._check_lock_mode(pre.obj)
        hit = pre.obj.vm_bo_for(self)
        if hit is not None:
            hit.get(holder)
            pre.put(holder)
            return hit
        pre.obj.vm_bos.append(pre)
        pre.listed = True
        return pre

    def is_extobj(self, obj: GemObject | None) -> bool:
        """``drm_gpuvm_is_extobj``: the object does not share the VM's reservation."""
        return obj is not None and obj.resv is not self.r_obj.resv

    # --- link / unlink ------------------------------------------------------------------

    def link(self, va: Va, vm_bo: VmBo) -> None:
        """``drm_gpuva_link``: append ``va`` to ``vm_bo``'s list and take a VmBo reference
        held by the VA.  An object-less VA is silently not linked, as in the kernel."""
        if va.obj is None:
            self._warn(f"link of object-less {va!r} ignored (kernel: silent no-op)")
            return
        if not va.inserted or va.vm is None:
            raise NotInserted(f"link of {va!r}, which was never inserted (kernel NULL deref)")
        if va.vm_bo is not None:
            raise LinkError(f"{va!r} is already linked to {va.vm_bo!r}")
        vm_bo.check_alive("link")
        if vm_bo.obj is not va.obj:
            raise LinkError(f"link of {va!r} to {vm_bo!r}: object mismatch")
        if vm_bo.vm is not va.vm:
            raise LinkError(f"link of {va!r} (in {va.vm!r}) to {vm_bo!r}: VM mismatch")
        if vm_bo.vm.lock_checks:
            vm_bo.vm.need_gem_lock(va.obj, "drm_gpuva_link")
        # vm_bo.get(va), inlined (hot path): the VmBo is alive, so its count is too.
        refs = vm_bo.refs
        holders = refs.holders
        holders[va] = holders.get(va, 0) + 1
        refs.total += 1
        bus = vm_bo.vm.bus
        if bus.route[RefGot]:
            bus.emit(RefGot(vm_bo, va))
        va.vm_bo = vm_bo
        vm_bo.vas[va] = None
        if self.bus.route[VaLinked]:
            self.bus.emit(VaLinked(va, vm_bo))

    def unlink(self, va: Va) -> None:
        """``drm_gpuva_unlink``: drop ``va`` from its VmBo, putting the VmBo reference it
        held (which may destroy the VmBo, and with it drop VM and buffer references)."""
        self._unlink(va, deferred=False)

    def unlink_defer(self, va: Va) -> None:
        """``drm_gpuva_unlink_defer`` (IMMEDIATE_MODE only): as :meth:`unlink`, but the VmBo
        reference is dropped with :meth:`VmBo.put_deferred`, so a VmBo whose last reference
        this was becomes a zombie on the VM's deferred list instead of being destroyed
        here.  Allowed in a fence-signalling section.  An object-less VA is a no-op."""
        self._unlink(va, deferred=True)

    def _unlink(self, va: Va, *, deferred: bool) -> None:
        """The body of both unlinks: every check first (linked, holds its reference, the
        mode's rules), then off the VmBo's list and one put of the right kind."""
        if va.obj is None and va.vm_bo is None:
            return
        vm_bo = va.vm_bo
        what = "drm_gpuva_unlink_defer" if deferred else "drm_gpuva_unlink"
        if vm_bo is None:
            raise LinkError(f"{what} of {va!r}, which is not linked")
        vm = vm_bo.vm
        if deferred:
            vm.check_immediate(what)
        elif vm.fence_depth:
            vm._no_fence(f"{what} (its VmBo put may sleep; use unlink_defer)")
        if vm_bo.refs.holders.get(va, 0) <= 0:
            vm_bo.refs.check_put(va)  # raises
        if deferred:
            vm._need_takes_gem_lock(vm_bo.obj, what)
        elif vm.lock_checks:
            vm.need_gem_lock(va.obj, what)
            if vm_bo.refs.total == 1:
                vm._need_destroy_locks(vm_bo, what)
        del vm_bo.vas[va]
        va.vm_bo = None
        if vm.bus.route[VaUnlinked]:
            vm.bus.emit(VaUnlinked(va, vm_bo))
        if deferred:
            vm_bo.put_deferred(va)
        else:
            vm_bo.put(va)

    def bo_deferred_cleanup(self) -> list[VmBo]:
        """``drm_gpuvm_bo_deferred_cleanup``: take every zombie off the deferred list (an
        llist: newest first), take them off the extobj / evict lists under RESV_PROTECTED,
        then free each, dropping its VM and buffer references.  Returns the freed VmBos in
        the order they were freed."""
        self.check_alive("bo_deferred_cleanup")
        self._no_fence("drm_gpuvm_bo_deferred_cleanup")
        if self.lock_checks and self.bo_defer and self._protected and self.resv.held:
            raise LockMisuse(
                f"drm_gpuvm_bo_deferred_cleanup locks {self.name}'s resv, which is already held"
            )
        zombies = self.bo_defer[::-1]
        self.bo_defer.clear()
        if self._protected:
            for vm_bo in zombies:
                self.extobj.pop(vm_bo, None)
                self.evict.pop(vm_bo, None)
        for vm_bo in zombies:
            vm_bo._free_not_in_lists()
        return zombies

    # --- split / merge ------------------------------------------------------------------

    def _check_map_request(self, req: MapRequest) -> None:
        if not isinstance(req, MapRequest):
            raise InvalidValue(f"not a map request: {req!r}")
        self._check_target("sm_map", req.addr, req.range, req.obj, req.offset)

    def _check_target(
        self, what: str, addr: int, range: int, obj: GemObject | None, offset: int
    ) -> None:
        """What a new mapping must satisfy, for an insert or a map request: a valid range,
        a u64 offset, a live GEM (or no object) and, with ``check_bounds``, an object range
        inside the object."""
        self._check_range(what, addr, range)
        if type(offset) is not int or not 0 <= offset <= U64_MAX:
            check_u64("offset", offset)
        if obj is not None:
            if not isinstance(obj, GemObject):
                raise InvalidValue(f"{what}: the object is not a GEM: {obj!r}")
            if obj.freed:
                obj.check_alive(what)
            if self.check_bounds and offset + range > obj.size:
                self._check_bounds(addr, range, obj, offset)  # raises

    def _issue(self, ops: tuple[Op, ...]) -> OpList:
        """Stamp ``ops`` with the current generation and remember the list as built here,
        so :meth:`apply` can skip re-deriving what the generator guarantees (every named
        VA inserted here, pieces inside their VA, new ranges free) while the VA space is
        unchanged."""
        gen = self.generation
        if self._issued_gen != gen or len(self._issued) >= _ISSUED_MAX:
            self._issued.clear()
            self._issued_gen = gen
        out = OpList(self, gen, ops)
        self._issued[id(out)] = out
        return out

    def sm_map_ops(self, req: MapRequest) -> OpList:
        """``drm_gpuvm_sm_map_ops_create``: the ops that map ``req`` over the current
        layout (the tree is untouched)."""
        return self._map_ops_create(req, madvise=False)

    def madvise_ops(self, req: MapRequest) -> OpList:
        """``drm_gpuvm_madvise_ops_create``: the ops that split the object-less VAs at the
        edges of ``req``, so a driver can give ``[req.addr, req.addr+req.range)`` new
        attributes: VAs with an object are left alone, nothing is unmapped, at most two
        REMAPs and two MAPs (see :func:`gpuvm.core.splitmerge.madvise_list`); often empty.  The
        request is validated as for :meth:`sm_map_ops`; the tree is untouched."""
        return self._map_ops_create(req, madvise=True)

    def _map_ops_create(self, req: MapRequest, *, madvise: bool) -> OpList:
        """``__drm_gpuvm_sm_map_ops_create``: the body both entry points share (validate
        the request, refuse in a fence-signalling section, walk, stamp the list)."""
        what = "drm_gpuvm_madvise_ops_create" if madvise else "drm_gpuvm_sm_map_ops_create"
        if self.freed:
            self.check_alive(what)
        self._check_map_request(req)
        if self.fence_depth:
            self._no_fence(what)
        return self._issue((madvise_list if madvise else sm_map_list)(self.index, req))

    def sm_unmap_ops(self, addr: int, range: int) -> OpList:
        """``drm_gpuvm_sm_unmap_ops_create``: the ops that empty ``[addr, addr+range)``."""
        if self.freed:
            self.check_alive("sm_unmap")
        self._check_range("sm_unmap", addr, range)
        if self.fence_depth:
            self._no_fence("drm_gpuvm_sm_unmap_ops_create")
        return self._issue(sm_unmap_list(self.index, addr, range))

    def prefetch_ops(self, addr: int, range: int) -> OpList:
        """``drm_gpuvm_prefetch_ops_create``: one PREFETCH per VA in the range walk (no range
        validation, kernel node included, as in the kernel)."""
        check_u64("addr", addr)
        check_u64("range", range)
        self._no_fence("drm_gpuvm_prefetch_ops_create")
        return OpList(self, self.generation, tuple(prefetch_steps(self.index, addr, range)))

    def bo_unmap_ops(self, vm_bo: VmBo) -> OpList:
        """``drm_gpuvm_bo_unmap_ops_create``: one UNMAP per VA linked to ``vm_bo``."""
        vm_bo.check_alive("bo_unmap_ops")
        if vm_bo.vm is not self:
            raise LinkError(f"{vm_bo!r} belongs to another VM")
        self._no_fence("drm_gpuvm_bo_unmap_ops_create")
        self.need_gem_lock(vm_bo.obj, "drm_gpuvm_bo_unmap_ops_create")
        return OpList(self, self.generation, tuple(UnmapOp(va, False) for va in vm_bo.vas))

    def sm_map(self, req: MapRequest, step: Step) -> int:
        """``drm_gpuvm_sm_map``: hand each op to ``step`` as it is generated; ``step`` may
        change the tree (the walk is the safe variant).  Returns 0 or the first non-zero
        value ``step`` returned; earlier steps are not rolled back, as in the kernel."""
        self.check_alive("sm_map")
        self._check_map_request(req)
        for op in sm_map_steps(self.index, req):
            ret = step(op)
            if ret:
                return ret
        return 0

    def sm_unmap(self, addr: int, range: int, step: Step) -> int:
        """``drm_gpuvm_sm_unmap`` with a step callback; see :meth:`sm_map`."""
        self.check_alive("sm_unmap")
        self._check_range("sm_unmap", addr, range)
        for op in sm_unmap_steps(self.index, addr, range):
            ret = step(op)
            if ret:
                return ret
        return 0

    # --- applying ops (the canonical driver) --------------------------------------------

    def _validate_ops(self, ops: Sequence[Op]) -> None:
        """Check that ``ops`` can be applied in full: fresh, and structurally consistent
        with the current tree (every named VA inserted here, pieces inside their VA, new
        ranges free once the named VAs are gone)."""
        if isinstance(ops, OpList):
            if ops.vm is not self:
                raise StaleOps(f"ops built for {ops.vm!r} applied to {self!r}")
            if ops.generation != self.generation:
                raise StaleOps(
                    f"ops built at generation {ops.generation}, {self.name} is at "
                    f"{self.generation}: recompute them"
                )
            if self._issued_gen == ops.generation and self._issued.get(id(ops)) is ops:
                # Built here at this generation: consistent with the tree by construction.
                # Only what can change without a tree change is re-checked: the objects.
                for op in ops.ops:
                    if type(op) is MapOp and op.obj is not None:
                        if op.obj.freed:
                            op.obj.check_alive("map")
                        if self.check_bounds:
                            self._check_bounds(op.addr, op.range, op.obj, op.offset)
                return
        elif not isinstance(ops, Sequence):
            raise InvalidValue(f"not an op list: {ops!r}")
        removed: set[int] = set()
        new: list[tuple[int, int]] = []

        def take(va: Va) -> None:
            if va.kernel_node:
                raise InvalidRange(f"op names the kernel-reserved node {va!r}")
            if not va.inserted or va.vm is not self or va not in self.index:
                raise StaleOps(f"op names {va!r}, which is not inserted in {self.name}")
            if id(va) in removed:
                raise StaleOps(f"op list names {va!r} twice")
            removed.add(id(va))

        def place(addr: int, range_: int, what: str) -> None:
            for va in self.index.range_walk(addr, addr + range_):
                if id(va) not in removed:
                    raise VaExists(f"{what} [{addr:#x}, +{range_:#x}) overlaps {va!r}")
            for a, r in new:
                if addr < a + r and a < addr + range_:
                    raise VaExists(f"{what} [{addr:#x}, +{range_:#x}) overlaps another op")
            new.append((addr, range_))

        for op in ops:
            if isinstance(op, UnmapOp):
                take(op.va)
            elif isinstance(op, RemapOp):
                va = op.unmap.va
                take(va)
                if op.prev is None and op.next is None:
                    raise InvalidRange(f"REMAP of {va!r} with no piece")
                for piece, edge in ((op.prev, "prev"), (op.next, "next")):
                    if piece is None:
                        continue
                    if piece.obj is not va.obj or piece.range <= 0:
                        raise InvalidRange(f"REMAP {edge} piece {piece!r} does not fit {va!r}")
                    if piece.addr < va.addr or piece.end > va.end:
                        raise InvalidRange(f"REMAP {edge} piece {piece!r} outside {va!r}")
                    place(piece.addr, piece.range, f"REMAP {edge}")
            elif isinstance(op, MapOp):
                self._check_map_request(MapRequest(op.addr, op.range, op.obj, op.offset))
                place(op.addr, op.range, "MAP")
            elif isinstance(op, PrefetchOp):
                raise StaleOps("PREFETCH ops are not applied; hand them to the driver")
            else:
                raise InvalidValue(f"not an op: {op!r}")

    def _need_apply_locks(self, ops: Iterable[Op]) -> None:
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
            self.need_gem_lock(obj, "apply")
        if needs_resv or any(vb.refs.total + d <= 0 for vb, d in change.values()):
            self.need_vm_resv("apply")

    def apply(self, ops: Sequence[Op]) -> list[Va]:
        """Apply an op list the canonical way and return the VAs it created.

        MAP: a new VA is inserted and linked to ``bo_obtain(obj)`` (put on the extobj list
        if external), obtained before the first op runs, as drivers do before sm_map, so
        an UNMAP of the object's last mapping in the same list cannot destroy that VmBo
        (and free the object) under the MAP; REMAP: the old VA leaves the tree, the pieces
        are inserted (flags copied) and linked to the old VmBo, then the old VA is
        unlinked; UNMAP: unlink and remove.  Page-table events skip every part a ``keep``
        op preserves.  The whole list is validated before anything changes.
        """
        if self.freed:
            self.check_alive("apply")
        self._validate_ops(ops)
        if self.fence_depth:
            self._no_fence("apply (bo_obtain and VmBo puts)")
        if self.lock_checks:
            self._need_apply_locks(ops)
        route = self.bus.route
        emit = self.bus.emit if route[Mapped] or route[Unmapped] or route[TlbInvalidated] else None
        created: list[Va] = []
        kept: list[tuple[int, int]] = []
        mine = self._immediate
        for op in ops:
            if isinstance(op, MapOp) and op.obj is not None:
                for vb in op.obj.vm_bos:
                    if vb.vm._immediate is not mine:
                        self._check_lock_mode(op.obj)
        map_bos: dict[int, VmBo] = {}
        for op in ops:
            if isinstance(op, MapOp) and op.obj is not None and id(op.obj) not in map_bos:
                map_bo = self.bo_obtain(op.obj, _APPLY)
                map_bo.extobj_add()
                map_bos[id(op.obj)] = map_bo
        for op in ops:
            if isinstance(op, UnmapOp):
                va = op.va
                if op.keep:
                    kept.append((va.addr, va.end))
                elif emit is not None:
                    emit(Unmapped(self, va.addr, va.range))
                    emit(TlbInvalidated(self, va.addr, va.range))
                if va.vm_bo is not None:
                    self.unlink(va)
                self._remove(va)
                va.freed = True
            elif isinstance(op, RemapOp):
                old = op.unmap.va
                lo, hi = op.hole()
                if op.unmap.keep:
                    kept.append((lo, hi))
                elif emit is not None:
                    emit(Unmapped(self, lo, hi - lo))
                    emit(TlbInvalidated(self, lo, hi - lo))
                vm_bo = old.vm_bo
                self._remove(old)
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
                    self._insert(nva)
                    if vm_bo is not None:
                        self.link(nva, vm_bo)
                    created.append(nva)
                if vm_bo is not None:
                    self.unlink(old)
                old.freed = True
            elif isinstance(op, MapOp):
                va = Va(op.addr, op.range, op.obj, op.offset, sparse=op.obj is None)
                self._insert(va)
                if op.obj is not None:
                    self.link(va, map_bos[id(op.obj)])
                created.append(va)
                if emit is not None:
                    for a, r in _subtract(op.addr, op.end, kept):
                        emit(Mapped(self, a, r, op.obj, (op.offset + a - op.addr) & U64_MAX))
        for map_bo in map_bos.values():
            map_bo.put(_APPLY)
        return created

    def map(self, addr: int, range: int, obj: GemObject | None = None, offset: int = 0) -> list[Va]:
        """Compute and apply the ops of one map request (a one-op VM_BIND)."""
        return self.apply(self.sm_map_ops(MapRequest(addr, range, obj, offset)))

    def unmap(self, addr: int, range: int) -> list[Va]:
        """Compute and apply the ops that empty ``[addr, addr+range)``."""
        return self.apply(self.sm_unmap_ops(addr, range))

    def _need_bind_locks(self, reqs: list[MapRequest | UnmapRequest]) -> None:
        """Every object a bind will touch: the requests' objects and those of the VAs that
        meet any request's range now (a later request only meets those, or pieces and
        mappings of them, so this is exactly the set the binds' applies will need)."""
        touched: list[Op] = []
        for req in reqs:
            if isinstance(req, MapRequest) and req.obj is not None:
                touched.append(MapOp(req.addr, req.range, req.obj, req.offset))
            end = (req.addr + req.range) & U64_MAX
            touched += [UnmapOp(va) for va in self.index.range_walk(req.addr, end)]
        self._need_apply_locks(touched)  # the kernel node has no object: never locked

    def bind(self, requests: Iterable[MapRequest | UnmapRequest]) -> list[Va]:
        """A multi-op VM_BIND, all or nothing: every request is validated against the VM
        before the first is applied (sm_map and sm_unmap can only fail on the request's own
        range, never on the layout), then each is computed and applied in order."""
        reqs = list(requests)
        self.check_alive("bind")
        self._no_fence("bind")
        for req in reqs:
            if isinstance(req, MapRequest):
                self._check_map_request(req)
                if req.obj is not None:
                    self._check_lock_mode(req.obj)
            elif isinstance(req, UnmapRequest):
                self._check_range("sm_unmap", req.addr, req.range)
            else:
                raise InvalidValue(f"not a bind request: {req!r}")
        if self.lock_checks:
            self._need_bind_locks(reqs)
        # Like the ioctl's handle lookups and its VM reference, hold every request's object
        # and the VM until the bind is done: an earlier request may drop the last mapping
        # of an object (or VM) a later request still needs.
        held: dict[int, GemObject] = {}
        for req in reqs:
            if isinstance(req, MapRequest) and req.obj is not None:
                held.setdefault(id(req.obj), req.obj)
        created: list[Va] = []
        self.get(_BIND)
        for obj in held.values():
            obj.get(_BIND)
        try:
            for req in reqs:
                if isinstance(req, MapRequest):
                    created += self.apply(self.sm_map_ops(req))
                else:
                    created += self.apply(self.sm_unmap_ops(req.addr, req.range))
        finally:
            for obj in held.values():
                obj.put(_BIND)
            self.put(_BIND)
        return [va for va in created if va.inserted]

    # --- eviction and validation --------------------------------------------------------

    def bo_evict(self, vm_bo: VmBo, evict: bool = True) -> None:
        """``drm_gpuvm_bo_evict`` for a VmBo of this VM (see :meth:`VmBo.evict`)."""
        if vm_bo.vm is not self:
            raise LinkError(f"{vm_bo!r} belongs to another VM")
        vm_bo.evict(evict)

    def validate(self, callback: Callable[[VmBo], int | None] | None = None) -> int:
        """``drm_gpuvm_validate``: call the driver's ``vm_bo_validate`` on each VmBo of the
        evict list, stopping at the first error, which is returned (negative errno) as the
        kernel does; earlier validations stay done.  Without a callback: -EOPNOTSUPP."""
        self.check_alive("validate")
        self._no_fence("drm_gpuvm_validate (reservation locks)")
        self.need_vm_resv("drm_gpuvm_validate")
        cb = callback if callback is not None else self.vm_bo_validate
        if cb is None:
            raise NotSupported(f"{self.name} has no vm_bo_validate callback")
        for vm_bo in list(self.evict):
            if vm_bo.freed or vm_bo.zombie or vm_bo not in self.evict:
                continue  # zombies (kref 0) are skipped, as drm_gpuvm_bo_is_zombie
            vm_bo.get(_WALK)
            try:
                ret = cb(vm_bo) or 0
            finally:
                vm_bo.put(_WALK)
            if ret:
                return ret
            if self.bus.route[Validated]:
                self.bus.emit(Validated(vm_bo))
            if self._protected and not vm_bo.evicted:
                self.evict.pop(vm_bo, None)
        return 0

    # --- locking (as sets of reservation objects) ---------------------------------------

    def prepare_vm(self) -> frozenset[Resv]:
        """``drm_gpuvm_prepare_vm``: the VM's own reservation."""
        self._no_fence("drm_gpuvm_prepare_vm")
        return frozenset({self.resv})

    def prepare_objects(self) -> frozenset[Resv]:
        """``drm_gpuvm_prepare_objects``: every extobj's reservation.  Under RESV_PROTECTED
        it also lists evicted extobjs on the evict list (the deferred add).  Zombies (left on
        the list by a deferred put under RESV_PROTECTED) are skipped."""
        self._no_fence("drm_gpuvm_prepare_objects")
        self.need_vm_resv("drm_gpuvm_prepare_objects")
        live = [vm_bo for vm_bo in self.extobj if not vm_bo.zombie]
        out = {vm_bo.obj.resv for vm_bo in live}
        if self._protected:
            for vm_bo in live:
                if vm_bo.evicted:
                    self.evict.setdefault(vm_bo, None)
        return frozenset(out)

    def prepare_range(self, addr: int, range: int) -> frozenset[Resv]:
        """``drm_gpuvm_prepare_range``: the reservation of every object mapped in the range.
        An object-less VA (or the kernel node) is refused: the kernel passes NULL to
        drm_exec there."""
        check_u64("addr", addr)
        check_u64("range", range)
        self._no_fence("drm_gpuvm_prepare_range")
        vas = self.index.range_walk(addr, (addr + range) & U64_MAX)
        for va in vas:
            if va.obj is None:
                raise NoObject(f"prepare_range over object-less {va!r}")
        return frozenset(va.obj.resv for va in vas if va.obj is not None)

    def exec_lock(self, extra: Iterable[GemObject] = ()) -> frozenset[Resv]:
        """``drm_gpuvm_exec_lock``: VM reservation, all extobjs, plus extra objects."""
        return self.prepare_vm() | self.prepare_objects() | {o.resv for o in extra}

    def exec_lock_range(self, addr: int, range: int) -> frozenset[Resv]:
        """``drm_gpuvm_exec_lock_range``: VM reservation plus objects mapped in the range."""
        return self.prepare_vm() | self.prepare_range(addr, range)

    def sm_map_exec_lock(self, req: MapRequest) -> frozenset[Resv]:
        """``drm_gpuvm_sm_map_exec_lock``: the request's object, then the object of each VA
        an sm_map would remap or unmap."""
        out = set() if req.obj is None else {req.obj.resv}
        return frozenset(out | _touched_resvs(self.sm_map_ops(req)))

    def sm_unmap_exec_lock(self, addr: int, range: int) -> frozenset[Resv]:
        """``drm_gpuvm_sm_unmap_exec_lock``."""
        return _touched_resvs(self.sm_unmap_ops(addr, range))

    # --- the VM's own lifetime ------------------------------------------------------------

    def get(self, holder: object = OWNER) -> GpuVm:
        """``drm_gpuvm_get``."""
        self.check_alive("get")
        self.refs.acquire(holder, self.bus)
        return self

    def put(self, holder: object = OWNER) -> None:
        """``drm_gpuvm_put``; at zero the VM is torn down and ``vm_free`` called."""
        if self.freed:
            self.check_alive("put")
        self.refs.release(holder, self.bus)

    def _fini(self) -> None:
        if self.kernel_node is not None:
            self.index.discard(self.kernel_node)
            self.kernel_node.inserted = False
        if len(self.index) or self.extobj or self.evict:
            self._warn(f"{self.name} freed with VAs or listed VmBos left (possible leak)")
        if self.bo_defer:
            self._warn(f"{self.name} freed with VmBos on its deferred cleanup list")
        self.freed = True
        self.r_obj.put(self)
        if self.vm_free is not None:
            self.vm_free(self)
        else:
            self._warn(f"{self.name} has no vm_free callback: its memory leaks")
        self.bus.emit(Freed(self))

    def leaks(self) -> list[str]:
        """What keeps this VM alive besides its owner: one line per VA and VmBo."""
        out = [f"{va!r} still inserted" for va in self.vas]
        out += [
            f"{vb!r} on the deferred list, never cleaned up (bo_deferred_cleanup)"
            if vb.zombie
            else f"{vb!r} still alive (kref {vb.kref})"
            for vb in self.vm_bos
        ]
        for h, n in self.refs.holders.items():
            if isinstance(h, Va | VmBo):
                continue
            n -= h == OWNER  # the owner's own reference is the one being dropped
            if n > 0:
                out.append(f"held by {h!r}" + (f" x{n}" if n > 1 else ""))
        return out

    def close(self) -> None:
        """A driver's VM close: unmap and unlink every VA, then drop the owner reference
        (``msm_gem_vm_close``-style).  The VM is freed unless something else still holds
        it (a VmBo reference held by a caller, another owner)."""
        self.check_alive("close")
        self._no_fence("VM close")
        self.refs.check_put(OWNER)
        ops = OpList(self, self.generation, tuple(UnmapOp(va) for va in self.vas))
        self.apply(ops)
        self.put(OWNER)

    def teardown(self, *, strict: bool = True) -> list[str]:
        """Drop the owner reference, reporting whatever would keep the VM alive.  With
        ``strict`` a VM that would not be freed raises :class:`LeakError` naming each VA and
        VmBo left, and nothing changes; otherwise the put happens and the leaks are
        returned."""
        self.check_alive("teardown")
        self._no_fence("VM teardown")
        self.refs.check_put(OWNER)
        would_leak = self.refs.total > 1
        report = self.leaks() if would_leak else []
        if would_leak and strict:
            raise LeakError(f"teardown of {self.name} leaks: " + "; ".join(report))
        self.put(OWNER)
        return report

    # --- invariants -----------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Check, in O(n), what drm_gpuvm.c relies on: tree entries valid and disjoint, kernel
        node present iff ``reserve_range``, VmBo / extobj / evict / deferred lists consistent,
        VM refcount == owner refs + inserted VAs + VmBos (zombies included)."""
        if self.freed:
            return
        self.index.check()
        kn = self.kernel_node
        if (kn is not None) != bool(self.reserve_range):
            raise AssertionError("kernel node present iff reserve_range != 0")
        n_vas = 0
        for va in self.index:
            if va.vm is not self or not va.inserted:
                raise AssertionError(f"{va!r} in {self.name}'s tree but va.vm is {va.vm!r}")
            if va.kernel_node:
                if va is not kn:
                    raise AssertionError(f"stray kernel node {va!r}")
                continue
            n_vas += 1
            if not self.range_valid(va.addr, va.range) or va.range <= 0:
                raise AssertionError(f"{va!r} is not a valid range in {self.name}")
            if va.freed:
                raise AssertionError(f"freed {va!r} still in the tree")
            if va.obj is not None and va.obj.freed and va.vm_bo is not None:
                raise AssertionError(f"{va!r} linked to a freed buffer")
        for vm_bo in self.vm_bos:
            self._check_vm_bo(vm_bo)
        for lst, name in ((self.extobj, "extobj"), (self.evict, "evict")):
            for vm_bo in lst:
                if vm_bo.freed or vm_bo not in self.vm_bos:
                    raise AssertionError(f"dead {vm_bo!r} on {self.name}'s {name} list")
                if vm_bo.zombie and not self._protected:
                    raise AssertionError(f"zombie {vm_bo!r} left on {self.name}'s {name} list")
        zombies = {vb for vb in self.vm_bos if vb.zombie}
        if set(self.bo_defer) != zombies or len(self.bo_defer) != len(zombies):
            raise AssertionError(f"{self.name}'s deferred list {self.bo_defer} != zombies")
        for vm_bo in self.extobj:
            if not vm_bo.is_extobj:
                raise AssertionError(f"VM-private {vm_bo!r} on the extobj list")
        if not self._protected:
            evicted = {vb for vb in self.vm_bos if vb.evicted and not vb.zombie}
            if evicted != set(self.evict):
                raise AssertionError(f"evict list {list(self.evict)} != evicted {evicted}")
        owners = sum(n for h, n in self.refs.holders.items() if not isinstance(h, Va | VmBo))
        expected = owners + n_vas + len(self.vm_bos)
        self.refs.check()
        if self.refs.total != expected:
            raise AssertionError(
                f"{self.name} kref {self.refs.total} != owners {owners} + VAs {n_vas} + "
                f"VmBos {len(self.vm_bos)}"
            )
        for va in self.index:
            if not va.kernel_node and self.refs.count(va) != 1:
                raise AssertionError(f"{va!r} holds {self.refs.count(va)} VM refs")

    def _check_vm_bo(self, vm_bo: VmBo) -> None:
        if vm_bo.freed or vm_bo.vm is not self:
            raise AssertionError(f"{vm_bo!r} listed in {self.name} but freed or foreign")
        obj = vm_bo.obj
        if obj.freed:
            raise AssertionError(f"{vm_bo!r} holds a freed buffer")
        if obj.refs.count(vm_bo) != int(vm_bo.holds_obj) or self.refs.count(vm_bo) != 1:
            raise AssertionError(f"{vm_bo!r} must hold exactly one GEM and one VM reference")
        if vm_bo.listed != (vm_bo in obj.vm_bos) or obj.vm_bos.count(vm_bo) > 1:
            raise AssertionError(f"{vm_bo!r} GEM-list membership inconsistent")
        if vm_bo.zombie and (vm_bo.listed or vm_bo.refs.total or vm_bo.vas):
            raise AssertionError(f"zombie {vm_bo!r} listed, counted or with VAs")
        if vm_bo.listed and sum(1 for v in obj.vm_bos if v.vm is self) != 1:
            raise AssertionError(f"more than one listed VmBo for ({self.name}, {obj.name})")
        vm_bo.refs.check()
        for va in vm_bo.vas:
            if va.vm_bo is not vm_bo or va.obj is not obj or va.vm is not self:
                raise AssertionError(f"{va!r} on {vm_bo!r}'s list but linked elsewhere")
            if vm_bo.refs.count(va) != 1:
                raise AssertionError(f"{va!r} holds {vm_bo.refs.count(va)} refs on {vm_bo!r}")
        linked_holders = sum(1 for h in vm_bo.refs.holders if isinstance(h, Va))
        if linked_holders != len(vm_bo.vas):
            raise AssertionError(f"{vm_bo!r} held by VAs not on its list")


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


def _touched_resvs(ops: Iterable[Op]) -> frozenset[Resv]:
    out: set[Resv] = set()
    for op in ops:
        va = op.va if isinstance(op, UnmapOp) else op.unmap.va if isinstance(op, RemapOp) else None
        if va is not None and va.obj is not None:
            out.add(va.obj.resv)
    return frozenset(out)
