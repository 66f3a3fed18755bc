"""The VA interval index shared by the GPUVM and legacy paths.

The kernel keeps VAs in an augmented interval tree plus an address-sorted list.  Entries
of one VM never overlap (insert refuses overlaps, the kernel-reserved node included), so a
sorted sequence of nodes by start address answers every interval query of the kernel's
tree in O(log n + k): the nodes meeting a closed interval are a contiguous run of the
sorted order.  The sequence is a list of sorted blocks of at most ``2 * _LOAD`` nodes
(the layout ``sortedcontainers`` uses), searched with two bisections, so lookups, inserts
and removals cost O(log n) plus a short list shift.  The index also records which way
references point between mappings and buffers, so tools can ask any VM whether its VMAs
hold their buffers (GPUVM) or the reverse (legacy).
"""

from __future__ import annotations

import enum
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from itertools import chain
from typing import Generic, Protocol, TypeVar


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


_LOAD = 256
"""Blocks are split when they exceed ``2 * _LOAD`` nodes."""

_MASK = (1 << 64) - 1


class VaIndex(Generic[N]):
    """Disjoint intervals ``[addr, addr+range)`` keyed by start, with the kernel tree's
    lookups.  Callers check overlap before :meth:`add`; the index itself only asserts it in
    :meth:`check`.

    Storage: ``_addrs[b]`` is a sorted block of start addresses, ``_ends[b]`` their end
    addresses and ``_nodes[b]`` the nodes, in the same order; ``_maxes[b]`` is the block's
    last start address.  A position is a ``(block, index)`` pair.  Lookups compare only
    the address lists, so they touch no node but the one they return."""

    __slots__ = ("_addrs", "_ends", "_len", "_maxes", "_nodes", "direction")

    def __init__(self, direction: RefDirection) -> None:
        self.direction = direction
        self._addrs: list[list[int]] = []
        self._ends: list[list[int]] = []
        self._nodes: list[list[N]] = []
        self._maxes: list[int] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[N]:
        return chain.from_iterable(list(block) for block in self._nodes)

    def _find(self, addr: int) -> tuple[int, int] | None:
        """Position of the node starting at ``addr``, or None."""
        maxes = self._maxes
        b = bisect_left(maxes, addr)
        if b == len(maxes):
            return None
        block = self._addrs[b]
        i = bisect_left(block, addr)
        if block[i] != addr:
            return None
        return b, i

    def __contains__(self, node: object) -> bool:
        addr = getattr(node, "addr", None)
        if type(addr) is not int:
            return False
        pos = self._find(addr)
        return pos is not None and self._nodes[pos[0]][pos[1]] is node

    def add(self, node: N) -> None:
        """Insert ``node`` in address order (a node already at that address is replaced)."""
        addr = node.addr
        maxes = self._maxes
        if not maxes:
            self._addrs.append([addr])
            self._ends.append([addr + node.range])
            self._nodes.append([node])
            maxes.append(addr)
            self._len = 1
            return
        b = bisect_left(maxes, addr)
        if b == len(maxes):
            b -= 1
        block = self._addrs[b]
        i = bisect_left(block, addr)
        if i < len(block) and block[i] == addr:
            self._nodes[b][i] = node
            self._ends[b][i] = addr + node.range
            return
        block.insert(i, addr)
        ends = self._ends[b]
        ends.insert(i, addr + node.range)
        nodes = self._nodes[b]
        nodes.insert(i, node)
        maxes[b] = block[-1]
        self._len += 1
        if len(block) > 2 * _LOAD:
            self._addrs[b : b + 1] = [block[:_LOAD], block[_LOAD:]]
            self._ends[b : b + 1] = [ends[:_LOAD], ends[_LOAD:]]
            self._nodes[b : b + 1] = [nodes[:_LOAD], nodes[_LOAD:]]
            maxes[b : b + 1] = [block[_LOAD - 1], block[-1]]

    def discard(self, node: N) -> None:
        """Remove ``node`` if it is the node at its address."""
        addr = node.addr
        maxes = self._maxes
        b = bisect_left(maxes, addr)
        if b == len(maxes):
            return
        block = self._addrs[b]
        i = bisect_left(block, addr)
        nodes = self._nodes[b]
        if block[i] != addr or nodes[i] is not node:
            return
        del block[i]
        del self._ends[b][i]
        del nodes[i]
        self._len -= 1
        if block:
            self._maxes[b] = block[-1]
        else:
            del self._addrs[b]
            del self._ends[b]
            del self._nodes[b]
            del self._maxes[b]

    def _first_overlap_pos(self, start: int, last: int) -> tuple[int, int] | None:
        """Position of the lowest node meeting the closed interval ``[start, last]``."""
        maxes = self._maxes
        if not maxes:
            return None
        addrs = self._addrs
        b = bisect_left(maxes, start)
        if b == len(maxes):
            b -= 1
            i = len(addrs[b]) - 1
        else:
            i = bisect_right(addrs[b], start) - 1
            if i < 0 and b > 0:
                b -= 1
                i = len(addrs[b]) - 1
        if i >= 0:
            if self._ends[b][i] > start:  # covers start: end - 1 >= start
                return (b, i) if addrs[b][i] <= last else None
            i += 1
            if i == len(addrs[b]):
                b += 1
                i = 0
                if b == len(addrs):
                    return None
        else:
            i = 0
        return (b, i) if addrs[b][i] <= last else None

    def first_overlap(self, start: int, last: int) -> N | None:
        """The lowest-addressed node meeting the closed interval ``[start, last]``, as the
        kernel's ``interval_tree_iter_first``.  An inverted interval (``last < start``, what
        a zero range produces) is answered as the kernel answers it: nodes with
        ``node.start <= last`` and ``node.last >= start``."""
        pos = self._first_overlap_pos(start, last)
        return None if pos is None else self._nodes[pos[0]][pos[1]]

    def _run(self, b: int, i: int, end: int) -> list[N]:
        """Nodes from position ``(b, i)`` on, while they start below ``end``."""
        out: list[N] = []
        nodes = self._nodes
        maxes = self._maxes
        while b < len(nodes):
            block = nodes[b]
            if maxes[b] < end:
                out += block[i:] if i else block
            else:
                for node in block[i:] if i else block:
                    if node.addr >= end:
                        return out
                    out.append(node)
                return out
            b += 1
            i = 0
        return out

    def starting_in(self, lo: int, hi: int) -> Iterator[N]:
        """Nodes whose start lies in ``[lo, hi]``, ascending."""
        maxes = self._maxes
        b = bisect_left(maxes, lo)
        if b == len(maxes):
            return iter(())
        i = bisect_left(self._addrs[b], lo)
        return iter(self._run(b, i, hi + 1))

    def after(self, node: N) -> N | None:
        """The next node in address order (the kernel's sorted list), or None."""
        maxes = self._maxes
        b = bisect_right(maxes, node.addr)
        if b == len(maxes):
            return None
        return self._nodes[b][bisect_right(self._addrs[b], node.addr)]

    def range_walk(self, start: int, end: int) -> list[N]:
        """``drm_gpuvm_for_each_va_range``: from ``find_first(start, end - start)``, follow
        the sorted order while ``node.addr < end``.  ``end`` is a u64 (may have wrapped)."""
        pos = self._first_overlap_pos(start, (end - 1) & _MASK)
        if pos is None:
            return []
        return self._run(pos[0], pos[1], end)

    def check(self) -> None:
        """Entries are pairwise disjoint and keyed by their own start; blocks are
        non-empty, sorted, consistent with their maxima and the count."""
        if not (len(self._addrs) == len(self._ends) == len(self._nodes) == len(self._maxes)):
            raise AssertionError("index block lists out of step")
        prev_end = None
        count = 0
        for block, ends, nodes, mx in zip(
            self._addrs, self._ends, self._nodes, self._maxes, strict=True
        ):
            if not block or not (len(block) == len(ends) == len(nodes)) or block[-1] != mx:
                raise AssertionError("index block empty, ragged or with a stale maximum")
            for key, end, node in zip(block, ends, nodes, strict=True):
                count += 1
                if key != node.addr or end != node.addr + node.range:
                    raise AssertionError(f"index key [{key:#x}, {end:#x}) != {node!r}")
                if node.range <= 0:
                    raise AssertionError(f"{node!r} has range {node.range}")
                if prev_end is not None and node.addr < prev_end:
                    raise AssertionError(f"{node!r} overlaps its predecessor (ends {prev_end:#x})")
                prev_end = node.addr + node.range
        if count != self._len:
            raise AssertionError(f"index holds {count} nodes but counts {self._len}")
