"""Requests and the split/merge operations GPUVM hands to drivers (``struct drm_gpuva_op``).

All are frozen values.  An op that names an existing VA (``UnmapOp.va``, ``PrefetchOp.va``)
holds the VA entity itself, so two ops are equal only if they name the same VA.

These are plain classes with ``__slots__`` and hand-written ``__init__`` / ``__eq__`` /
``__hash__`` / ``__repr__`` (what ``attrs.frozen`` generated before) rather than attrs
classes, the documented exception to the house rule: mypyc compiles them as native classes
for the compiled core, and it cannot compile attrs classes (``docs/compiled.md``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Final, overload

from gpuvm.core.frozen import freeze

if TYPE_CHECKING:
    from gpuvm.core.gem import GemObject
    from gpuvm.core.va import Va
    from gpuvm.core.vm import GpuVm


class MapRequest:
    """A request to map ``obj`` from ``offset`` at ``[addr, addr+range)``
    (``struct drm_gpuvm_map_req``); ``obj=None`` asks for an object-less (sparse/NULL)
    mapping."""

    __slots__ = ("addr", "obj", "offset", "range")

    addr: Final[int]
    range: Final[int]
    obj: Final[GemObject | None]
    offset: Final[int]

    def __init__(
        self, addr: int, range: int, obj: GemObject | None = None, offset: int = 0
    ) -> None:
        self.addr = addr
        self.range = range
        self.obj = obj
        self.offset = offset

    @property
    def end(self) -> int:
        return self.addr + self.range

    def __eq__(self, other: object) -> bool:
        if type(other) is not MapRequest:
            return NotImplemented
        return (self.addr, self.range, self.obj, self.offset) == (
            other.addr,
            other.range,
            other.obj,
            other.offset,
        )

    def __hash__(self) -> int:
        return hash(("MapRequest", self.addr, self.range, self.obj, self.offset))

    def __repr__(self) -> str:
        return (
            f"MapRequest(addr={self.addr!r}, range={self.range!r}, obj={self.obj!r}, "
            f"offset={self.offset!r})"
        )


class UnmapRequest:
    """A request to unmap ``[addr, addr+range)`` (the driver's UNMAP bind op)."""

    __slots__ = ("addr", "range")

    addr: Final[int]
    range: Final[int]

    def __init__(self, addr: int, range: int) -> None:
        self.addr = addr
        self.range = range

    @property
    def end(self) -> int:
        return self.addr + self.range

    def __eq__(self, other: object) -> bool:
        if type(other) is not UnmapRequest:
            return NotImplemented
        return self.addr == other.addr and self.range == other.range

    def __hash__(self) -> int:
        return hash(("UnmapRequest", self.addr, self.range))

    def __repr__(self) -> str:
        return f"UnmapRequest(addr={self.addr!r}, range={self.range!r})"


class Piece:
    """A part of a split VA that survives a REMAP (``struct drm_gpuva_op_map`` as used for
    ``remap.prev`` / ``remap.next``).  Pieces carry no flags."""

    __slots__ = ("addr", "obj", "offset", "range")

    addr: Final[int]
    range: Final[int]
    obj: Final[GemObject | None]
    offset: Final[int]

    def __init__(self, addr: int, range: int, obj: GemObject | None, offset: int) -> None:
        self.addr = addr
        self.range = range
        self.obj = obj
        self.offset = offset

    @property
    def end(self) -> int:
        return self.addr + self.range

    def __eq__(self, other: object) -> bool:
        if type(other) is not Piece:
            return NotImplemented
        return (self.addr, self.range, self.obj, self.offset) == (
            other.addr,
            other.range,
            other.obj,
            other.offset,
        )

    def __hash__(self) -> int:
        return hash(("Piece", self.addr, self.range, self.obj, self.offset))

    def __repr__(self) -> str:
        return (
            f"Piece(addr={self.addr!r}, range={self.range!r}, obj={self.obj!r}, "
            f"offset={self.offset!r})"
        )


class MapOp:
    """``DRM_GPUVA_OP_MAP``: create and map a new VA; always the last op of an sm_map."""

    __slots__ = ("addr", "obj", "offset", "range")

    addr: Final[int]
    range: Final[int]
    obj: Final[GemObject | None]
    offset: Final[int]

    def __init__(self, addr: int, range: int, obj: GemObject | None, offset: int) -> None:
        self.addr = addr
        self.range = range
        self.obj = obj
        self.offset = offset

    @property
    def end(self) -> int:
        return self.addr + self.range

    def __eq__(self, other: object) -> bool:
        if type(other) is not MapOp:
            return NotImplemented
        return (self.addr, self.range, self.obj, self.offset) == (
            other.addr,
            other.range,
            other.obj,
            other.offset,
        )

    def __hash__(self) -> int:
        return hash(("MapOp", self.addr, self.range, self.obj, self.offset))

    def __repr__(self) -> str:
        return (
            f"MapOp(addr={self.addr!r}, range={self.range!r}, obj={self.obj!r}, "
            f"offset={self.offset!r})"
        )


class UnmapOp:
    """``DRM_GPUVA_OP_UNMAP``: remove ``va``.  ``keep`` says the VA's pages inside the new
    mapping are mapped exactly as the request would map them, so their PTEs may stay."""

    __slots__ = ("keep", "va")

    va: Final[Va]
    keep: Final[bool]

    def __init__(self, va: Va, keep: bool = False) -> None:
        self.va = va
        self.keep = keep

    def __eq__(self, other: object) -> bool:
        if type(other) is not UnmapOp:
            return NotImplemented
        return self.va == other.va and self.keep == other.keep

    def __hash__(self) -> int:
        return hash(("UnmapOp", self.va, self.keep))

    def __repr__(self) -> str:
        return f"UnmapOp(va={self.va!r}, keep={self.keep!r})"


class RemapOp:
    """``DRM_GPUVA_OP_REMAP``: split ``unmap.va``, keeping ``prev`` and/or ``next``."""

    __slots__ = ("next", "prev", "unmap")

    prev: Final[Piece | None]
    next: Final[Piece | None]
    unmap: Final[UnmapOp]

    def __init__(self, prev: Piece | None, next: Piece | None, unmap: UnmapOp) -> None:
        self.prev = prev
        self.next = next
        self.unmap = unmap

    def hole(self) -> tuple[int, int]:
        """The vacated range ``[start, end)`` (``drm_gpuva_op_remap_to_unmap_range``)."""
        va = self.unmap.va
        prev = self.prev
        nxt = self.next
        start = prev.addr + prev.range if prev is not None else va.addr
        end = nxt.addr if nxt is not None else va.addr + va.range
        return start, end

    def __eq__(self, other: object) -> bool:
        if type(other) is not RemapOp:
            return NotImplemented
        return (self.prev, self.next, self.unmap) == (other.prev, other.next, other.unmap)

    def __hash__(self) -> int:
        return hash(("RemapOp", self.prev, self.next, self.unmap))

    def __repr__(self) -> str:
        return f"RemapOp(prev={self.prev!r}, next={self.next!r}, unmap={self.unmap!r})"


class PrefetchOp:
    """``DRM_GPUVA_OP_PREFETCH`` for one VA in a range."""

    __slots__ = ("va",)

    va: Final[Va]

    def __init__(self, va: Va) -> None:
        self.va = va

    def __eq__(self, other: object) -> bool:
        if type(other) is not PrefetchOp:
            return NotImplemented
        return self.va == other.va

    def __hash__(self) -> int:
        return hash(("PrefetchOp", self.va))

    def __repr__(self) -> str:
        return f"PrefetchOp(va={self.va!r})"


Op = MapOp | UnmapOp | RemapOp | PrefetchOp


class OpList(Sequence[Op]):
    """The ops of one request (``struct drm_gpuva_ops``), stamped with the VM and its
    generation: a list may only be applied to the VA space it was computed from.

    A :class:`~collections.abc.Sequence`, so mypyc builds it as a (non-native) Python class;
    compiled code reads its three fields once per list."""

    __slots__ = ("generation", "ops", "vm")

    vm: Final[GpuVm]
    generation: Final[int]
    ops: Final[tuple[Op, ...]]

    def __init__(self, vm: GpuVm, generation: int, ops: tuple[Op, ...]) -> None:
        self.vm = vm
        self.generation = generation
        self.ops = ops

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    @overload
    def __getitem__(self, i: int) -> Op: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[Op]: ...

    def __getitem__(self, i: int | slice) -> Op | Sequence[Op]:
        return self.ops[i]

    def __eq__(self, other: object) -> bool:
        if type(other) is not OpList:
            return NotImplemented
        return (self.vm, self.generation, self.ops) == (other.vm, other.generation, other.ops)

    def __hash__(self) -> int:
        return hash(("OpList", self.vm, self.generation, self.ops))

    def __repr__(self) -> str:
        return f"OpList(generation={self.generation!r}, ops={self.ops!r})"


freeze(MapRequest, UnmapRequest, Piece, MapOp, UnmapOp, RemapOp, PrefetchOp, OpList)
