"""``drm_gpuvm_madvise_ops_create``: the madvise flavour of split/merge.

The kernel's own examples (the "Madvise Logic" DOC of drm_gpuvm.c) as a table, the
rejections, and a property test comparing the model op for op with the closed-form
reference in ``reference_sm`` on random layouts, then checking what applying the ops does
to the address map.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from reference_sm import U64_MAX, madvise_by_cuts, op_tuple, probe_points, translate
from snapshot import unchanged
from test_splitmerge_props import WORLDS, acts

from gpuvm import (
    FenceSignallingViolation,
    GemObject,
    GpuVm,
    GpuvmError,
    GpuVmFlags,
    InvalidRange,
    InvalidValue,
    MapRequest,
    OutOfBounds,
    ZeroRange,
)

A = GemObject(1 << 20, name="a")


def layout_vm(*entries: tuple[int, int, GemObject | None, int], **kw: Any) -> GpuVm:
    vm = GpuVm(start=0, range=1 << 16, name="m", **kw)
    for addr, range_, obj, offset in entries:
        vm.map(addr, range_, obj, offset)
    return vm


def madvise(vm: GpuVm, addr: int, range_: int, obj: Any = None, offset: int = 0) -> list[Any]:
    return [op_tuple(op) for op in vm.madvise_ops(MapRequest(addr, range_, obj, offset))]


def remap(prev: Any, nxt: Any, entry: Any) -> tuple[Any, ...]:
    return ("REMAP", prev, nxt, entry, False)


N = None


@pytest.mark.parametrize(
    ("layout", "request_", "expected"),
    [
        # 1) The request lies inside one VA: split at both edges, the request's MAP last.
        (
            [(0, 16, N, 0)],
            (4, 4),
            [remap((0, 4, N, 0), (8, 8, N, 8), (0, 16, N, 0)), ("MAP", 4, 4, N, 0)],
        ),
        # 2) The request spans three VAs: the outer two are cut, each with the MAP of its
        #    part inside the request; the middle one stays as it is.
        (
            [(0, 8, N, 0), (8, 4, N, 0), (12, 8, N, 0)],
            (4, 12),
            [
                remap((0, 4, N, 0), None, (0, 8, N, 0)),
                ("MAP", 4, 4, N, 0),
                remap(None, (16, 4, N, 4), (12, 8, N, 0)),
                ("MAP", 12, 4, N, 0),
            ],
        ),
        # 3) Only the end cuts a VA ...
        (
            [(0, 8, N, 0), (8, 4, N, 0), (12, 8, N, 0)],
            (0, 16),
            [remap(None, (16, 4, N, 4), (12, 8, N, 0)), ("MAP", 12, 4, N, 0)],
        ),
        # ... or only the start does.
        (
            [(0, 8, N, 0), (8, 4, N, 0), (12, 8, N, 0)],
            (4, 8),
            [remap((0, 4, N, 0), None, (0, 8, N, 0)), ("MAP", 4, 4, N, 0)],
        ),
        # 4) Both edges on VA boundaries: nothing to do.
        ([(0, 8, N, 0), (8, 4, N, 0), (12, 8, N, 0)], (0, 20), []),
        # 5) No VA at all.
        ([], (4, 4), []),
        # VAs backed by an object are never split, even when an edge cuts them.
        ([(0, 16, A, 0)], (4, 4), []),
        (
            [(0, 8, A, 0), (8, 8, N, 0)],
            (4, 8),
            [remap(None, (12, 4, N, 4), (8, 8, N, 0)), ("MAP", 8, 4, N, 0)],
        ),
        # A VA from the request's start to past its end, or from before it to its end.
        ([(4, 12, N, 7)], (4, 4), [remap(None, (8, 8, N, 11), (4, 12, N, 7)), ("MAP", 4, 4, N, 0)]),
        ([(0, 8, N, 0)], (4, 4), [remap((0, 4, N, 0), None, (0, 8, N, 0)), ("MAP", 4, 4, N, 0)]),
        # An identical VA, or one inside the request, gives nothing (no UNMAP, ever).
        ([(4, 4, N, 0)], (4, 4), []),
        ([(6, 2, N, 0)], (4, 8), []),
    ],
)
def test_kernel_examples(
    layout: list[tuple[int, int, Any, int]], request_: tuple[int, int], expected: list[Any]
) -> None:
    vm = layout_vm(*layout)
    assert madvise(vm, *request_) == expected
    assert madvise_by_cuts(vm.layout(), *request_, None, 0) == expected


def test_the_request_map_carries_its_object_and_applying_keeps_coverage() -> None:
    vm = layout_vm((0, 16, None, 0), (16, 8, A, 0))
    obj = GemObject(64, name="b")
    ops = vm.madvise_ops(MapRequest(4, 4, obj, 32))
    assert op_tuple(ops[-1]) == ("MAP", 4, 4, obj, 32)
    vm.apply(ops)
    assert vm.layout() == [(0, 4, None, 0), (4, 4, obj, 32), (8, 8, None, 8), (16, 8, A, 0)]
    vm.check_invariants()
    # A request that only meets the object's VA changes nothing.
    assert madvise(vm, 18, 2) == []


def test_rejections_change_nothing() -> None:
    vm = layout_vm((0, 16, None, 0), reserve_start=1 << 12, reserve_range=1 << 12)
    with unchanged(vm), pytest.raises(ZeroRange):
        vm.madvise_ops(MapRequest(4, 0))
    with unchanged(vm), pytest.raises(InvalidRange):
        vm.madvise_ops(MapRequest((1 << 16) - 4, 8))
    with unchanged(vm), pytest.raises(InvalidRange):
        vm.madvise_ops(MapRequest(1 << 12, 4))  # the kernel-reserved range
    with unchanged(vm), pytest.raises(InvalidValue):
        vm.madvise_ops(MapRequest(0, 8, "not a GEM"))  # type: ignore[arg-type]
    checked = layout_vm((0, 16, None, 0), check_bounds=True)
    with unchanged(checked, A), pytest.raises(OutOfBounds):
        checked.madvise_ops(MapRequest(0, 8, A, 1 << 20))  # past the end of the object


def test_refused_in_a_fence_signalling_section() -> None:
    vm = layout_vm((0, 16, None, 0), flags=GpuVmFlags.IMMEDIATE_MODE)
    with unchanged(vm), vm.fence_signalling(), pytest.raises(FenceSignallingViolation):
        vm.madvise_ops(MapRequest(4, 4))


@st.composite
def layouts(draw: st.DrawFn) -> tuple[Any, list[Any]]:
    world = draw(st.sampled_from(WORLDS))
    return world, draw(st.lists(acts(world), min_size=5, max_size=30))


@given(layouts(), st.data())
def test_model_matches_closed_form_and_only_splits(case: tuple[Any, list[Any]], data: Any) -> None:
    world, steps = case
    vm = world.vm()
    objs = [GemObject((1 << 64) - 1, name=f"o{i}") for i in range(3)]

    def obj(i: int | None) -> GemObject | None:
        return None if i is None else objs[i]

    for act in steps:
        try:
            if act.kind == "map":
                vm.map(act.addr, act.range, obj(act.obj), act.offset)
            else:
                vm.unmap(act.addr, act.range)
        except GpuvmError:
            pass
    # Requests drawn like the script's, and requests whose edges fall on or next to the
    # edges of object-less VAs (where every branch of the kernel loop is decided).
    edges = sorted({x for a, r, o, _f in vm.layout() if o is None for x in (a, a + r)})
    probes = []
    for _ in range(data.draw(st.integers(1, 6))):
        act = data.draw(acts(world))
        how = data.draw(st.integers(0, 2))
        inner = [(a, r) for a, r, o, _f in vm.layout() if o is None and r >= 3]
        if how == 2 and inner:
            # Strictly inside one VA: the REMAP with both pieces.
            a, r = data.draw(st.sampled_from(inner))
            lo = data.draw(st.integers(a + 1, a + r - 2))
            hi = data.draw(st.integers(lo + 1, a + r - 1))
            act = attrs.evolve(act, kind="map", addr=lo, range=hi - lo)
        elif how == 1 and edges:
            lo = data.draw(st.sampled_from(edges)) + data.draw(st.sampled_from([-1, 0, 0, 1]))
            hi = data.draw(st.sampled_from(edges)) + data.draw(st.sampled_from([-1, 0, 0, 1]))
            lo, hi = (min(max(x, 0), U64_MAX) for x in (lo, hi))  # requests are u64s
            act = attrs.evolve(act, kind="map", addr=lo, range=max(hi - lo, 0))
        probes.append(act)
    for act in probes:
        req = MapRequest(act.addr, act.range, obj(act.obj), act.offset)
        before = vm.layout()
        note(f"layout {before}, madvise {req}")
        ref = world.ref()
        if act.range == 0 or not ref.range_valid(act.addr, act.range):
            with pytest.raises(ZeroRange if act.range == 0 else InvalidRange):
                vm.madvise_ops(req)
            assert vm.layout() == before
            continue
        ops = vm.madvise_ops(req)
        got = [op_tuple(op) for op in ops]
        assert got == madvise_by_cuts(before, req.addr, req.range, req.obj, req.offset)
        kinds = [g[0] for g in got]
        assert "UNMAP" not in kinds and kinds.count("REMAP") <= 2 and kinds.count("MAP") <= 2
        vm.apply(ops)
        vm.check_invariants()
        after = vm.layout()
        lo, hi = req.addr, req.addr + req.range
        # VAs with an object are untouched; the only new one is the request's own MAP.
        with_obj = [e for e in before if e[2] is not None]
        added = [e for e in after if e[2] is not None and e not in with_obj]
        assert all(e in after for e in with_obj)
        assert added in ([], [(lo, req.range, req.obj, req.offset)])
        # No object-less VA crosses an edge of the request.
        for a, r, o, _f in after:
            if o is None:
                assert not (a < lo < a + r) and not (a < hi < a + r)
        # Nothing is mapped or unmapped; outside the request every address still translates
        # as before, and object-less space stays object-less except under the request's MAP.
        spans = [(a, r) for a, r, _o, _f in before + after] + [(lo, req.range)]
        for p in probe_points(*spans):
            old, new = translate(before, p), translate(after, p)
            assert (old is None) == (new is None), p
            if not lo <= p < hi or (old is not None and old[0] is not None):
                assert old == new, p
