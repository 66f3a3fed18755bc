"""Lookups of the VA space (``drm_gpuva_find_first``, ``drm_gpuva_find``,
``drm_gpuva_find_prev``, ``drm_gpuva_find_next``) and their kernel quirks.

``find_first`` is the interval tree's first hit on the closed interval
``[addr, addr+range-1]`` (u64: a zero range wraps to an inverted or full interval);
``find`` wants an exact match; ``find_prev(start)`` looks at ``[start-1, start]`` and so
returns the VA *at* ``start`` when nothing covers ``start-1``; ``find_next(end)`` looks at
``[end, end+1]`` and so returns a VA starting at ``end+1``; ``range_valid`` passes a zero
range; prefetch walks do no validation.  Hand-written cases pin each quirk; hypothesis
compares everything with the brute-force scans in ``reference_sm``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference_sm import U64_MAX, RefVm

from gpuvm import GemObject, GpuVm, PrefetchOp, Va

TOP = 1 << 64


def key(va: Va | None) -> tuple[int, int] | None:
    return None if va is None else (va.addr, va.range)


def prefetched(vm: GpuVm, addr: int, range_: int) -> list[tuple[int, int]]:
    out = []
    for op in vm.prefetch_ops(addr, range_):
        assert isinstance(op, PrefetchOp)
        out.append((op.va.addr, op.va.range))
    return out


def ekey(entry: Any) -> tuple[int, int] | None:
    return None if entry is None else (entry[0], entry[1])


@pytest.fixture
def vm() -> GpuVm:
    """VAs at [10,20), [20,30), [40,50) and [51,52); kernel node [60,64)."""
    vm = GpuVm(0, 100, reserve_start=60, reserve_range=4)
    bo = GemObject(1000)
    for a, r in ((10, 10), (20, 10), (40, 10), (51, 1)):
        vm.insert(a, r, bo, a)
    return vm


def test_find_first_and_find(vm: GpuVm) -> None:
    assert key(vm.find_first(0, 10)) is None
    assert key(vm.find_first(0, 11)) == (10, 10)
    assert key(vm.find_first(15, 100)) == (10, 10)
    assert key(vm.find_first(19, 2)) == (10, 10)  # lowest start wins
    assert key(vm.find_first(30, 10)) is None
    assert key(vm.find_first(30, 11)) == (40, 10)
    assert key(vm.find(10, 10)) == (10, 10)
    assert vm.find(10, 9) is None and vm.find(11, 9) is None and vm.find(10, 20) is None
    assert vm.interval_empty(30, 10) and not vm.interval_empty(30, 11)
    # the kernel node is a tree entry like any other
    kn = vm.find_first(62, 1)
    assert kn is vm.kernel_node and kn is not None and kn.kernel_node
    assert vm.find(60, 4) is vm.kernel_node


def test_find_first_zero_range_quirks(vm: GpuVm) -> None:
    # [addr, addr-1] is inverted: only a VA containing both addr-1 and addr meets it
    assert key(vm.find_first(15, 0)) == (10, 10)
    assert vm.find_first(10, 0) is None  # 9 not covered
    assert vm.find_first(20, 0) is None  # 19 and 20 are in different VAs
    assert vm.interval_empty(35, 0)
    # addr 0: last wraps to 2**64-1, the whole space
    assert key(vm.find_first(0, 0)) == (10, 10)
    # addr + range past 2**64 wraps too
    assert key(vm.find_first(45, U64_MAX)) == (40, 10)  # last = 43: inverted, 43..45 in [40,50)
    assert vm.find_first(30, U64_MAX) is None
    assert key(vm.find_first(1, U64_MAX)) == (10, 10)  # last = 2**64-1


def test_find_prev_quirks(vm: GpuVm) -> None:
    assert key(vm.find_prev(30)) == (20, 10)  # 29 covered
    assert key(vm.find_prev(20)) == (10, 10)  # 19 covered: the first of the two
    assert key(vm.find_prev(40)) == (40, 10)  # quirk: nothing at 39, the VA at 40 itself
    assert vm.find_prev(35) is None
    assert key(vm.find_prev(51)) == (51, 1)  # quirk: 50 is not covered, the VA at 51
    assert key(vm.find_prev(50)) == (40, 10)  # 49 is covered
    assert vm.find_prev(0) is None  # start-1 wraps: not a valid range
    assert vm.find_prev(101) is None  # 100 is outside the window
    assert vm.find_prev(61) is None  # 60 is in the kernel node: range_valid fails
    assert vm.find_prev(60) is vm.kernel_node  # 59 is valid and free; [59, 60] meets the node


def test_find_prev_returns_va_at_start_when_gap_before() -> None:
    vm = GpuVm(0, 100)
    va = vm.insert(40, 5)
    assert vm.find_prev(40) is va  # the kernel's [start-1, start] interval meets [40, 45)
    other = vm.insert(30, 10)
    assert vm.find_prev(40) is other  # now 39 is covered and its VA has the lower start


def test_find_next_quirks(vm: GpuVm) -> None:
    assert key(vm.find_next(20)) == (20, 10)
    assert key(vm.find_next(19)) == (10, 10)  # covers end itself
    assert key(vm.find_next(39)) == (40, 10)  # quirk: nothing at 39, a VA starting at 40
    assert vm.find_next(35) is None
    assert key(vm.find_next(50)) == (51, 1)  # quirk: [51,52) starts at end+1
    assert key(vm.find_next(59)) == (60, 4)  # the kernel node starts at 60
    assert vm.find_next(60) is None  # range_valid(60, 1) fails in the node
    assert vm.find_next(99) is None and vm.find_next(100) is None


def test_range_valid() -> None:
    vm = GpuVm(0x100, 0x100, reserve_start=0x180, reserve_range=0x10)
    assert vm.range_valid(0x100, 0x80)
    assert vm.range_valid(0x190, 0x70)
    assert not vm.range_valid(0xFF, 1) and not vm.range_valid(0x1FF, 2)
    assert not vm.range_valid(0x17F, 2) and not vm.range_valid(0x18F, 1)
    assert vm.range_valid(0x17F, 1) and vm.range_valid(0x190, 1)
    # zero range passes, even at the window's end or the node's start
    assert vm.range_valid(0x150, 0) and vm.range_valid(0x200, 0) and vm.range_valid(0x180, 0)
    assert not vm.range_valid(0x201, 0) and not vm.range_valid(0x185, 0)
    # bad values are simply not valid ranges
    assert not vm.range_valid(-1, 1) and not vm.range_valid(0x100, -1)
    assert not vm.range_valid(TOP, 0) and not vm.range_valid(0x100, TOP)
    assert not vm.range_valid(0x100, 1.0)  # type: ignore[arg-type]


def test_boundaries_at_top_of_u64() -> None:
    vm = GpuVm(TOP - 0x10, 0xF)  # window [2**64-16, 2**64-1)
    assert vm.end == U64_MAX
    assert vm.range_valid(TOP - 0x10, 0xF)
    assert not vm.range_valid(TOP - 0x10, 0x10)  # overflows
    assert not vm.range_valid(U64_MAX, 1)
    assert vm.range_valid(U64_MAX, 0)  # a zero range at the window's end passes
    va = vm.insert(TOP - 2, 1)
    assert vm.find_first(TOP - 2, 1) is va and vm.find(TOP - 2, 1) is va
    assert vm.find_first(U64_MAX, 1) is None  # last wraps to 2**64-1+1-1 = U64_MAX
    assert vm.find_next(TOP - 3) is va  # [2**64-3, 2**64-2]
    assert vm.find_next(TOP - 2) is va  # [2**64-2, 2**64-1]: covers end itself
    assert vm.find_next(U64_MAX) is None  # range_valid(2**64-1, 1) overflows
    assert vm.find_prev(U64_MAX) is va  # [2**64-2, 2**64-1]
    assert vm.find_prev(TOP - 2) is va  # quirk: 2**64-3 free, the VA at start
    ops = vm.prefetch_ops(TOP - 4, 0x10)  # addr + range wraps to 12: nothing below 12
    assert list(ops) == []
    assert vm.iter_range(TOP - 16, U64_MAX) == [va]


def test_prefetch_ops_walk(vm: GpuVm) -> None:
    def walk(addr: int, range_: int) -> list[tuple[int, int]]:
        return prefetched(vm, addr, range_)

    assert walk(15, 30) == [(10, 10), (20, 10), (40, 10)]  # partial overlaps included
    assert walk(0, 100) == [(10, 10), (20, 10), (40, 10), (51, 1), (60, 4)]  # node too
    assert walk(30, 10) == []
    assert walk(15, 0) == [(10, 10)]  # zero range: the VA covering 14 and 15
    assert walk(20, 0) == []  # 19 and 20 split between two VAs
    assert walk(0, 0) == []  # everything meets [0, 2**64-1], but nothing starts below 0
    # addr + range wraps: end = 44, the interval [45, 43] is inverted; [40,50) covers it
    # and starts below 44, so the walk yields it
    assert walk(45, U64_MAX) == [(40, 10)]
    assert walk(40, U64_MAX) == []  # [40, 38]: no VA covers 38..40
    assert walk(200, 5) == []  # outside the window: no validation, just nothing there


# --- brute-force comparison ---------------------------------------------------------------


@st.composite
def layouts(draw: st.DrawFn) -> tuple[GpuVm, RefVm, list[int]]:
    """A VM with random disjoint VAs, and the interesting addresses around them."""
    kind = draw(st.sampled_from(["small", "top", "full"]))
    if kind == "small":
        start, rng, ks, kr = 0, 64, draw(st.integers(0, 70)), draw(st.integers(0, 6))
    elif kind == "top":
        start, rng, ks, kr = TOP - 40, 39, TOP - 10, draw(st.integers(0, 3))
    else:
        start, rng, ks, kr = 0, U64_MAX, draw(st.sampled_from([0, 1 << 63])), 0
    vm = GpuVm(start, rng, reserve_start=ks, reserve_range=kr)
    ref = RefVm(start, rng, ks, kr)
    pts = {0, 1, U64_MAX, U64_MAX - 1, start, start + rng, ks, ks + kr}
    for _ in range(draw(st.integers(0, 12))):
        if kind == "full":
            a = draw(
                st.sampled_from([0, 1, 2, 5, 1 << 63, (1 << 63) + 3]) | st.integers(0, U64_MAX)
            )
            r = draw(st.sampled_from([1, 2, 3, 1 << 62]))
        else:
            a = draw(st.integers(start, start + rng))
            r = draw(st.integers(1, 6))
        if vm.range_valid(a, r) and vm.interval_empty(a, r):
            vm.insert(a, r)
            ref.apply([("MAP", a, r, None, 0)])
            pts |= {a, a + r}
    probe = sorted({p + d for p in pts for d in (-2, -1, 0, 1) if 0 <= p + d <= U64_MAX})
    return vm, ref, probe


@given(layouts(), st.data())
def test_lookups_match_brute_force(layout: tuple[GpuVm, RefVm, list[int]], data: Any) -> None:
    vm, ref, probe = layout
    vm.check_invariants()
    assert vm.layout() == ref.layout()
    for _ in range(12):
        addr = data.draw(st.sampled_from(probe))
        range_ = data.draw(
            st.sampled_from([0, 1, 2, 3, U64_MAX, U64_MAX - 1, 1 << 63])
            | st.sampled_from([(p - addr) % TOP for p in probe])
        )
        assert key(vm.find_first(addr, range_)) == ekey(ref.find_first(addr, range_))
        f = ref.find_first(addr, range_)
        want_find = f if f is not None and f[0] == addr and f[1] == range_ else None
        assert key(vm.find(addr, range_)) == ekey(want_find)
        assert vm.interval_empty(addr, range_) == (f is None)
        assert vm.range_valid(addr, range_) == ref.range_valid(addr, range_)
        assert key(vm.find_prev(addr)) == ekey(ref.find_prev(addr))
        assert key(vm.find_next(addr)) == ekey(ref.find_next(addr))
        got = prefetched(vm, addr, range_)
        assert got == [ekey(e) for e in ref.prefetch(addr, range_)]
        end = (addr + range_) % TOP
        assert [key(v) for v in vm.iter_range(addr, end)] == [ekey(e) for e in ref.walk(addr, end)]
