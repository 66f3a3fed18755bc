"""Requests and the split/merge operations GPUVM hands to drivers (``struct drm_gpuva_op``).

All are frozen values.  An op that names an existing VA (``UnmapOp.va``, ``PrefetchOp.va``)
holds the VA entity itself, so two ops are equal only if they name the same VA.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, overload

import attrs

if TYPE_CHECKING:
    from gpuvm.core.gem import GemObject
    from gpuvm.core.va import Va
    from gpuvm.core.vm import GpuVm


@attrs.frozen(slots=True)
class MapRequest:
    """A request to map ``obj`` from ``offset`` at ``[addr, addr+range)``
    (``struct drm_gpuvm_map_req``); ``obj=None`` asks for an object-less (sparse/NULL)
    mapping."""

    addr: int
    range: int
    obj: GemObject | None = None
    offset: int = 0

    @property
    def end(self) -> int:
        return self.addr + self.range


@attrs.frozen(slots=True)
class UnmapRequest:
    """A request to unmap ``[addr, addr+range)`` (the driver's UNMAP bind op)."""

    addr: int
    range: int

    @property
    def end(self) -> int:
        return self.addr + self.range


@attrs.frozen(slots=True)
class Piece:
    """A part of a split VA that survives a REMAP (``struct drm_gpuva_op_map`` as used for
    ``remap.prev`` / ``remap.next``).  Pieces carry no flags."""

    addr: int
    range: int
    obj: GemObject | None
    offset: int

    @property
    def end(self) -> int:
        return self.addr + self.range


@attrs.frozen(slots=True)
class MapOp:
    """``DRM_GPUVA_OP_MAP``: create and map a new VA; always the last op of an sm_map."""

    addr: int
    range: int
    obj: GemObject | None
    offset: int

    @property
    def end(self) -> int:
        return self.addr + self.range


@attrs.frozen(slots=True)
class UnmapOp:
    """``DRM_GPUVA_OP_UNMAP``: remove ``va``.  ``keep`` says the VA's pages inside the new
    mapping are mapped exactly as the request would map them, so their PTEs may stay."""

    va: Va
    keep: bool = False


@attrs.frozen(slots=True)
class RemapOp:
    """``DRM_GPUVA_OP_REMAP``: split ``unmap.va``, keeping ``prev`` and/or ``next``."""

    prev: Piece | None
    next: Piece | None
    unmap: UnmapOp

    def hole(self) -> tuple[int, int]:
        """The vacated range ``[start, end)`` (``drm_gpuva_op_remap_to_unmap_range``)."""
        va = self.unmap.va
        start = self.prev.end if self.prev is not None else va.addr
        end = self.next.addr if self.next is not None else va.addr + va.range
        return start, end


@attrs.frozen(slots=True)
class PrefetchOp:
    """``DRM_GPUVA_OP_PREFETCH`` for one VA in a range."""

    va: Va


Op = MapOp | UnmapOp | RemapOp | PrefetchOp


@attrs.frozen(slots=True)
class OpList(Sequence[Op]):
    """The ops of one request (``struct drm_gpuva_ops``), stamped with the VM and its
    generation: a list may only be applied to the VA space it was computed from."""

    vm: GpuVm = attrs.field(repr=False)
    generation: int
    ops: tuple[Op, ...]

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
