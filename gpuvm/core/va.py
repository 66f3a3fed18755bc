"""GPU VA mappings (``struct drm_gpuva``).

A :class:`Va` is allocated and freed by the driver; GPUVM only inserts it into a VM's tree
(``va.vm`` set, a VM reference taken) and links it to a VmBo (a VmBo reference taken).
``obj`` is a raw, uncounted pointer: the link, not the VA, keeps the buffer alive.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from gpuvm.core.gem import GemObject
    from gpuvm.core.vm import GpuVm
    from gpuvm.core.vmbo import VmBo


@attrs.define(slots=True, eq=False, repr=False)
class Va:
    """One mapping ``[addr, addr+range)`` of ``obj`` from ``offset`` (``struct drm_gpuva``).

    Flags: ``sparse`` (``DRM_GPUVA_SPARSE``), ``invalidated`` (``DRM_GPUVA_INVALIDATED``),
    ``user_flags`` (driver bits).  The core never reads ``sparse`` or user bits.
    """

    addr: int
    range: int
    obj: GemObject | None = None
    offset: int = 0
    sparse: bool = False
    invalidated: bool = False
    user_flags: int = 0
    vm: GpuVm | None = attrs.field(default=None, init=False)
    vm_bo: VmBo | None = attrs.field(default=None, init=False)
    inserted: bool = attrs.field(default=False, init=False)
    kernel_node: bool = attrs.field(default=False, init=False)
    freed: bool = attrs.field(default=False, init=False)

    @property
    def end(self) -> int:
        return self.addr + self.range

    @property
    def linked(self) -> bool:
        return self.vm_bo is not None

    def invalidate(self, invalidated: bool = True) -> None:
        """``drm_gpuva_invalidate``: set or clear the INVALIDATED flag."""
        self.invalidated = invalidated

    def layout(self) -> tuple[int, int, GemObject | None, int]:
        """``(addr, range, obj, offset)``, the comparable content of the mapping."""
        return (self.addr, self.range, self.obj, self.offset)

    def keepers(self) -> Iterable[object]:
        """A VA is owned by the driver that allocated it: a root of every holder chain."""
        return ()

    def __repr__(self) -> str:
        if self.kernel_node:
            return f"Va[kernel {self.addr:#x}+{self.range:#x}]"
        what = self.obj.name if self.obj is not None else "null"
        return f"Va[{self.addr:#x}+{self.range:#x} {what}@{self.offset:#x}]"
