"""GPUVM's split/merge op generation (``__drm_gpuvm_sm_map`` / ``__drm_gpuvm_sm_unmap``,
and the madvise flavour of the former).

These are generators over the live index, walking it the way the kernel's
``drm_gpuvm_for_each_va_range_safe`` does: the successor is fetched before the op for the
current VA is yielded, so a consumer may mutate the tree between steps (the callback form
of ``drm_gpuvm_sm_map``).  Range validation is the caller's (the VM's) job.

Offsets are u64 and wrap like the kernel's arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from gpuvm.core.ops import MapOp, MapRequest, Op, Piece, PrefetchOp, RemapOp, UnmapOp
from gpuvm.core.u64 import MASK

if TYPE_CHECKING:
    from gpuvm.core.va import Va
    from gpuvm.core.vatree import VaIndex


def _walk_safe(index: VaIndex[Va], start: int, end: int) -> Iterator[Va]:
    """``drm_gpuvm_for_each_va_range_safe``: first VA meeting ``[start, end)``, then the
    sorted successors while ``va.addr < end``, each successor fetched before its
    predecessor is handed out."""
    va = index.first_overlap(start, (end - 1) & MASK)
    while va is not None and va.addr < end:
        nxt = index.after(va)
        yield va
        va = nxt


def sm_map_steps(index: VaIndex[Va], req: MapRequest) -> Iterator[Op]:
    """The ops for mapping ``req`` over the current layout, in the kernel's order: UNMAPs and
    at most two REMAPs in ascending address order, then exactly one MAP (always emitted,
    even for an identical re-map, which yields ``UNMAP(keep=True)`` first).  The walk is
    the safe one: the tree may change between steps."""
    return _sm_map(_walk_safe(index, req.addr, req.addr + req.range), req)


def sm_map_list(index: VaIndex[Va], req: MapRequest) -> tuple[Op, ...]:
    """:func:`sm_map_steps` collected at once (``drm_gpuvm_sm_map_ops_create``): the tree
    cannot change during the walk, so the overlapping run is taken in one slice."""
    return tuple(_sm_map(index.range_walk(req.addr, req.addr + req.range), req))


def _sm_map(vas: Iterable[Va], req: MapRequest) -> Iterator[Op]:
    """The body of ``__drm_gpuvm_sm_map`` over the VAs of the range walk, ascending."""
    req_obj = req.obj
    req_addr = req.addr
    req_range = req.range
    req_off = req.offset
    req_end = req_addr + req_range
    for va in vas:
        obj = va.obj
        off = va.offset
        addr = va.addr
        end = addr + va.range
        mergeable = obj is not None and obj is req_obj
        if addr == req_addr:
            keep = mergeable and off == req_off
            if end <= req_end:
                yield UnmapOp(va, keep)
                if end == req_end:
                    break
                continue
            yield RemapOp(
                None,
                Piece(req_end, end - req_end, obj, (off + req_range) & MASK),
                UnmapOp(va, keep),
            )
            break
        if addr < req_addr:
            left = req_addr - addr
            keep = mergeable and (off + left) & MASK == req_off
            prev = Piece(addr, left, obj, off)
            if end > req_end:
                nxt = Piece(req_end, end - req_end, obj, (off + left + req_range) & MASK)
                yield RemapOp(prev, nxt, UnmapOp(va, keep))
                break
            yield RemapOp(prev, None, UnmapOp(va, keep))
            if end == req_end:
                break
            continue
        # addr > req_addr
        keep = mergeable and off == (req_off + (addr - req_addr)) & MASK
        if end <= req_end:
            yield UnmapOp(va, keep)
            if end == req_end:
                break
            continue
        yield RemapOp(
            None,
            Piece(req_end, end - req_end, obj, (off + req_end - addr) & MASK),
            UnmapOp(va, keep),
        )
        break
    yield MapOp(req_addr, req_range, req_obj, req_off)


def madvise_list(index: VaIndex[Va], req: MapRequest) -> tuple[Op, ...]:
    """``drm_gpuvm_madvise_ops_create``: the ops that split the object-less VAs at the
    edges of ``req`` (collected at once; the tree is untouched)."""
    return tuple(_madvise(index.range_walk(req.addr, req.addr + req.range), req))


def _madvise(vas: Iterable[Va], req: MapRequest) -> Iterator[Op]:
    """``__drm_gpuvm_sm_map`` with ``madvise`` set, over the VAs of the range walk.

    VAs backed by an object are skipped and no UNMAP is ever emitted, so an object-less VA
    lying inside the request stays as it is.  An object-less VA that an edge of the request
    cuts is REMAPped (``keep`` is always False: it has no object), and the part of it inside
    the request becomes a MAP without object at offset 0, except when the VA covers the
    request's start and reaches its end: then the request's own MAP ends the list.  At most
    two REMAPs and two MAPs; the list may be empty.
    """
    req_addr = req.addr
    req_range = req.range
    req_end = req_addr + req_range
    armed = False
    for va in vas:
        if va.obj is not None:
            continue
        off = va.offset
        addr = va.addr
        end = addr + va.range
        if addr == req_addr:
            if end <= req_end:
                if end == req_end:
                    break
                continue
            yield RemapOp(
                None,
                Piece(req_end, end - req_end, None, (off + req_range) & MASK),
                UnmapOp(va, False),
            )
            armed = True
            break
        if addr < req_addr:
            left = req_addr - addr
            prev = Piece(addr, left, None, off)
            if end > req_end:
                nxt = Piece(req_end, end - req_end, None, (off + left + req_range) & MASK)
                yield RemapOp(prev, nxt, UnmapOp(va, False))
                armed = True
                break
            yield RemapOp(prev, None, UnmapOp(va, False))
            if end == req_end:
                armed = True
                break
            yield MapOp(req_addr, end - req_addr, None, 0)
            continue
        # addr > req_addr
        if end <= req_end:
            if end == req_end:
                break
            continue
        yield RemapOp(
            None,
            Piece(req_end, end - req_end, None, (off + req_end - addr) & MASK),
            UnmapOp(va, False),
        )
        yield MapOp(addr, req_end - addr, None, 0)
        return
    if armed:
        yield MapOp(req_addr, req_range, req.obj, req.offset)


def sm_unmap_steps(index: VaIndex[Va], addr: int, range_: int) -> Iterator[Op]:
    """The ops for unmapping ``[addr, addr+range)``: per overlapping VA, a REMAP keeping the
    parts outside the range, or a plain UNMAP; ``keep`` is always False; no MAP.  The walk
    is the safe one: the tree may change between steps."""
    return _sm_unmap(_walk_safe(index, addr, addr + range_), addr, range_)


def sm_unmap_list(index: VaIndex[Va], addr: int, range_: int) -> tuple[Op, ...]:
    """:func:`sm_unmap_steps` collected at once (``drm_gpuvm_sm_unmap_ops_create``)."""
    return tuple(_sm_unmap(index.range_walk(addr, addr + range_), addr, range_))


def _sm_unmap(vas: Iterable[Va], addr: int, range_: int) -> Iterator[Op]:
    """The body of ``__drm_gpuvm_sm_unmap`` over the VAs of the range walk, ascending."""
    req_end = addr + range_
    for va in vas:
        obj = va.obj
        va_end = va.addr + va.range
        prev = Piece(va.addr, addr - va.addr, obj, va.offset) if va.addr < addr else None
        nxt = (
            Piece(req_end, va_end - req_end, obj, (va.offset + (req_end - va.addr)) & MASK)
            if va_end > req_end
            else None
        )
        if prev is not None or nxt is not None:
            yield RemapOp(prev, nxt, UnmapOp(va, False))
        else:
            yield UnmapOp(va, False)


def prefetch_steps(index: VaIndex[Va], addr: int, range_: int) -> Iterator[Op]:
    """``drm_gpuvm_prefetch_ops_create``: one PREFETCH per VA the range walk meets (partial
    overlaps included, no validation, the kernel node not skipped)."""
    end = (addr + range_) & MASK
    for va in index.range_walk(addr, end):
        yield PrefetchOp(va)
