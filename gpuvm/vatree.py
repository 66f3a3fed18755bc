"""The VA interval index shared by the GPUVM and legacy paths.

The kernel keeps VAs in an augmented interval tree plus an address-sorted list.  Entries
of one VM never overlap (insert refuses overlaps, the kernel-reserved node included), so a
``sortedcontainers.SortedDict`` from start address to node answers every interval query
of the kernel's tree in O(log n + k): the nodes meeting a closed interval are a contiguous
run of the sorted order.  Queries use only ``irange`` (bisections over the sorted
sublists, no positional index), so lookups, inserts and removals are O(log n).  The index
also records which way references point between mappings and buffers, so tools can ask
any VM whether its VMAs hold their buffers (GPUVM) or the reverse (legacy).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from sortedcontainers import SortedDict


class RefDirection(enum.Enum):
    """Which way the reference between a mapping and its buffer points."""

    VM_BO_HOLDS_GEM = "vm_bo holds gem"
    """GPUVM: VA -> VmBo -> GEM, a mapping keeps its buffer alive."""

    BO_HOLDS_VMA = "bo holds vma"
    """Legacy: the buffer owns its VMAs, a VMA holds no buffer reference."""


class Interval(Protocol):
    @property
    def addr(self) -> int: ...

    @property
    def range(self) -> int: ...


N = TypeVar("N", bound=Interval)


_MASK = (1 << 64) - 1


class VaIndex(Generic[N]):
    """Disjoint intervals ``[addr, addr+range)`` keyed by start, with the kernel tree's
    lookups.  Callers check overlap before :meth:`add`; the index itself only asserts it in
    :meth:`check`."""

    __slots__ = ("_irange", "_nodes", "direction")

    def __init__(self, direction: RefDirection) -> None:
        self.direction = direction
        self._nodes: SortedDict = SortedDict()
        self._irange = self._nodes.irange

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[N]:
        return iter(list(self._nodes.values()))

    def __contains__(self, node: object) -> bool:
        addr = getattr(node, "addr", None)
        return type(addr) is int and self._nodes.get(addr) is node

    def add(self, node: N) -> None:
        """Insert ``node`` in address order (a node already at that address is replaced)."""
        self._nodes[node.addr] = node

    def discard(self, node: N) -> None:
        """Remove ``node`` if it is the node at its address."""
        nodes = self._nodes
        if nodes.get(node.addr) is node:
            del nodes[node.addr]

    def first_overlap(self, start: int, last: int) -> N | None:
        """The lowest-addressed node meeting the closed interval ``[start, last]``, as the
        kernel's ``interval_tree_iter_first``.  An inverted interval (``last < start``, what
        a zero range produces) is answered as the kernel answers it: nodes with
        ``node.start <= last`` and ``node.last >= start``."""
        nodes = self._nodes
        for key in self._irange(None, start, reverse=True):
            node: N = nodes[key]
            if key + node.range > start:  # covers start
                return node if key <= last else None
            break
        for key in self._irange(start, None, (False, True)):
            return nodes[key] if key <= last else None
        return None

    def starting_in(self, lo: int, hi: int) -> Iterator[N]:
        """Nodes whose start lies in ``[lo, hi]``, ascending."""
        nodes = self._nodes
        return iter([nodes[key] for key in self._irange(lo, hi)])

    def after(self, node: N) -> N | None:
        """The next node in address order (the kernel's sorted list), or None."""
        for key in self._irange(node.addr, None, (False, True)):
            return self._nodes[key]  # type: ignore[no-any-return]
        return None

    def range_walk(self, start: int, end: int) -> list[N]:
        """``drm_gpuvm_for_each_va_range``: from ``find_first(start, end - start)``, follow
        the sorted order while ``node.addr < end``.  ``end`` is a u64 (may have wrapped).

        For the usual ``start < end`` this is one predecessor probe plus one forward
        ``irange``; a wrapped or empty range falls back to the kernel's literal walk."""
        nodes = self._nodes
        if start < end:
            lo = start
            for key in self._irange(None, start, reverse=True):
                if key + nodes[key].range > start:  # the predecessor covers start
                    lo = key
                break
            return [nodes[key] for key in self._irange(lo, end - 1)]
        first = self.first_overlap(start, (end - 1) & _MASK)
        if first is None or first.addr >= end:
            return []
        return [nodes[key] for key in self._irange(first.addr, end - 1)]

    def check(self) -> None:
        """Entries are pairwise disjoint and keyed by their own start."""
        prev_end = None
        for key, node in self._nodes.items():
            if key != node.addr:
                raise AssertionError(f"index key {key:#x} != {node!r}.addr")
            if node.range <= 0:
                raise AssertionError(f"{node!r} has range {node.range}")
            if prev_end is not None and node.addr < prev_end:
                raise AssertionError(f"{node!r} overlaps its predecessor (ends {prev_end:#x})")
            prev_end = node.addr + node.range
