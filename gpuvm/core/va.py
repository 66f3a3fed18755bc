"""GPU VA mappings (``struct drm_gpuva``).

A :class:`Va` is allocated and freed by the driver; GPUVM only inserts it into a VM's tree
(``va.vm`` set, a VM reference taken) and links it to a VmBo (a VmBo reference taken).
``obj`` is a raw, uncounted pointer: the link, not the VA, keeps the buffer alive.

:class:`Va` is a plain class with ``__slots__`` and a hand-written ``__init__`` (identity
equality, as before) rather than an attrs class, the documented exception to the house rule:
mypyc compiles it as a native class for the compiled core and cannot compile attrs classes
(``docs/compiled.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

try:  # mypyc reads the decorator at compile time; interpreted it does nothing
    from mypy_extensions import mypyc_attr
except ImportError:  # installed without mypy

    def mypyc_attr(*args: object, **kwargs: object) -> Callable[[type], type]:  # type: ignore[misc]
        return lambda cls: cls


if TYPE_CHECKING:
    from gpuvm.core.gem import GemObject
    from gpuvm.core.vm import GpuVm
    from gpuvm.core.vmbo import VmBo


@mypyc_attr(allow_interpreted_subclasses=True)
class Va:
    """One mapping ``[addr, addr+range)`` of ``obj`` from ``offset`` (``struct drm_gpuva``).

    Flags: ``sparse`` (``DRM_GPUVA_SPARSE``), ``invalidated`` (``DRM_GPUVA_INVALIDATED``),
    ``user_flags`` (driver bits).  The core never reads ``sparse`` or user bits.
    """

    __slots__ = (
        "addr",
        "freed",
        "inserted",
        "invalidated",
        "kernel_node",
        "obj",
        "offset",
        "range",
        "sparse",
        "user_flags",
        "vm",
        "vm_bo",
    )

    addr: int
    range: int
    obj: GemObject | None
    offset: int
    sparse: bool
    invalidated: bool
    user_flags: int
    vm: GpuVm | None
    vm_bo: VmBo | None
    inserted: bool
    kernel_node: bool
    freed: bool

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
        self.addr = addr
        self.range = range
        self.obj = obj
        self.offset = offset
        self.sparse = sparse
        self.invalidated = invalidated
        self.user_flags = user_flags
        self.vm = None
        self.vm_bo = None
        self.inserted = False
        self.kernel_node = False
        self.freed = False

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
