"""An independent reference for GPUVM's split/merge, used only by the tests.

It re-derives what ``__drm_gpuvm_sm_map`` / ``__drm_gpuvm_sm_unmap`` (drm_gpuvm.c) compute,
from the kernel's semantics (``drm_gpuvm_range_valid``, the split/merge walk), but on the simplest
possible data: a Python list of ``(addr, range, obj, offset)`` tuples sorted by address,
searched by linear scans.  Nothing here imports the model's index or op generator, so the
model is checked against a second, separately written implementation.

Two formulations of sm_map are given:

* :meth:`RefVm.sm_map` walks the overlapping entries the way the kernel loop does (first
  entry meeting the closed request interval, then list successors while they start before
  the request end), with the kernel's three-way case split on the entry's start and end
  against the request's, its early exits, and every address and offset expression
  evaluated as u64 arithmetic in the order the C code writes it;
* :func:`sm_map_by_cuts` states the result in closed form: every overlapping entry is cut
  at the request's edges, and it may be kept when it maps the same object with the same
  ``offset - addr`` (mod 2**64).

Ops are plain tuples so they can be compared with ``==`` and printed readably:
``("UNMAP", entry, keep)``, ``("REMAP", prev, next, entry, keep)`` and
``("MAP", addr, range, obj, offset)``, where ``entry``/``prev``/``next`` are
``(addr, range, obj, offset)`` tuples (``None`` for an absent piece).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

U64 = 1 << 64
U64_MAX = U64 - 1

Entry = tuple[int, int, Any, int]
"""``(addr, range, obj, offset)``; ``obj`` is any object compared by identity, or None."""

RefOp = tuple[Any, ...]


class _KernelNode:
    """Sentinel object standing for the kernel-reserved node's (absent) GEM."""

    def __repr__(self) -> str:
        return "KERNEL"


KERNEL = _KernelNode()


def u64(value: int) -> int:
    """C unsigned 64-bit arithmetic: reduce modulo 2**64."""
    return value % U64


def same_obj(a: Any, b: Any) -> bool:
    """Pointer comparison (``obj == req_obj`` in C)."""
    return a is b


