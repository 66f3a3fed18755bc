"""GEM buffer objects and reservation objects (``struct drm_gem_object``, ``dma_resv``).

Only the parts GPUVM touches are modelled here: the reference count (with holders), the
reservation object whose *identity* decides whether a buffer is external to a VM, and the
ordered, non-owning list of the VmBos of this object (``obj->gpuva.list``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import attrs

from gpuvm.errors import UseAfterFree
from gpuvm.events import EventBus, Freed
from gpuvm.refs import OWNER, RefCount
from gpuvm.u64 import check_u64

if TYPE_CHECKING:
    from gpuvm.vm import VmBo

_ids = itertools.count(1)


@attrs.define(slots=True, eq=False, repr=False)
class Resv:
    """A reservation object (``struct dma_resv``): only its identity matters here (which
    objects share a lock, which buffers are external to a VM)."""

    name: str = ""
    id: int = attrs.field(factory=lambda: next(_ids))

    def __repr__(self) -> str:
        return f"Resv({self.name or self.id})"


@attrs.define(slots=True, eq=False, repr=False)
class GemObject:
    """A GEM buffer object (``struct drm_gem_object``).

    Created with one reference held by :data:`~gpuvm.refs.OWNER` (``drm_gem_object_init``);
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
        self.check_alive("get")
        self.refs.acquire(holder, self.bus)
        return self

    def put(self, holder: object = OWNER) -> None:
        """``drm_gem_object_put`` on behalf of ``holder``; frees the object at zero."""
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

    def vm_bo_for(self, vm: object) -> VmBo | None:
        """The live VmBo of this object in ``vm`` (``drm_gpuvm_bo_find`` without the ref)."""
        for vm_bo in self.vm_bos:
            if vm_bo.vm is vm:
                return vm_bo
        return None
