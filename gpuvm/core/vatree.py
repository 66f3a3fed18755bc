"""The VA interval index shared by the GPUVM and legacy paths.

The kernel keeps VAs in an augmented interval tree plus an address-sorted list.  Entries
of one VM never overlap (insert refuses overlaps, the kernel-reserved node included), so a
``sortedcontainers.SortedList`` of start addresses (plus a dict from start to node)
answers every interval query of the kernel's tree in O(log n + k): the nodes meeting a
closed interval are a contiguous run of the sorted order, found by one bisection over the
SortedList's sorted sublists and walked from there (no positional index), so lookups,
inserts and removals are O(log n).  The index
also records which way references point between mappings and buffers, so tools can ask
any VM whether its VMAs hold their buffers (GPUVM) or the reverse (legacy).
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from sortedcontainers import SortedList


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


def _has_sublists() -> bool:
    """Whether this sortedcontainers keeps the documented sublist layout (``_lists`` of
    sorted sublists and ``_maxes`` of their last keys, as in every 2.x release)."""
    probe = SortedList([1, 2, 3])
    lists = getattr(probe, "_lists", None)
    maxes = getattr(probe, "_maxes", None)
    return lists == [[1, 2, 3]] and maxes == [3]


_SUBLISTS = _has_sublists()


class VaIndex(Generic[N]):
    """Disjoint intervals ``[addr, addr+range)`` keyed by start, with the kernel tree's
    lookups.  Callers check overlap before :meth:`add`; the index itself only asserts it in
    :meth:`check`.

    Storage is a ``sortedcontainers.SortedList`` of start addresses plus a dict from start
    to node.  Lookups bisect the SortedList's sorted sublists directly (its ``_maxes`` and
    ``_lists``): one bisection finds the first key at or after an address, its predecessor
    is the entry before it, and a walk continues along the sublists, so a lookup meeting
    ``k`` nodes costs O(log n + k) with no iterator machinery.  ``portable=True`` (and any
    sortedcontainers without that layout) answers the same queries through the public
    ``irange`` instead."""

    __slots__ = ("_keys", "_map", "direction", "portable")

    def __init__(self, direction: RefDirection, *, portable: bool = False) -> None:
        self.direction = direction
        self._keys: SortedList = SortedList()
        self._map: dict[int, N] = {}
        self.portable = portable or not _SUBLISTS

    def __len__(self) -> int:
        return len(self._map)

    def __iter__(self) -> Iterator[N]:
        m = self._map
        return iter([m[key] for key in self._keys])

    def __contains__(self, node: object) -> bool:
        addr = getattr(node, "addr", None)
        return type(addr) is int and self._map.get(addr) is node

    def add(self, node: N) -> None:
        """Insert ``node`` in address order (a node already at that address is replaced)."""
        addr = node.addr
        m = self._map
        if addr not in m:
            self._keys.add(addr)
        m[addr] = node

    def discard(self, node: N) -> None:
        """Remove ``node`` if it is the node at its address."""
        m = self._map
        addr = node.addr
        if m.get(addr) is node:
            del m[addr]
            self._keys.remove(addr)

    # --- positions in the sorted sublists ------------------------------------------------

    def _ge(self, addr: int) -> tuple[int, int]:
        """``(sublist, position)`` of the first key ``>= addr``; ``(len(_lists), 0)`` if
        every key is below ``addr``."""
        keys = self._keys
        maxes = keys._maxes
        pos = bisect_left(maxes, addr)
        if pos == len(maxes):
            return pos, 0
        return pos, bisect_left(keys._lists[pos], addr)

    def _before(self, pos: int, idx: int) -> int | None:
        """The key just before position ``(pos, idx)``, or None."""
        if idx:
            return self._keys._lists[pos][idx - 1]  # type: ignore[no-any-return]
        if pos:
            return self._keys._maxes[pos - 1]  # type: ignore[no-any-return]
        return None

    def _at(self, pos: int, idx: int) -> int | None:
        """The key at position ``(pos, idx)``, or None past the end."""
        lists = self._keys._lists
        if pos < len(lists):
            return lists[pos][idx]  # type: ignore[no-any-return]
        return None

    def _pred(self, addr: int) -> int | None:
        """The greatest key ``<= addr``, or None."""
        if self.portable:
            for key in self._keys.irange(None, addr, reverse=True):
                return key  # type: ignore[no-any-return]
            return None
        pos, idx = self._ge(addr)
        key = self._at(pos, idx)
        if key == addr:
            return key
        return self._before(pos, idx)

    def _succ(self, addr: int) -> int | None:
        """The least key ``> addr``, or None."""
        if self.portable:
            for key in self._keys.irange(addr, None, (False, True)):
                return key  # type: ignore[no-any-return]
            return None
        pos, idx = self._ge(addr + 1)
        return self._at(pos, idx)

    def _keys_in(self, lo: int, hi: int) -> list[int]:
        """Every key in ``[lo, hi]``, ascending: one bisection, then a walk along the
        sublists."""
        if self.portable:
            return list(self._keys.irange(lo, hi))
        if hi < lo:
            return []
        pos, idx = self._ge(lo)
        lists = self._keys._lists
        out: list[int] = []
        n = len(lists)
        while pos < n:
            lst = lists[pos]
            stop = len(lst)
            while idx < stop:
                key = lst[idx]
                if key > hi:
                    return out
                out.append(key)
                idx += 1
            pos += 1
            idx = 0
        return out

    # --- the kernel tree's queries -------------------------------------------------------

    def first_overlap(self, start: int, last: int) -> N | None:
        """The lowest-addressed node meeting the closed interval ``[start, last]``, as the
        kernel's ``interval_tree_iter_first``.  An inverted interval (``last < start``, what
        a zero range produces) is answered as the kernel answers it: nodes with
        ``node.start <= last`` and ``node.last >= start``."""
        m = self._map
        if self.portable:
            key = self._pred(start)
            if key is not None and key + m[key].range > start:
                return m[key] if key <= last else None
            key = self._succ(start)
            return m[key] if key is not None and key <= last else None
        keys = self._keys
        maxes = keys._maxes
        pos = bisect_left(maxes, start)
        if pos < len(maxes):
            lst = keys._lists[pos]
            idx = bisect_left(lst, start)
            key = lst[idx]
            if key == start:  # a node starts at start: it covers start
                return m[key] if key <= last else None
            before = lst[idx - 1] if idx else (maxes[pos - 1] if pos else None)
        else:
            key = None
            before = maxes[-1] if maxes else None
        if before is not None and before + m[before].range > start:  # covers start
            return m[before] if before <= last else None
        return m[key] if key is not None and key <= last else None

    def starting_in(self, lo: int, hi: int) -> Iterator[N]:
        """Nodes whose start lies in ``[lo, hi]``, ascending."""
        m = self._map
        return iter([m[key] for key in self._keys_in(lo, hi)])

    def after(self, node: N) -> N | None:
        """The next node in address order (the kernel's sorted list), or None."""
        key = self._succ(node.addr)
        return None if key is None else self._map[key]

    def range_walk(self, start: int, end: int) -> list[N]:
        """``drm_gpuvm_for_each_va_range``: from ``find_first(start, end - start)``, follow
        the sorted order while ``node.addr < end``.  ``end`` is a u64 (may have wrapped).

        For the usual ``start < end`` this is one bisection, a look at the predecessor and
        a forward walk; a wrapped or empty range follows the kernel's literal walk."""
        m = self._map
        if start < end:
            if self.portable:
                lo = start
                key = self._pred(start)
                if key is not None and key + m[key].range > start:
                    lo = key
                return [m[k] for k in self._keys_in(lo, end - 1)]
            keys = self._keys
            maxes = keys._maxes
            lists = keys._lists
            pos = bisect_left(maxes, start)
            n = len(maxes)
            out: list[N] = []
            if pos < n:
                lst = lists[pos]
                idx = bisect_left(lst, start)
                before = lst[idx - 1] if idx else (maxes[pos - 1] if pos else None)
            else:
                idx = 0
                before = maxes[-1] if maxes else None
            if before is not None:
                node = m[before]
                if before + node.range > start:  # the predecessor covers start
                    out.append(node)
            while pos < n:
                lst = lists[pos]
                stop = len(lst)
                while idx < stop:  # by position: a slice would copy the whole sublist
                    key = lst[idx]
                    if key >= end:
                        return out
                    out.append(m[key])
                    idx += 1
                pos += 1
                idx = 0
            return out
        first = self.first_overlap(start, (end - 1) & _MASK)
        if first is None or first.addr >= end:
            return []
        return [m[key] for key in self._keys_in(first.addr, end - 1)]

    def check(self) -> None:
        """Entries are pairwise disjoint and keyed by their own start."""
        prev_end = None
        if list(self._keys) != sorted(self._map) or len(self._keys) != len(self._map):
            raise AssertionError("index keys and nodes disagree")
        for key in self._keys:
            node = self._map[key]
            if key != node.addr:
                raise AssertionError(f"index key {key:#x} != {node!r}.addr")
            if node.range <= 0:
                raise AssertionError(f"{node!r} has range {node.range}")
            if prev_end is not None and node.addr < prev_end:
                raise AssertionError(f"{node!r} overlaps its predecessor (ends {prev_end:#x})")
            prev_end = node.addr + node.range
