"""The VA interval index shared by the GPUVM and legacy paths.

The kernel keeps VAs in an augmented interval tree plus an address-sorted list.  Entries
of one VM never overlap (insert refuses overlaps, the kernel-reserved node included), so a
sorted list of start addresses (plus a dict from start to node)
answers every interval query of the kernel's tree in O(log n + k): the nodes meeting a
closed interval are a contiguous run of the sorted order, found by one bisection over the
list's sorted sublists and walked from there (no positional index), so lookups,
inserts and removals are O(log n).  The sorted list is :class:`SortedKeys`, the layout of
``sortedcontainers.SortedList`` written here so that the compiled core compiles it.  The index
also records which way references point between mappings and buffers, so tools can ask
any VM whether its VMAs hold their buffers (GPUVM) or the reverse (legacy).
"""

from __future__ import annotations

import enum
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
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


_MASK = (1 << 64) - 1


class SortedKeys:
    """Distinct ``int`` keys in ascending order: a list of sorted sublists of at most
    ``2 * load`` keys each, plus the last key of every sublist (``_maxes``), the layout
    ``sortedcontainers.SortedList`` uses.  Written here, with only what :class:`VaIndex`
    needs, so that the compiled core compiles it (a ``SortedList`` is interpreted Python
    reached through generic calls).  An insert or removal bisects ``_maxes`` then one
    sublist; a sublist that grows past ``2 * load`` is split in two, one that shrinks
    below ``load // 2`` is merged with a neighbour."""

    __slots__ = ("_lists", "_load", "_maxes")

    def __init__(self, load: int = 1000) -> None:
        self._lists: list[list[int]] = []
        self._maxes: list[int] = []
        self._load = load

    def _reset(self, load: int) -> None:
        """Rebuild with sublists of about ``load`` keys (tests use tiny ones)."""
        keys = list(self)
        self._load = load
        self._lists = [keys[i : i + load] for i in range(0, len(keys), load)]
        self._maxes = [lst[-1] for lst in self._lists]

    def __len__(self) -> int:
        return sum(len(lst) for lst in self._lists)

    def __iter__(self) -> Iterator[int]:
        return iter([key for lst in self._lists for key in lst])

    def add(self, key: int) -> None:
        """Insert ``key``, which must not be present."""
        lists = self._lists
        maxes = self._maxes
        if not maxes:
            lists.append([key])
            maxes.append(key)
            return
        pos = bisect_left(maxes, key)
        if pos == len(maxes):  # past every key: append to the last sublist
            pos -= 1
            lst = lists[pos]
            lst.append(key)
            maxes[pos] = key
        else:
            lst = lists[pos]
            insort(lst, key)
        load = self._load
        if len(lst) > 2 * load:
            tail = lst[load:]
            del lst[load:]
            maxes[pos] = lst[-1]
            lists.insert(pos + 1, tail)
            maxes.insert(pos + 1, tail[-1])

    def remove(self, key: int) -> None:
        """Remove ``key``; ``ValueError`` if it is not present."""
        lists = self._lists
        maxes = self._maxes
        pos = bisect_left(maxes, key)
        if pos == len(maxes):
            raise ValueError(f"{key!r} not in keys")
        lst = lists[pos]
        idx = bisect_left(lst, key)
        if lst[idx] != key:
            raise ValueError(f"{key!r} not in keys")
        del lst[idx]
        if lst and len(lst) >= self._load // 2:
            if idx == len(lst):
                maxes[pos] = lst[-1]
            return
        if len(lists) == 1:  # the only sublist: keep it, drop it when empty
            if lst:
                maxes[0] = lst[-1]
            else:
                del lists[0]
                del maxes[0]
            return
        # merge the short sublist into a neighbour, then split again if that is too long
        if pos:
            pos -= 1
        merged = lists[pos] + lists[pos + 1]
        del lists[pos + 1]
        del maxes[pos + 1]
        lists[pos] = merged
        maxes[pos] = merged[-1]
        load = self._load
        if len(merged) > 2 * load:
            tail = merged[load:]
            del merged[load:]
            maxes[pos] = merged[-1]
            lists.insert(pos + 1, tail)
            maxes.insert(pos + 1, tail[-1])

    def irange(
        self,
        lo: int | None = None,
        hi: int | None = None,
        inclusive: tuple[bool, bool] = (True, True),
        reverse: bool = False,
    ) -> Iterator[int]:
        """The keys between ``lo`` and ``hi`` (``None``: unbounded), ascending or, with
        ``reverse``, descending; ``inclusive`` says whether each bound is included (the
        ``SortedList.irange`` interface the portable path of :class:`VaIndex` uses)."""
        lists = self._lists
        out: list[int] = []
        if reverse:
            pos = len(lists) - 1
            idx = len(lists[pos]) - 1 if lists else -1
            if hi is not None:
                at = bisect_left(self._maxes, hi)  # the first sublist reaching hi
                if at < len(lists):
                    pos = at
                    idx = (bisect_right if inclusive[1] else bisect_left)(lists[pos], hi) - 1
            while pos >= 0:
                lst = lists[pos]
                while idx >= 0:
                    key = lst[idx]
                    if lo is not None and (key < lo or (key == lo and not inclusive[0])):
                        return iter(out)
                    out.append(key)
                    idx -= 1
                pos -= 1
                idx = len(lists[pos]) - 1 if pos >= 0 else -1
            return iter(out)
        pos = idx = 0
        if lo is not None:
            find = bisect_left if inclusive[0] else bisect_right
            pos = find(self._maxes, lo)
            idx = find(lists[pos], lo) if pos < len(lists) else 0
        while pos < len(lists):
            lst = lists[pos]
            while idx < len(lst):
                key = lst[idx]
                if hi is not None and (key > hi or (key == hi and not inclusive[1])):
                    return iter(out)
                out.append(key)
                idx += 1
            pos += 1
            idx = 0
        return iter(out)


