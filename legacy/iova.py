"""The legacy path's iova allocator, in the spirit of ``drm_mm_insert_node_in_range``.

:func:`first_fit` walks the occupied intervals of a :class:`~gpuvm.core.vatree.VaIndex` in
address order and returns the lowest aligned start whose ``[addr, addr+size)`` meets none of
them; no hole means ``-ENOSPC``.  (msm asks drm_mm for the best-fitting hole; the choice of
hole changes addresses, not the counts of maps, unmaps and ``-ENOSPC`` the model is for.)
It works on any index: :mod:`legacy.aspace` and the driver layer's GPUVM-backed
kernel-managed VMs use it.  Re-exported by :mod:`legacy.aspace`.  A module of its own (no
attrs class) so that the compiled build (``docs/compiled.md``) compiles it: every pin of a
kernel-managed VM allocates through it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Any

from gpuvm.core.vatree import VaIndex

__all__ = ["PAGE_SIZE", "align_up", "first_fit"]

PAGE_SIZE = 4096
"""The page size of the modelled IOMMU page tables."""


def align_up(value: int, align: int) -> int:
    """The smallest multiple of ``align`` that is ``>= value``."""
    return -(-value // align) * align


def first_fit(
    index: VaIndex[Any],
    lo: int,
    hi: int,
    size: int,
    align: int = PAGE_SIZE,
    taken: Iterable[tuple[int, int]] = (),
) -> int | None:
    """The lowest ``align``-aligned ``addr`` in ``[lo, hi)`` such that ``[addr, addr+size)``
    fits below ``hi`` and meets no node of ``index`` and no ``(start, end)`` range of
    ``taken`` (addresses another allocation of the same call has already claimed); None if
    no hole fits (``drm_mm``'s ``-ENOSPC``).  O(n) in the nodes of the window."""
    if size <= 0 or hi <= lo:
        return None
    cand = align_up(lo, align)
    claimed = sorted(taken)
    if not claimed:
        # The common case (one buffer per call): walk the index alone, no merge.
        for n in index.range_walk(lo, hi):
            if cand + size > hi:
                return None
            start = n.addr
            end = start + n.range
            if end <= cand:
                continue
            if cand + size <= start:
                return cand
            cand = -(-end // align) * align
        return cand if cand + size <= hi else None
    nodes: Iterator[tuple[int, int]] = (
        (n.addr, n.addr + n.range) for n in index.range_walk(lo, hi)
    )
    for start, end in heapq.merge(nodes, claimed):
        if cand + size > hi:
            return None
        if end <= cand:
            continue
        if cand + size <= start:
            return cand
        cand = align_up(end, align)
    return cand if cand + size <= hi else None