class RefVm:
    """A VA space as a sorted list of entries, with the kernel's range check, lookups and
    split/merge walks.  The kernel-reserved node, when present, is an entry whose object is
    :data:`KERNEL`; :meth:`layout` leaves it out."""

    def __init__(
        self, start: int, range_: int, reserve_start: int = 0, reserve_range: int = 0
    ) -> None:
        self.start = start
        self.range = range_
        self.kstart = reserve_start
        self.krange = reserve_range
        self.entries: list[Entry] = []
        if reserve_range:
            self.entries.append((reserve_start, reserve_range, KERNEL, 0))

    # --- the VA space -----------------------------------------------------------------

    def layout(self) -> list[Entry]:
        return [e for e in self.entries if e[2] is not KERNEL]

    def range_valid(self, addr: int, range_: int) -> bool:
        """``drm_gpuvm_range_valid``: no overflow, inside the window, clear of the kernel
        node.  A zero range is valid, as in the kernel."""
        if addr + range_ > U64_MAX:
            return False
        end = addr + range_
        if not (addr >= self.start and end <= self.start + self.range):
            return False
        kend = self.kstart + self.krange
        return not (self.krange != 0 and addr < kend and self.kstart < end)

    def find_first_index(self, addr: int, range_: int) -> int | None:
        """Index of the lowest entry meeting the closed interval
        ``[addr, u64(addr + range - 1)]`` under the interval tree's test
        (``entry.start <= last`` and ``entry.last >= first``)."""
        first = addr
        last = u64(addr + range_ - 1)
        for i, (a, r, _o, _f) in enumerate(self.entries):
            if a <= last and a + r - 1 >= first:
                return i
        return None

    def find_first(self, addr: int, range_: int) -> Entry | None:
        i = self.find_first_index(addr, range_)
        return None if i is None else self.entries[i]

    def walk(self, start: int, end: int) -> Iterator[Entry]:
        """``drm_gpuvm_for_each_va_range``: the first entry meeting ``[start, end)``, then
        its list successors while they start below ``end`` (``end`` a u64)."""
        i = self.find_first_index(start, u64(end - start))
        if i is None:
            return
        entries = list(self.entries)
        while i < len(entries) and entries[i][0] < end:
            yield entries[i]
            i += 1

    def find_prev(self, start: int) -> Entry | None:
        if not self.range_valid(u64(start - 1), 1):
            return None
        return self.find_first(u64(start - 1), 2)

    def find_next(self, end: int) -> Entry | None:
        if not self.range_valid(end, 1):
            return None
        return self.find_first(end, 2)

    def prefetch(self, addr: int, range_: int) -> list[Entry]:
        return list(self.walk(addr, u64(addr + range_)))

    # --- split / merge ----------------------------------------------------------------

    def sm_map(self, addr: int, range_: int, obj: Any, offset: int) -> list[RefOp] | None:
        """The kernel's sm_map loop; None where it returns -EINVAL."""
        if not self.range_valid(addr, range_):
            return None
        req_addr, req_range, req_obj, req_off = addr, range_, obj, offset
        req_end = u64(req_addr + req_range)
        out: list[RefOp] = []
        for entry in self.walk(req_addr, req_end):
            e_addr, e_range, e_obj, e_off = entry
            e_end = u64(e_addr + e_range)
            could_keep = e_obj is not None

            if e_addr == req_addr:
                keep = could_keep and same_obj(e_obj, req_obj) and e_off == req_off
                if e_end == req_end:
                    out.append(("UNMAP", entry, keep))
                    break
                if e_end < req_end:
                    out.append(("UNMAP", entry, keep))
                    continue
                tail = (req_end, u64(e_range - req_range), e_obj, u64(e_off + req_range))
                out.append(("REMAP", None, tail, entry, keep))
                break

            if e_addr < req_addr:
                head_len = u64(req_addr - e_addr)
                head = (e_addr, head_len, e_obj, e_off)
                keep = could_keep and same_obj(e_obj, req_obj) and u64(e_off + head_len) == req_off
                if e_end == req_end:
                    out.append(("REMAP", head, None, entry, keep))
                    break
                if e_end < req_end:
                    out.append(("REMAP", head, None, entry, keep))
                    continue
                tail = (
                    req_end,
                    u64(e_end - req_end),
                    e_obj,
                    u64(u64(e_off + head_len) + req_range),
                )
                out.append(("REMAP", head, tail, entry, keep))
                break

            # the entry starts inside the request
            keep = (
                could_keep
                and same_obj(e_obj, req_obj)
                and e_off == u64(req_off + u64(e_addr - req_addr))
            )
            if e_end == req_end:
                out.append(("UNMAP", entry, keep))
                break
            if e_end < req_end:
                out.append(("UNMAP", entry, keep))
                continue
            tail = (req_end, u64(e_end - req_end), e_obj, u64(u64(e_off + req_end) - e_addr))
            out.append(("REMAP", None, tail, entry, keep))
            break
        out.append(("MAP", req_addr, req_range, req_obj, req_off))
        return out

    def sm_unmap(self, addr: int, range_: int) -> list[RefOp] | None:
        """The kernel's sm_unmap loop; None where it returns -EINVAL."""
        if not self.range_valid(addr, range_):
            return None
        req_end = u64(addr + range_)
        out: list[RefOp] = []
        for entry in self.walk(addr, req_end):
            e_addr, e_range, e_obj, e_off = entry
            e_end = u64(e_addr + e_range)
            head = (e_addr, u64(addr - e_addr), e_obj, e_off) if e_addr < addr else None
            tail = (
                (req_end, u64(e_end - req_end), e_obj, u64(e_off + u64(req_end - e_addr)))
                if e_end > req_end
                else None
            )
            if head is None and tail is None:
                out.append(("UNMAP", entry, False))
            else:
                out.append(("REMAP", head, tail, entry, False))
        return out

    # --- applying ops -----------------------------------------------------------------

    def _drop(self, entry: Entry) -> None:
        for i, e in enumerate(self.entries):
            if e[0] == entry[0]:
                assert e == entry, f"op names {entry}, layout has {e}"
                del self.entries[i]
                return
        raise AssertionError(f"op names {entry}, which is not in the layout")

    def _add(self, entry: Entry) -> None:
        a, r = entry[0], entry[1]
        assert r > 0, entry
        for b, s, _o, _f in self.entries:
            assert a + r <= b or b + s <= a, f"{entry} overlaps {(b, s)}"
        bisect.insort(self.entries, entry, key=lambda e: e[0])

    def apply(self, ops: Iterable[RefOp]) -> None:
        """Apply ops the way ``drm_gpuva_unmap``/``remap``/``map`` change the tree."""
        for op in ops:
            if op[0] == "UNMAP":
                self._drop(op[1])
            elif op[0] == "REMAP":
                _, head, tail, entry, _keep = op
                self._drop(entry)
                for piece in (head, tail):
                    if piece is not None:
                        self._add(piece)
            elif op[0] == "MAP":
                self._add((op[1], op[2], op[3], op[4]))
            else:
                raise AssertionError(op)


