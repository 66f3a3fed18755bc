"""The GPU VA space (``struct drm_gpuvm``): the object, its fields and its method table.

:class:`GpuVm` owns the VA index, the kernel-reserved node, the extobj and evict lists and
its own reference count (``drm_gpuvm_init``, ``drm_gpuvm_resv_object_alloc``).  Its
behaviour is written as functions taking the VM first, as the kernel's ``drm_gpuvm_*`` /
``drm_gpuva_*`` functions take ``struct drm_gpuvm *``, one module per section of
``drivers/gpu/drm/drm_gpuvm.c``.  The class declares each method with the body's
signature, calling it; interpreted (the default build), :func:`_bind_sections` then makes
each method the section function itself (a method call is one Python call, no wrapper).  The
bodies call each other through the VM, so a subclass override or a patched
``GpuVm.<name>`` is what every caller runs.  Compiled (``GPUVM_COMPILE=1``, see
``docs/compiled.md``) the class is a mypyc native class allowing interpreted subclasses: its
methods call the compiled bodies directly, an interpreted subclass's overrides (and patches
of ``GpuVm`` seen through such a subclass) still run, a plain ``GpuVm`` ignores patches.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from types import FunctionType, ModuleType

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
from gpuvm.core.gem import GemObject, Lock, Resv
from gpuvm.core.ops import MapRequest, Op, OpList, UnmapRequest
from gpuvm.core.refcount import CALLER, OWNER, RefCount
from gpuvm.core.u64 import add_overflows, check_u64
from gpuvm.core.va import Va
from gpuvm.core.vatree import RefDirection, VaIndex
from gpuvm.core.vmbo import VmBo

try:  # mypyc reads the decorator at compile time; interpreted it does nothing
    from mypy_extensions import mypyc_attr
except ImportError:  # installed without mypy

    def mypyc_attr(*args: object, **kwargs: object) -> Callable[[type], type]:  # type: ignore[misc]
        return lambda cls: cls


__all__ = ["GpuVm", "GpuVmFlags", "Va", "VmBo"]


class GpuVmFlags(enum.IntFlag):
    """``enum drm_gpuvm_flags``."""

    NONE = 0
    RESV_PROTECTED = 1 << 0
    """The extobj/evict lists are protected by the VM's reservation, not spinlocks."""
    IMMEDIATE_MODE = 1 << 1
    """The VM is modified in the fence-signalling path (version B and later)."""


