"""The GPU VA space (``struct drm_gpuvm``): the object, its fields and its method table.

:class:`GpuVm` owns the VA index, the kernel-reserved node, the extobj and evict lists and
its own reference count (``drm_gpuvm_init``, ``drm_gpuvm_resv_object_alloc``).  Its
behaviour is written as functions taking the VM first, as the kernel's ``drm_gpuvm_*`` /
``drm_gpuva_*`` functions take ``struct drm_gpuvm *``, one module per section of
``drivers/gpu/drm/drm_gpuvm.c``; the class binds each of them as a method, with no wrapper
(a method call is one Python call), and the bodies call each other through the VM (so a
subclass override or a patched ``GpuVm.<name>`` is what every caller runs):

* :mod:`gpuvm.core.vm_locks`: lock-held checks, IMMEDIATE_MODE, fence-signalling sections;
* :mod:`gpuvm.core.vm_tree`: range validation, lookups, ``drm_gpuva_insert`` / ``remove``;
* :mod:`gpuvm.core.vm_bos`: VmBo create / find / obtain, link / unlink, deferred cleanup;
* :mod:`gpuvm.core.vm_exec`: the ``drm_exec`` lock sets and ``drm_gpuvm_validate``;
* :mod:`gpuvm.core.vm_ops`: op-list creation and the callback walks (split / merge);
* :mod:`gpuvm.core.vm_apply`: the canonical driver's ``apply``, ``map`` / ``unmap``, ``bind``;
* :mod:`gpuvm.core.vm_life`: ``drm_gpuvm_get`` / ``put``, the final free, close, teardown;
* :mod:`gpuvm.core.vm_invariants`: the consistency checks of one VM.

Every mutating call validates first and mutates after, so a raised error leaves the VM,
its VAs, VmBos and buffers unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator

from gpuvm.core import (
    vm_apply,
    vm_bos,
    vm_exec,
    vm_invariants,
    vm_life,
    vm_locks,
    vm_ops,
    vm_tree,
)
from gpuvm.core.errors import InitOverflow, UseAfterFree
from gpuvm.core.events import EventBus, Warning
from gpuvm.core.gem import GemObject, Resv
from gpuvm.core.ops import OpList
from gpuvm.core.refs import OWNER, RefCount
from gpuvm.core.u64 import add_overflows, check_u64
from gpuvm.core.va import Va
from gpuvm.core.vatree import RefDirection, VaIndex
from gpuvm.core.vmbo import VmBo

__all__ = ["GpuVm", "GpuVmFlags", "Va", "VmBo"]


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
        "_obtain_locked",
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
        obtain_locked: bool = True,
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
        self._obtain_locked = bool(obtain_locked)
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

    @property
    def obtain_locked(self) -> bool:
        """The VmBo-obtain API of the newest ``drm_gpuvm.c`` (the default): ``bo_obtain`` is
        ``drm_gpuvm_bo_obtain_locked`` and WARNs in IMMEDIATE_MODE; ``bo_obtain_prealloc``
        requires IMMEDIATE_MODE and takes the GEM's gpuva lock itself.  False: the API
        before that series (a kernel-profile switch the driver layer passes down)."""
        return self._obtain_locked

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

    def __iter__(self) -> Iterator[Va]:
        """``drm_gpuvm_for_each_va``: every VA including the kernel node."""
        return iter(list(self.index))

    def keepers(self) -> Iterable[object]:
        return list(self.refs.holders)

    def check_alive(self, what: str = "access") -> None:
        if self.freed:
            raise UseAfterFree(f"{what} on freed {self!r}")

    def _warn(self, message: str) -> None:
        """Record a kernel WARN the model survives, and tell observers."""
        self.warnings.append(message)
        self.bus.emit(Warning(self, message))

    # --- the methods, by section of drm_gpuvm.c (bodies in the named modules) -----------

    # lock-held checks, IMMEDIATE_MODE, fence-signalling sections (vm_locks)
    check_immediate = vm_locks.check_immediate
    _no_fence = vm_locks._no_fence
    gem_lock = vm_locks.gem_lock
    need_gem_lock = vm_locks.need_gem_lock
    need_vm_resv = vm_locks.need_vm_resv
    need_obj_resv = vm_locks.need_obj_resv
    _need_destroy_locks = vm_locks._need_destroy_locks
    _check_lock_mode = vm_locks._check_lock_mode
    _need_takes_gem_lock = vm_locks._need_takes_gem_lock
    fence_signalling = vm_locks.fence_signalling

    # ranges, lookups, insert / remove (vm_tree)
    range_valid = vm_tree.range_valid
    _check_range = vm_tree._check_range
    _check_target = vm_tree._check_target
    _check_bounds = vm_tree._check_bounds
    find_first = vm_tree.find_first
    find = vm_tree.find
    find_prev = vm_tree.find_prev
    find_next = vm_tree.find_next
    interval_empty = vm_tree.interval_empty
    iter_range = vm_tree.iter_range
    insert = vm_tree.insert
    insert_va = vm_tree.insert_va
    _insert = vm_tree._insert
    remove = vm_tree.remove
    _remove = vm_tree._remove
    free_va = vm_tree.free_va

    # VmBo management, link / unlink, deferred cleanup (vm_bos)
    bo_create = vm_bos.bo_create
    bo_find = vm_bos.bo_find
    bo_obtain = vm_bos.bo_obtain
    bo_obtain_locked = vm_bos.bo_obtain
    bo_obtain_prealloc = vm_bos.bo_obtain_prealloc
    is_extobj = vm_bos.is_extobj
    bo_evict = vm_bos.bo_evict
    link = vm_bos.link
    unlink = vm_bos.unlink
    unlink_defer = vm_bos.unlink_defer
    _unlink = vm_bos._unlink
    bo_deferred_cleanup = vm_bos.bo_deferred_cleanup

    # drm_exec lock sets and validation (vm_exec)
    prepare_vm = vm_exec.prepare_vm
    prepare_objects = vm_exec.prepare_objects
    prepare_range = vm_exec.prepare_range
    exec_lock = vm_exec.exec_lock
    exec_lock_range = vm_exec.exec_lock_range
    sm_map_exec_lock = vm_exec.sm_map_exec_lock
    sm_unmap_exec_lock = vm_exec.sm_unmap_exec_lock
    validate = vm_exec.validate

    # op-list creation and the callback walks (vm_ops)
    _check_map_request = vm_ops._check_map_request
    _issue = vm_ops._issue
    sm_map_ops = vm_ops.sm_map_ops
    madvise_ops = vm_ops.madvise_ops
    _map_ops_create = vm_ops._map_ops_create
    sm_unmap_ops = vm_ops.sm_unmap_ops
    prefetch_ops = vm_ops.prefetch_ops
    bo_unmap_ops = vm_ops.bo_unmap_ops
    sm_map = vm_ops.sm_map
    sm_unmap = vm_ops.sm_unmap

    # the canonical driver (vm_apply)
    _validate_ops = vm_apply._validate_ops
    _need_apply_locks = vm_apply._need_apply_locks
    apply = vm_apply.apply
    map = vm_apply.map
    unmap = vm_apply.unmap
    _need_bind_locks = vm_apply._need_bind_locks
    bind = vm_apply.bind

    # the VM's own lifetime (vm_life)
    get = vm_life.get
    put = vm_life.put
    _fini = vm_life._fini
    leaks = vm_life.leaks
    close = vm_life.close
    teardown = vm_life.teardown

    # invariants (vm_invariants)
    check_invariants = vm_invariants.check_invariants
    _check_vm_bo = vm_invariants._check_vm_bo
