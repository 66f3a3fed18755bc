"""The VA interval index shared by the GPUVM and legacy paths.

The kernel keeps VAs in an augmented interval tree plus an address-sorted list.  Entries
of one VM never overlap (insert refuses overlaps, the kernel-reserved node included), so a
sorted map from start address to node answers every interval query of the kernel's tree
in O(log n + k): the nodes meeting a closed interval are a contiguous run of the sorted
order.  The index also records which way references point between mappings and buffers,
so tools can ask any VM whether its VMAs hold their buffers (GPUVM) or the reverse
(legacy).
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


class VaIndex(Generic[N]):
    """Disjoint intervals ``[addr, addr+range)`` keyed by start, with the kernel tree's
    lookups.  Callers check overlap before :meth:`add`; the index itself only asserts it in
    :meth:`check`."""

    __slots__ = ("_nodes", "direction")

    def __init__(self, direction: RefDirection) -> None:
        self.direction = direction
        self._nodes: SortedDict = SortedDict()

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[N]:
        return iter(self._nodes.values())

    def __contains__(self, node: object) -> bool:
        addr = getattr(node, "addr", None)
        return addr is not None and self._nodes.get(addr) is node

    def add(self, node: N) -> None:
        self._nodes[node.addr] = node

    def discard(self, node: N) -> None:
        if self._nodes.get(node.addr) is node:
            del self._nodes[node.addr]

    def first_overlap(self, start: int, last: int) -> N | None:
        """The lowest-addressed node meeting the closed interval ``[start, last]``, as the
        kernel's ``interval_tree_iter_first``.  An inverted interval (``last < start``, what
        a zero range produces) is answered as the kernel answers it: nodes with
        ``node.start <= last`` and ``node.last >= start``."""
        nodes = self._nodes
        if not nodes:
            return None
        idx = nodes.bisect_right(start) - 1
        if idx >= 0:
            node: N = nodes.peekitem(idx)[1]
            if node.addr + node.range - 1 >= start:
                return node if node.addr <= last else None
        idx += 1
        if idx >= len(nodes):
            return None
        node = nodes.peekitem(idx)[1]
        return node if node.addr <= last else None

    def starting_in(self, lo: int, hi: int) -> Iterator[N]:
        """Nodes whose start lies in ``[lo, hi]``, ascending."""
        nodes = self._nodes
        for key in nodes.irange(lo, hi):
            yield nodes[key]

    def after(self, node: N) -> N | None:
        """The next node in address order (the kernel's sorted list), or None."""
        nodes = self._nodes
        idx = nodes.bisect_right(node.addr)
        return nodes.peekitem(idx)[1] if idx < len(nodes) else None

    def range_walk(self, start: int, end: int) -> list[N]:
        """``drm_gpuvm_for_each_va_range``: from ``find_first(start, end - start)``, follow
        the sorted order while ``node.addr < end``.  ``end`` is a u64 (may have wrapped)."""
        first = self.first_overlap(start, (end - 1) & ((1 << 64) - 1))
        if first is None or first.addr >= end:
            return []
        return list(self.starting_in(first.addr, end - 1))

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