@mypyc_attr(allow_interpreted_subclasses=True)
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
    def check_immediate(self, what: str) -> None:
        """See :func:`gpuvm.core.vm_locks.check_immediate`."""
        return vm_locks.check_immediate(self, what)

    def _no_fence(self, what: str) -> None:
        """See :func:`gpuvm.core.vm_locks._no_fence`."""
        return vm_locks._no_fence(self, what)

    def gem_lock(self, obj: GemObject) -> Lock:
        """See :func:`gpuvm.core.vm_locks.gem_lock`."""
        return vm_locks.gem_lock(self, obj)

    def need_gem_lock(self, obj: GemObject | None, what: str) -> None:
        """See :func:`gpuvm.core.vm_locks.need_gem_lock`."""
        return vm_locks.need_gem_lock(self, obj, what)

    def need_vm_resv(self, what: str) -> None:
        """See :func:`gpuvm.core.vm_locks.need_vm_resv`."""
        return vm_locks.need_vm_resv(self, what)

    def need_obj_resv(self, obj: GemObject, what: str) -> None:
        """See :func:`gpuvm.core.vm_locks.need_obj_resv`."""
        return vm_locks.need_obj_resv(self, obj, what)

    def _need_destroy_locks(self, vm_bo: VmBo, what: str) -> None:
        """See :func:`gpuvm.core.vm_locks._need_destroy_locks`."""
        return vm_locks._need_destroy_locks(self, vm_bo, what)

    def _check_lock_mode(self, obj: GemObject) -> None:
        """See :func:`gpuvm.core.vm_locks._check_lock_mode`."""
        return vm_locks._check_lock_mode(self, obj)

    def _need_takes_gem_lock(self, obj: GemObject, what: str) -> None:
        """See :func:`gpuvm.core.vm_locks._need_takes_gem_lock`."""
        return vm_locks._need_takes_gem_lock(self, obj, what)

    def fence_signalling(self) -> AbstractContextManager[GpuVm]:
        """See :func:`gpuvm.core.vm_locks.fence_signalling`."""
        return vm_locks.fence_signalling(self)

    # ranges, lookups, insert / remove (vm_tree)
    def range_valid(self, addr: object, range: object) -> bool:
        """See :func:`gpuvm.core.vm_tree.range_valid`."""
        return vm_tree.range_valid(self, addr, range)

    def _check_range(self, what: str, addr: int, range: int) -> None:
        """See :func:`gpuvm.core.vm_tree._check_range`."""
        return vm_tree._check_range(self, what, addr, range)

    def _check_target(
        self, what: str, addr: int, range: int, obj: GemObject | None, offset: int
    ) -> None:
        """See :func:`gpuvm.core.vm_tree._check_target`."""
        return vm_tree._check_target(self, what, addr, range, obj, offset)

    def _check_bounds(self, addr: int, range: int, obj: GemObject, offset: int) -> None:
        """See :func:`gpuvm.core.vm_tree._check_bounds`."""
        return vm_tree._check_bounds(self, addr, range, obj, offset)

    def find_first(self, addr: int, range: int) -> Va | None:
        """See :func:`gpuvm.core.vm_tree.find_first`."""
        return vm_tree.find_first(self, addr, range)

    def find(self, addr: int, range: int) -> Va | None:
        """See :func:`gpuvm.core.vm_tree.find`."""
        return vm_tree.find(self, addr, range)

    def find_prev(self, start: int) -> Va | None:
        """See :func:`gpuvm.core.vm_tree.find_prev`."""
        return vm_tree.find_prev(self, start)

    def find_next(self, end: int) -> Va | None:
        """See :func:`gpuvm.core.vm_tree.find_next`."""
        return vm_tree.find_next(self, end)

    def interval_empty(self, addr: int, range: int) -> bool:
        """See :func:`gpuvm.core.vm_tree.interval_empty`."""
        return vm_tree.interval_empty(self, addr, range)

    def iter_range(self, addr: int, end: int) -> list[Va]:
        """See :func:`gpuvm.core.vm_tree.iter_range`."""
        return vm_tree.iter_range(self, addr, end)

    def insert(
        self,
        addr: int,
        range: int,
        obj: GemObject | None = None,
        offset: int = 0,
        *,
        sparse: bool = False,
    ) -> Va:
        """See :func:`gpuvm.core.vm_tree.insert`."""
        return vm_tree.insert(self, addr, range, obj, offset, sparse=sparse)

    def insert_va(self, va: Va) -> None:
        """See :func:`gpuvm.core.vm_tree.insert_va`."""
        return vm_tree.insert_va(self, va)

    def _insert(self, va: Va) -> None:
        """See :func:`gpuvm.core.vm_tree._insert`."""
        return vm_tree._insert(self, va)

    def remove(self, va: Va) -> None:
        """See :func:`gpuvm.core.vm_tree.remove`."""
        return vm_tree.remove(self, va)

    def _remove(self, va: Va) -> None:
        """See :func:`gpuvm.core.vm_tree._remove`."""
        return vm_tree._remove(self, va)

    def free_va(self, va: Va) -> None:
        """See :func:`gpuvm.core.vm_tree.free_va`."""
        return vm_tree.free_va(self, va)

    # VmBo management, link / unlink, deferred cleanup (vm_bos)
    def bo_create(self, obj: GemObject, holder: object = CALLER) -> VmBo:
        """See :func:`gpuvm.core.vm_bos.bo_create`."""
        return vm_bos.bo_create(self, obj, holder)

    def bo_find(self, obj: GemObject, holder: object = CALLER) -> VmBo | None:
        """See :func:`gpuvm.core.vm_bos.bo_find`."""
        return vm_bos.bo_find(self, obj, holder)

    def bo_obtain(self, obj: GemObject, holder: object = CALLER) -> VmBo:
        """See :func:`gpuvm.core.vm_bos.bo_obtain`."""
        return vm_bos.bo_obtain(self, obj, holder)

    def bo_obtain_locked(self, obj: GemObject, holder: object = CALLER) -> VmBo:
        """``drm_gpuvm_bo_obtain_locked``, the newest name of :meth:`bo_obtain`: see
        :func:`gpuvm.core.vm_bos.bo_obtain`."""
        return vm_bos.bo_obtain(self, obj, holder)

    def _obtain(self, obj: GemObject, holder: object) -> VmBo:
        """See :func:`gpuvm.core.vm_bos._obtain`."""
        return vm_bos._obtain(self, obj, holder)

    def _obtain_prealloc_locking(self, pre: VmBo, holder: object) -> VmBo:
        """See :func:`gpuvm.core.vm_bos._obtain_prealloc_locking`."""
        return vm_bos._obtain_prealloc_locking(self, pre, holder)

    def bo_obtain_prealloc(self, pre: VmBo, holder: object = CALLER) -> VmBo:
        """See :func:`gpuvm.core.vm_bos.bo_obtain_prealloc`."""
        return vm_bos.bo_obtain_prealloc(self, pre, holder)

    def is_extobj(self, obj: GemObject | None) -> bool:
        """See :func:`gpuvm.core.vm_bos.is_extobj`."""
        return vm_bos.is_extobj(self, obj)

    def bo_evict(self, vm_bo: VmBo, evict: bool = True) -> None:
        """See :func:`gpuvm.core.vm_bos.bo_evict`."""
        return vm_bos.bo_evict(self, vm_bo, evict)

    def link(self, va: Va, vm_bo: VmBo) -> None:
        """See :func:`gpuvm.core.vm_bos.link`."""
        return vm_bos.link(self, va, vm_bo)

    def unlink(self, va: Va) -> None:
        """See :func:`gpuvm.core.vm_bos.unlink`."""
        return vm_bos.unlink(self, va)

    def unlink_defer(self, va: Va) -> None:
        """See :func:`gpuvm.core.vm_bos.unlink_defer`."""
        return vm_bos.unlink_defer(self, va)

    def _unlink(self, va: Va, *, deferred: bool) -> None:
        """See :func:`gpuvm.core.vm_bos._unlink`."""
        return vm_bos._unlink(self, va, deferred=deferred)

    def bo_deferred_cleanup(self) -> list[VmBo]:
        """See :func:`gpuvm.core.vm_bos.bo_deferred_cleanup`."""
        return vm_bos.bo_deferred_cleanup(self)

    # drm_exec lock sets and validation (vm_exec)
    def prepare_vm(self) -> frozenset[Resv]:
        """See :func:`gpuvm.core.vm_exec.prepare_vm`."""
        return vm_exec.prepare_vm(self)

    def prepare_objects(self) -> frozenset[Resv]:
        """See :func:`gpuvm.core.vm_exec.prepare_objects`."""
        return vm_exec.prepare_objects(self)

    def prepare_range(self, addr: int, range: int) -> frozenset[Resv]:
        """See :func:`gpuvm.core.vm_exec.prepare_range`."""
        return vm_exec.prepare_range(self, addr, range)

    def exec_lock(self, extra: Iterable[GemObject] = ()) -> frozenset[Resv]:
        """See :func:`gpuvm.core.vm_exec.exec_lock`."""
        return vm_exec.exec_lock(self, extra)

    def exec_lock_range(self, addr: int, range: int) -> frozenset[Resv]:
        """See :func:`gpuvm.core.vm_exec.exec_lock_range`."""
        return vm_exec.exec_lock_range(self, addr, range)

    def sm_map_exec_lock(self, req: MapRequest) -> frozenset[Resv]:
        """See :func:`gpuvm.core.vm_exec.sm_map_exec_lock`."""
        return vm_exec.sm_map_exec_lock(self, req)

    def sm_unmap_exec_lock(self, addr: int, range: int) -> frozenset[Resv]:
        """See :func:`gpuvm.core.vm_exec.sm_unmap_exec_lock`."""
        return vm_exec.sm_unmap_exec_lock(self, addr, range)

    def validate(self, callback: Callable[[VmBo], int | None] | None = None) -> int:
        """See :func:`gpuvm.core.vm_exec.validate`."""
        return vm_exec.validate(self, callback)

    # op-list creation and the callback walks (vm_ops)
    def _check_map_request(self, req: MapRequest) -> None:
        """See :func:`gpuvm.core.vm_ops._check_map_request`."""
        return vm_ops._check_map_request(self, req)

    def _issue(self, ops: tuple[Op, ...]) -> OpList:
        """See :func:`gpuvm.core.vm_ops._issue`."""
        return vm_ops._issue(self, ops)

    def sm_map_ops(self, req: MapRequest) -> OpList:
        """See :func:`gpuvm.core.vm_ops.sm_map_ops`."""
        return vm_ops.sm_map_ops(self, req)

    def madvise_ops(self, req: MapRequest) -> OpList:
        """See :func:`gpuvm.core.vm_ops.madvise_ops`."""
        return vm_ops.madvise_ops(self, req)

    def _map_ops_create(self, req: MapRequest, *, madvise: bool) -> OpList:
        """See :func:`gpuvm.core.vm_ops._map_ops_create`."""
        return vm_ops._map_ops_create(self, req, madvise=madvise)

    def sm_unmap_ops(self, addr: int, range: int) -> OpList:
        """See :func:`gpuvm.core.vm_ops.sm_unmap_ops`."""
        return vm_ops.sm_unmap_ops(self, addr, range)

    def prefetch_ops(self, addr: int, range: int) -> OpList:
        """See :func:`gpuvm.core.vm_ops.prefetch_ops`."""
        return vm_ops.prefetch_ops(self, addr, range)

    def bo_unmap_ops(self, vm_bo: VmBo) -> OpList:
        """See :func:`gpuvm.core.vm_ops.bo_unmap_ops`."""
        return vm_ops.bo_unmap_ops(self, vm_bo)

    def sm_map(self, req: MapRequest, step: vm_ops.Step) -> int:
        """See :func:`gpuvm.core.vm_ops.sm_map`."""
        return vm_ops.sm_map(self, req, step)

    def sm_unmap(self, addr: int, range: int, step: vm_ops.Step) -> int:
        """See :func:`gpuvm.core.vm_ops.sm_unmap`."""
        return vm_ops.sm_unmap(self, addr, range, step)

    # the canonical driver (vm_apply)
    def _validate_ops(self, ops: Sequence[Op]) -> None:
        """See :func:`gpuvm.core.vm_apply._validate_ops`."""
        return vm_apply._validate_ops(self, ops)

    def _need_apply_locks(self, ops: Iterable[Op]) -> None:
        """See :func:`gpuvm.core.vm_apply._need_apply_locks`."""
        return vm_apply._need_apply_locks(self, ops)

    def apply(self, ops: Sequence[Op]) -> list[Va]:
        """See :func:`gpuvm.core.vm_apply.apply`."""
        return vm_apply.apply(self, ops)

    def map(self, addr: int, range: int, obj: GemObject | None = None, offset: int = 0) -> list[Va]:
        """See :func:`gpuvm.core.vm_apply.map`."""
        return vm_apply.map(self, addr, range, obj, offset)

    def unmap(self, addr: int, range: int) -> list[Va]:
        """See :func:`gpuvm.core.vm_apply.unmap`."""
        return vm_apply.unmap(self, addr, range)

    def _need_bind_locks(self, reqs: list[MapRequest | UnmapRequest]) -> None:
        """See :func:`gpuvm.core.vm_apply._need_bind_locks`."""
        return vm_apply._need_bind_locks(self, reqs)

    def bind(self, requests: Iterable[MapRequest | UnmapRequest]) -> list[Va]:
        """See :func:`gpuvm.core.vm_apply.bind`."""
        return vm_apply.bind(self, requests)

    # the VM's own lifetime (vm_life)
    def get(self, holder: object = OWNER) -> GpuVm:
        """See :func:`gpuvm.core.vm_life.get`."""
        return vm_life.get(self, holder)

    def put(self, holder: object = OWNER) -> None:
        """See :func:`gpuvm.core.vm_life.put`."""
        return vm_life.put(self, holder)

    def _fini(self) -> None:
        """See :func:`gpuvm.core.vm_life._fini`."""
        return vm_life._fini(self)

    def leaks(self) -> list[str]:
        """See :func:`gpuvm.core.vm_life.leaks`."""
        return vm_life.leaks(self)

    def close(self) -> None:
        """See :func:`gpuvm.core.vm_life.close`."""
        return vm_life.close(self)

    def teardown(self, *, strict: bool = True) -> list[str]:
        """See :func:`gpuvm.core.vm_life.teardown`."""
        return vm_life.teardown(self, strict=strict)

    # invariants (vm_invariants)
    def check_invariants(self) -> None:
        """See :func:`gpuvm.core.vm_invariants.check_invariants`."""
        return vm_invariants.check_invariants(self)

    def _check_vm_bo(self, vm_bo: VmBo) -> None:
        """See :func:`gpuvm.core.vm_invariants._check_vm_bo`."""
        return vm_invariants._check_vm_bo(self, vm_bo)


