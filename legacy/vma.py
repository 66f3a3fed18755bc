"""BO-owned VMAs (``struct msm_gem_vma`` before the GPUVM conversion) and the buffer's list
of them.

A legacy VMA is one mapping of a whole buffer in one kernel-managed address space: an iova
range reserved in the allocator, a ``mapped`` flag (page tables written at pin time) and a
pin count.  It holds a reference on its address space but **none on its buffer**: the
buffer owns its VMAs, and freeing the buffer tears every one of them down
(``msm_gem_free_object`` -> ``put_iova_spaces(close=True)``).

The buffer's VMA list (``msm_obj->vmas``) is a :class:`BoVmas` registered as one of the
buffer's free hooks, so the core's :class:`~gpuvm.core.gem.GemObject` needs no legacy field:
the list *is* the teardown that runs at free.  The :class:`KernelVm` and
:class:`KernelVma` protocols describe what :mod:`legacy.path` needs from an address space
and its VMAs, so the same legacy operations run on this module's address spaces and on a
driver's GPUVM-backed kernel-managed VMs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import attrs

from gpuvm.core.gem import GemObject

if TYPE_CHECKING:
    from legacy.aspace import AddressSpace

__all__ = ["BoVmas", "KernelVm", "KernelVma", "LegacyVma", "bo_vmas"]


class KernelVma(Protocol):
    """What :mod:`legacy.path` reads and writes on a VMA of a kernel-managed VM."""

    @property
    def addr(self) -> int: ...

    @property
    def range(self) -> int: ...

    @property
    def obj(self) -> GemObject | None: ...

    mapped: bool
    pin_count: int
    user_cleared: bool
    """Deleted by userspace with ``MSM_INFO_SET_IOVA`` iova 0 (``clear_iova``): the lifetime
    checker reports an in-flight job whose VMA went this way as a ``hazard`` (the GPU faults
    or reaches what is mapped there next; the job still holds the buffer), not a
    use-after-free."""


class KernelVm(Protocol):
    """A kernel-managed VM: the kernel picks iovas and maps synchronously.

    Implemented by :class:`legacy.aspace.AddressSpace` (BO owns its VMAs) and by the driver
    layer's GPUVM-backed kernel-managed VM (a VMA is a ``drm_gpuva`` holding its VmBo).
    ``bo_owns_vmas`` says whether new VMAs go on the buffer's list and are torn down at
    buffer free (the legacy teardown trigger).
    """

    name: str
    tlb_kind: str
    page_size: int
    bo_owns_vmas: bool

    def check_alive(self, what: str = ...) -> None: ...

    def vma_of(self, obj: GemObject) -> KernelVma | None: ...

    def alloc_iova(
        self, size: int, align: int | None = ..., taken: Iterable[tuple[int, int]] = ...
    ) -> int: ...

    def check_iova(self, addr: int, size: int) -> None: ...

    def new_vma(self, obj: GemObject, addr: int, size: int) -> KernelVma: ...

    def map_vma(self, vma: KernelVma) -> None: ...

    def unmap_vma(self, vma: KernelVma) -> None: ...

    def close_vma(self, vma: KernelVma) -> None: ...


@attrs.define(slots=True, eq=False, repr=False)
class LegacyVma:
    """``struct msm_gem_vma`` (legacy): ``[addr, addr+range)`` of ``obj`` in ``vm``.

    ``obj`` is a raw pointer: the VMA holds no buffer reference.  It holds one reference on
    its address space (taken by :meth:`AddressSpace.new_vma`, dropped by ``close_vma``).
    """

    vm: AddressSpace
    obj: GemObject
    addr: int
    range: int
    mapped: bool = False
    pin_count: int = 0
    closed: bool = attrs.field(default=False, init=False)
    user_cleared: bool = attrs.field(default=False, init=False)

    @property
    def end(self) -> int:
        return self.addr + self.range

    def keepers(self) -> Iterable[object]:
        """The buffer owns its VMAs (it is what tears them down)."""
        return () if self.closed else (self.obj,)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("mapped" if self.mapped else "unmapped")
        pins = f" pin {self.pin_count}" if self.pin_count else ""
        return f"VMA({self.vm.name} {self.addr:#x}+{self.range:#x} {self.obj.name} {state}{pins})"


@attrs.define(slots=True, eq=False, repr=False)
class BoVmas:
    """A buffer's list of its VMAs (``msm_obj->vmas``), registered as the buffer's free hook.

    At most one VMA per (buffer, VM); :meth:`find` is the kernel's linear walk comparing the
    VM pointer.  Calling the object (the free hook) unmaps and closes every VMA left, the
    pre-6.17 rule that a VMA lives until its buffer is freed.
    """

    obj: GemObject
    vmas: list[KernelVma] = attrs.field(factory=list)

    def find(self, vm: object) -> KernelVma | None:
        for vma in self.vmas:
            if getattr(vma, "vm", None) is vm:
                return vma
        return None

    def __call__(self, obj: GemObject) -> None:
        """``msm_gem_free_object``'s sweep: unmap and close every VMA of the buffer."""
        for vma in list(self.vmas):
            vm: KernelVm = vma.vm  # type: ignore[attr-defined]
            vm.unmap_vma(vma)
            vm.close_vma(vma)

    def __repr__(self) -> str:
        return f"BoVmas({self.obj.name}: {len(self.vmas)})"


def bo_vmas(obj: GemObject, *, create: bool = False) -> BoVmas | None:
    """The VMA list of ``obj`` (found among its free hooks); with ``create``, register an
    empty one if it has none."""
    for hook in obj.free_hooks:
        if isinstance(hook, BoVmas):
            return hook
    if not create:
        return None
    lst = BoVmas(obj)
    obj.free_hooks.append(lst)
    return lst
