"""Driver-side objects shared by the device, file, PRIME, KMS and policy modules.

* :class:`Bo`: the driver's GEM object (``msm_gem_object``): a
  :class:`~gpuvm.core.gem.GemObject` plus the handle count, the dma-buf pointer (export cache
  or import), the import attachment, the 6.17 ``vma_ref`` count and a busy count.
* :class:`DriverVm`, :class:`ManagedVm` and :class:`ManagedVa`: the driver layer's VM
  classes (VM_BIND contexts; GPUVM-backed kernel-managed VMs and their VMAs), defined in
  :mod:`gpuvm.drm.driver_vm` and re-exported here.
* :class:`Tally`: a count with holders that can return to zero and rise again (an
  ``atomic_t`` such as ``vma_ref``), and :class:`Job`: an in-flight submit.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

from gpuvm.core.errors import RefcountUnderflow
from gpuvm.core.events import EventBus
from gpuvm.core.gem import GemObject, Resv
from gpuvm.core.refs import Holder, describe
from gpuvm.core.vm import GpuVm
from gpuvm.core.vmbo import VmBo
from gpuvm.drm.driver_vm import DriverVm, ManagedVa, ManagedVm

if TYPE_CHECKING:
    from gpuvm.drm.dmabuf import Attachment, DmaBuf

__all__ = ["Bo", "DriverVm", "Job", "ManagedVa", "ManagedVm", "Tally"]

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