class VaIndex(Generic[N]):
    """Disjoint intervals ``[addr, addr+range)`` keyed by start, with the kernel tree's
    lookups.  Callers check overlap before :meth:`add`; the index itself only asserts it in
    :meth:`check`.

    Storage is a :class:`SortedKeys` of start addresses plus a dict from start to node.
    Lookups bisect its sorted sublists directly (``_maxes`` and ``_lists``): one bisection
    finds the first key at or after an address, its predecessor is the entry before it,
    and a walk continues along the sublists, so a lookup meeting ``k`` nodes costs
    O(log n + k) with no iterator machinery.  ``portable=True`` answers the same queries
    through ``irange`` instead (the interface of ``SortedList``), a second path the tests
    check against the first."""

    __slots__ = ("_keys", "_map", "direction", "portable")

    def __init__(self, direction: RefDirection, *, portable: bool = False) -> None:
        self.direction = direction
        self._keys = SortedKeys()
        self._map: dict[int, N] = {}
        self.portable = portable

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
            return self._keys._lists[pos][idx - 1]
        if pos:
            return self._keys._maxes[pos - 1]
        return None

    def _at(self, pos: int, idx: int) -> int | None:
        """The key at position ``(pos, idx)``, or None past the end."""
        lists = self._keys._lists
        if pos < len(lists):
            return lists[pos][idx]
        return None

    def _pred(self, addr: int) -> int | None:
        """The greatest key ``<= addr``, or None."""
        if self.portable:
            for key in self._keys.irange(None, addr, reverse=True):
                return key
            return None
        pos, idx = self._ge(addr)
        at = self._at(pos, idx)
        if at == addr:
            return at
        return self._before(pos, idx)

    def _succ(self, addr: int) -> int | None:
        """The least key ``> addr``, or None."""
        if self.portable:
            for key in self._keys.irange(addr, None, (False, True)):
                return key
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