_SECTIONS: tuple[tuple[ModuleType, tuple[str, ...]], ...] = (
    (
        vm_locks,
        (
            "check_immediate",
            "_no_fence",
            "gem_lock",
            "need_gem_lock",
            "need_vm_resv",
            "need_obj_resv",
            "_need_destroy_locks",
            "_check_lock_mode",
            "_need_takes_gem_lock",
            "fence_signalling",
        ),
    ),
    (
        vm_tree,
        (
            "range_valid",
            "_check_range",
            "_check_target",
            "_check_bounds",
            "find_first",
            "find",
            "find_prev",
            "find_next",
            "interval_empty",
            "iter_range",
            "insert",
            "insert_va",
            "_insert",
            "remove",
            "_remove",
            "free_va",
        ),
    ),
    (
        vm_bos,
        (
            "bo_create",
            "bo_find",
            "bo_obtain",
            "_obtain",
            "_obtain_prealloc_locking",
            "bo_obtain_prealloc",
            "is_extobj",
            "bo_evict",
            "link",
            "unlink",
            "unlink_defer",
            "_unlink",
            "bo_deferred_cleanup",
        ),
    ),
    (
        vm_exec,
        (
            "prepare_vm",
            "prepare_objects",
            "prepare_range",
            "exec_lock",
            "exec_lock_range",
            "sm_map_exec_lock",
            "sm_unmap_exec_lock",
            "validate",
        ),
    ),
    (
        vm_ops,
        (
            "_check_map_request",
            "_issue",
            "sm_map_ops",
            "madvise_ops",
            "_map_ops_create",
            "sm_unmap_ops",
            "prefetch_ops",
            "bo_unmap_ops",
            "sm_map",
            "sm_unmap",
        ),
    ),
    (
        vm_apply,
        ("_validate_ops", "_need_apply_locks", "apply", "map", "unmap", "_need_bind_locks", "bind"),
    ),
    (vm_life, ("get", "put", "_fini", "leaks", "close", "teardown")),
    (vm_invariants, ("check_invariants", "_check_vm_bo")),
)
"""Every method of :class:`GpuVm` by the section module holding its body (same name)."""


def _bind_sections() -> None:
    """Interpreted: make each method the section function itself, as ``GpuVm.x =
    vm_x.f`` would, so a call is one Python call and ``vars(GpuVm)[name]`` is that
    function.  Skipped for a method that is compiled (mypyc: the class is native and
    its methods call the bodies directly) and for a body that is compiled (a compiled
    function does not bind as a method; the wrapper above does it)."""
    for module, names in _SECTIONS:
        for name in names:
            body = getattr(module, name)
            if isinstance(vars(GpuVm)[name], FunctionType) and isinstance(body, FunctionType):
                setattr(GpuVm, name, body)
    # the newest kernel's name for drm_gpuvm_bo_obtain: the same body under a second name
    if isinstance(vars(GpuVm)["bo_obtain_locked"], FunctionType) and isinstance(
        vm_bos.bo_obtain, FunctionType
    ):
        GpuVm.bo_obtain_locked = vm_bos.bo_obtain  # type: ignore[method-assign]


_bind_sections()
