"""The VA index against a brute-force list of intervals, in both its modes: the direct
walk over the SortedList's sublists and the portable ``irange`` path."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sortedcontainers import SortedList

from gpuvm.core.vatree import RefDirection, SortedKeys, VaIndex

MASK = (1 << 64) - 1


@attrs.define(eq=False)
class Node:
    addr: int
    range: int


def brute_first(nodes: list[Node], start: int, last: int) -> Node | None:
    """``interval_tree_iter_first`` taken literally: node.start <= last and
    node.last >= start, lowest start first."""
    hits = [n for n in nodes if n.addr <= last and n.addr + n.range - 1 >= start]
    return min(hits, key=lambda n: n.addr, default=None)


def brute_walk(nodes: list[Node], start: int, end: int) -> list[Node]:
    """``drm_gpuvm_for_each_va_range``: from the first overlap of ``[start, end-1]``,
    every node in address order while its start is below ``end``."""
    first = brute_first(nodes, start, (end - 1) & MASK)
    if first is None:
        return []
    return [n for n in sorted(nodes, key=lambda n: n.addr) if first.addr <= n.addr < end]


def layouts(top: int) -> st.SearchStrategy[list[Node]]:
    """Disjoint nodes: gaps and lengths drawn, packed from a drawn base."""

    @st.composite
    def build(draw: st.DrawFn) -> list[Node]:
        base = draw(st.integers(0, top))
        out = []
        at = base
        for gap, length in draw(
            st.lists(st.tuples(st.integers(0, 40), st.integers(1, 40)), max_size=60)
        ):
            at += gap
            if at + length > top:
                break
            out.append(Node(at, length))
            at += length
        return out

    return build()


TOP = 1 << 64


@pytest.mark.parametrize("portable", [False, True])
@given(
    nodes=layouts(TOP - 1),
    probes=st.lists(st.tuples(st.integers(0, MASK), st.integers(0, 80)), max_size=30),
    near=st.lists(st.tuples(st.integers(0, 60), st.integers(-1, 80)), max_size=30),
)
def test_queries_match_brute_force(
    portable: bool,
    nodes: list[Node],
    probes: list[tuple[int, int]],
    near: list[tuple[int, int]],
) -> None:
    idx: VaIndex[Node] = VaIndex(RefDirection.VM_BO_HOLDS_GEM, portable=portable)
    for n in reversed(nodes):
        idx.add(n)
    idx.check()
    assert list(idx) == nodes
    assert len(idx) == len(nodes)
    # Probes near the layout hit nodes; wide ones cover the u64 space and wrap.
    base = nodes[0].addr if nodes else 0
    queries = list(probes) + [((base + a) & MASK, r) for a, r in near]
    for addr, rng in queries:
        last = (addr + rng - 1) & MASK
        assert idx.first_overlap(addr, last) is brute_first(nodes, addr, last)
        end = (addr + rng) & MASK
        assert idx.range_walk(addr, end) == brute_walk(nodes, addr, end)
        lo, hi = addr, (addr + rng) & MASK
        assert list(idx.starting_in(lo, hi)) == [n for n in nodes if lo <= n.addr <= hi]
    for i, n in enumerate(nodes):
        assert idx.after(n) is (nodes[i + 1] if i + 1 < len(nodes) else None)
        assert n in idx


@pytest.mark.parametrize("portable", [False, True])
@given(
    script=st.lists(
        st.tuples(st.booleans(), st.integers(0, 3000), st.integers(1, 30)), max_size=400
    )
)
def test_add_discard_keeps_order(portable: bool, script: list[tuple[bool, int, int]]) -> None:
    """Many inserts and removals (enough to split and merge sublists with a small load):
    the index stays equal to the brute-force set."""
    idx: VaIndex[Node] = VaIndex(RefDirection.BO_HOLDS_VMA, portable=portable)
    idx._keys._reset(4)  # tiny sublists: exercise the walk across sublist boundaries
    live: list[Node] = []
    for add, addr, rng in script:
        if add:
            if brute_first(live, addr, addr + rng - 1) is None:
                n = Node(addr, rng)
                idx.add(n)
                live.append(n)
        elif live:
            victim = live.pop(addr % len(live))
            idx.discard(victim)
            idx.discard(victim)  # a second discard is a no-op
            assert victim not in idx
        live.sort(key=lambda n: n.addr)
        for probe in (addr, addr + rng, max(addr - 15, 0)):
            assert idx.first_overlap(probe, probe + 20) is brute_first(live, probe, probe + 20)
            assert idx.range_walk(probe, probe + 45) == brute_walk(live, probe, probe + 45)
    idx.check()
    assert list(idx) == live


def test_discard_of_another_node_at_the_address_is_a_no_op() -> None:
    idx: VaIndex[Node] = VaIndex(RefDirection.VM_BO_HOLDS_GEM)
    a = Node(0x1000, 0x10)
    idx.add(a)
    idx.discard(Node(0x1000, 0x10))
    assert list(idx) == [a]


def test_the_installed_sortedcontainers_takes_the_direct_walk() -> None:
    """The fast mode tested above is really the sublist walk on this sortedcontainers."""
    assert not VaIndex(RefDirection.VM_BO_HOLDS_GEM).portable
    assert VaIndex(RefDirection.VM_BO_HOLDS_GEM, portable=True).portable


@settings(max_examples=200)
@given(
    load=st.sampled_from([1, 2, 3, 4, 1000]),
    script=st.lists(st.tuples(st.booleans(), st.integers(0, 60)), max_size=120),
    queries=st.lists(
        st.tuples(
            st.none() | st.integers(-2, 62),
            st.none() | st.integers(-2, 62),
            st.tuples(st.booleans(), st.booleans()),
            st.booleans(),
        ),
        max_size=8,
    ),
)
def test_sorted_keys_behave_as_a_sorted_list(
    load: int,
    script: list[tuple[bool, int]],
    queries: list[tuple[int | None, int | None, tuple[bool, bool], bool]],
) -> None:
    """The index's own sorted list (``SortedKeys``) against ``sortedcontainers.SortedList``:
    same keys in the same order after every insert and removal (sublists split and merged
    at tiny loads), the same ``irange`` answers, ``ValueError`` for an absent key."""
    keys = SortedKeys(load)
    ref = SortedList()
    for add, key in script:
        if add and key not in ref:
            keys.add(key)
            ref.add(key)
        elif not add and key in ref:
            keys.remove(key)
            ref.remove(key)
        elif not add:
            with pytest.raises(ValueError):
                keys.remove(key)
        assert list(keys) == list(ref) and len(keys) == len(ref)
        assert keys._maxes == [lst[-1] for lst in keys._lists]
        assert all(0 < len(lst) <= 2 * load for lst in keys._lists)
    for lo, hi, inclusive, reverse in queries:
        assert list(keys.irange(lo, hi, inclusive, reverse)) == list(
            ref.irange(lo, hi, inclusive, reverse)
        )