def sm_map_by_cuts(
    layout: Sequence[Entry], addr: int, range_: int, obj: Any, offset: int
) -> list[RefOp]:
    """sm_map in closed form on a valid request: each entry overlapping the request is cut
    at the request's edges (a REMAP when something survives, else an UNMAP), kept when it
    maps the same non-null object along the same line ``offset - addr`` (mod 2**64)."""
    end = addr + range_
    out: list[RefOp] = []
    for entry in sorted(layout, key=lambda e: e[0]):
        a, r, o, f = entry
        if not (a < end and addr < a + r):
            continue
        keep = o is not None and o is obj and u64(f - a) == u64(offset - addr)
        head = (a, addr - a, o, f) if a < addr else None
        tail = (end, a + r - end, o, u64(f + end - a)) if a + r > end else None
        if head is None and tail is None:
            out.append(("UNMAP", entry, keep))
        else:
            out.append(("REMAP", head, tail, entry, keep))
    out.append(("MAP", addr, range_, obj, offset))
    return out


def madvise_by_cuts(
    layout: Sequence[Entry], addr: int, range_: int, obj: Any, offset: int
) -> list[RefOp]:
    """``drm_gpuvm_madvise_ops_create`` in closed form on a valid request, from what the
    kernel's madvise DOC and loop imply, not from the loop's shape: entries with an object
    are left alone and nothing is unmapped; an object-less entry that an edge of the request
    cuts gives a REMAP keeping what lies outside (never ``keep``), then its part inside the
    request: a MAP without object at offset 0, unless the entry covers the whole request,
    whose own MAP then comes last.  An object-less entry the edges do not cut gives
    nothing."""
    end = addr + range_
    out: list[RefOp] = []
    whole = False
    for entry in sorted(layout, key=lambda e: e[0]):
        a, r, o, f = entry
        if o is not None or not (a < end and addr < a + r):
            continue
        head = (a, addr - a, None, f) if a < addr else None
        tail = (end, a + r - end, None, u64(f + end - a)) if a + r > end else None
        if head is None and tail is None:
            continue
        out.append(("REMAP", head, tail, entry, False))
        if a <= addr and a + r >= end:
            whole = True
        else:
            lo, hi = max(a, addr), min(a + r, end)
            out.append(("MAP", lo, hi - lo, None, 0))
    if whole:
        out.append(("MAP", addr, range_, obj, offset))
    return out


# --- converting the model's ops -------------------------------------------------------------


def op_tuple(op: Any) -> RefOp:
    """The model's op (``gpuvm.core.ops``) in this module's tuple notation."""

    def piece(p: Any) -> Entry | None:
        return None if p is None else (p.addr, p.range, p.obj, p.offset)

    kind = type(op).__name__
    if kind == "UnmapOp":
        return ("UNMAP", op.va.layout(), bool(op.keep))
    if kind == "RemapOp":
        return ("REMAP", piece(op.prev), piece(op.next), op.unmap.va.layout(), bool(op.unmap.keep))
    if kind == "MapOp":
        return ("MAP", op.addr, op.range, op.obj, op.offset)
    raise AssertionError(f"unexpected op {op!r}")


# --- a brute-force address model ------------------------------------------------------------


def translate(layout: Iterable[Entry], addr: int) -> tuple[Any, int] | None:
    """What ``addr`` maps to: ``(obj, object offset)``, or None if unmapped."""
    for a, r, o, f in layout:
        if a <= addr < a + r:
            return (o, u64(f + addr - a))
    return None


def probe_points(*spans: tuple[int, int]) -> set[int]:
    """Addresses around every edge of the given ``(addr, range)`` spans: enough to compare
    two piecewise-linear address maps whose pieces all start or end at those edges."""
    pts: set[int] = set()
    for a, r in spans:
        for edge in (a, a + r):
            for d in (-1, 0, 1):
                if 0 <= edge + d <= U64_MAX:
                    pts.add(edge + d)
    return pts
