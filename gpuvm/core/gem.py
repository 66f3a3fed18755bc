"""GEM buffer objects and reservation objects (``struct drm_gem_object``, ``dma_resv``).

Only the parts GPUVM touches are modelled here: the reference count (with holders), the
reservation object whose *identity* decides whether a buffer is external to a VM, and the
ordered, non-owning list of the VmBos of this object (``obj->gpuva.list``).
"""

from __future__ import annotations

import errno
import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import attrs

from gpuvm.core.errors import LockMisuse, UseAfterFree
from gpuvm.core.events import EventBus, Freed
from gpuvm.core.refcount import OWNER, RefCount
from gpuvm.core.u64 import check_u64

if TYPE_CHECKING:
    from gpuvm.core.vmbo import VmBo

_ids = itertools.count(1)


@attrs.define(slots=True, eq=False, repr=False)
class Lock:
    """A sleeping lock tracked as held or not (a ``mutex``, or a ``dma_resv``'s ww_mutex),
    so GPUVM calls can check that their caller holds what the kernel asserts with lockdep
    (see ``GpuVm(lock_checks=True)``).  One holder at a time; no contexts, no waiting."""

    name: str = ""
    held: bool = attrs.field(default=False, init=False)

    def lock(self) -> None:
        """Take the lock; taking it again before unlocking is a self-deadlock."""
        if self.held:
            raise LockMisuse(f"{self!r} is already held (self-deadlock)")
        self.held = True

    def unlock(self) -> None:
        if not self.held:
            raise LockMisuse(f"unlock of {self!r}, which is not held", errno=errno.EINVAL)
        self.held = False

    def __repr__(self) -> str:
        return f"Lock({self.name})"


@attrs.define(slots=True, eq=False, repr=False)
class Resv(Lock):
    """A reservation object (``struct dma_resv``): its identity decides which objects share
    a lock and which buffers are external to a VM; as a :class:`Lock` it can be held."""

    id: int = attrs.field(factory=lambda: next(_ids))

    def __repr__(self) -> str:
        return f"Resv({self.name or self.id})"


@contextmanager
def locked(*locks: Lock | GemObject) -> Iterator[None]:
    """Hold every lock for the block (a buffer stands for its ``resv``), taken in order and
    released in reverse, as a ``drm_exec`` locking loop leaves them; a lock listed twice is
    taken once (``DRM_EXEC_IGNORE_DUPLICATES``).  Nothing is taken if one is already held."""
    todo: list[Lock] = []
    for item in locks:
        lk = item.resv if isinstance(item, GemObject) else item
        if any(lk is t for t in todo):
            continue
        if lk.held:
            raise LockMisuse(f"{lk!r} is already held (self-deadlock)")
        todo.append(lk)
    for lk in todo:
        lk.held = True
    try:
        yield
    finally:
        for lk in reversed(todo):
            lk.held = False


@attrs.define(slots=True, eq=False, repr=False)
class GemObject:
    """A GEM buffer object (``struct drm_gem_object``).

    Created with one reference held by :data:`~gpuvm.core.refs.OWNER` (``drm_gem_object_init``);
    :meth:`put` with that holder drops it.  ``resv`` defaults to the object's own
    reservation; pass a VM's ``resv`` to make a VM-private buffer.
    """

    size: int
    name: str = ""
    resv: Resv = attrs.field(factory=Resv)
    bus: EventBus = attrs.field(factory=EventBus)
    id: int = attrs.field(factory=lambda: next(_ids))
    refs: RefCount = attrs.field(init=False)
    vm_bos: list[VmBo] = attrs.field(init=False, factory=list)
    freed: bool = attrs.field(init=False, default=False)
    free_hooks: list[Callable[[GemObject], None]] = attrs.field(init=False, factory=list)
    _gpuva_lock: Lock | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        check_u64("size", self.size)
        if not self.name:
            self.name = f"bo{self.id}"
        if not self.resv.name:
            self.resv.name = self.name
        self.refs = RefCount(self, on_zero=self._release)
        self.refs.get(OWNER)

    def __repr__(self) -> str:
        return f"GEM {self.name}" + (" (freed)" if self.freed else "")

    # --- references ------------------------------------------------------------------

    @property
    def refcount(self) -> int:
        return self.refs.total

    def get(self, holder: object = OWNER) -> GemObject:
        """``drm_gem_object_get`` on behalf of ``holder``."""
        if self.freed:
            self.check_alive("get")
        self.refs.acquire(holder, self.bus)
        return self

    def put(self, holder: object = OWNER) -> None:
        """``drm_gem_object_put`` on behalf of ``holder``; frees the object at zero."""
        if self.freed:
            self.check_alive("put")
        self.refs.release(holder, self.bus)

    def _release(self) -> None:
        self.freed = True
        for hook in list(self.free_hooks):
            hook(self)
        self.bus.emit(Freed(self))

    def check_alive(self, what: str = "access") -> None:
        if self.freed:
            raise UseAfterFree(f"{what} on freed {self!r}")

    def keepers(self) -> Iterable[object]:
        return list(self.refs.holders)

    # --- GPUVM views -------------------------------------------------------------------

    @property
    def gpuva_lock(self) -> Lock:
        """``obj->gpuva.lock``: the mutex guarding the GEM's VmBo list on IMMEDIATE_MODE
        VMs (others use the object's ``resv``)."""
        lk = self._gpuva_lock
        if lk is None:
            lk = self._gpuva_lock = Lock(f"{self.name}.gpuva")
        return lk

    def vm_bo_for(self, vm: object) -> VmBo | None:
        """The live VmBo of this object in ``vm`` (``drm_gpuvm_bo_find`` without the ref)."""
        for vm_bo in self.vm_bos:
            if vm_bo.vm is vm:
                return vm_bo
        return None
