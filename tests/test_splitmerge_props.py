"""Property tests of split/merge (``__drm_gpuvm_sm_map`` / ``__drm_gpuvm_sm_unmap``).

Random map/unmap scripts are replayed step by step on the model and on the independent
reference in ``reference_sm`` (both its kernel-loop and closed-form versions).  At every
step: the op sequence must match exactly (kind, keep, pieces, the VA named); the ops
must have the documented shape; applying them must change exactly the requested pages
(checked against a per-page model); VAs the ops do not name must survive as the same
objects; and page-table events must honour ``keep``.  Address spaces are small (so
overlaps are frequent), at the very top of the u64 range, with a kernel-reserved node in
the middle, and with object offsets near 2**64 so piece offsets wrap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from reference_sm import (
    U64_MAX,
    RefOp,
    RefVm,
    op_tuple,
    probe_points,
    sm_map_by_cuts,
    translate,
    u64,
)

from gpuvm import (
    EventLog,
    GemObject,
    GpuVm,
    InvalidRange,
    MapOp,
    MapRequest,
    RemapOp,
    UnmapOp,
    Va,
    ZeroRange,
)
from gpuvm.core.events import Mapped, TlbInvalidated, Unmapped

# --- worlds: VM windows and the values requests are drawn from ---------------------------


@attrs.frozen
class World:
    """A VM shape plus the address/range/offset distributions requests are drawn from."""

    name: str
    start: int
    range: int
    kstart: int = 0
    krange: int = 0
    lo: int = 0  # addresses are drawn from [lo, hi]
    hi: int = 70
    max_range: int = 24

    def vm(self, **kw: Any) -> GpuVm:
        return GpuVm(
            start=self.start,
            range=self.range,
            reserve_start=self.kstart,
            reserve_range=self.krange,
            name=self.name,
            **kw,
        )

    def ref(self) -> RefVm:
        return RefVm(self.start, self.range, self.kstart, self.krange)


TOP = 1 << 64
WORLDS = [
    World("small", 0, 64),
    World("offset-window", 8, 48, lo=0, hi=64),
    World("kernel-node", 0, 64, kstart=24, krange=8),
    World("kernel-node-edge", 4, 60, kstart=0, krange=8),
    World("top", TOP - 65, 64, lo=TOP - 72, hi=U64_MAX),
    World("top-kernel", TOP - 65, 64, kstart=TOP - 40, krange=4, lo=TOP - 72, hi=U64_MAX),
]

N_OBJS = 3


@attrs.frozen
class Act:
    """One script step: ``map`` (with object index or None, and offset) or ``unmap``."""

    kind: str
    addr: int
    range: int
    obj: int | None = None
    offset: int = 0


LINES = (0, 16, TOP - 2)
"""Values of ``offset - addr`` (mod 2**64) most requests use, so that a request often
continues an existing mapping's line (``keep``); the last one wraps past 2**64."""


@st.composite
def offsets_for(draw: st.DrawFn, addr: int) -> int:
    """Mostly an offset on one of :data:`LINES`; sometimes arbitrary, or right below
    2**64 (so piece offsets wrap).  Choices are explicit: hypothesis' ``one_of`` does not
    weigh its branches evenly."""
    how = draw(st.integers(0, 5))
    if how <= 3:
        return u64(addr + draw(st.sampled_from(LINES)))
    if how == 4:
        return draw(st.integers(0, 40))
    return draw(st.integers(TOP - 40, U64_MAX))


@st.composite
def acts(draw: st.DrawFn, world: World) -> Act:
    """Mostly valid requests inside the window, some straddling its edges or zero."""
    if draw(st.integers(0, 5)) == 0:
        addr = draw(st.integers(world.lo, world.hi))
    else:
        addr = draw(st.integers(world.start, world.start + world.range - 1))
    how = draw(st.integers(0, 9))
    if how == 0:
        range_ = 0
    elif how == 1:
        range_ = draw(st.integers(1, world.max_range))
    else:
        range_ = draw(st.integers(1, 10))
    if draw(st.integers(0, 3)) == 0:
        return Act("unmap", addr, range_)
    obj = draw(st.sampled_from([0, 0, 1, 2, None]))
    return Act("map", addr, range_, obj, draw(offsets_for(addr)))


@st.composite
def scripts(draw: st.DrawFn, max_steps: int = 40) -> tuple[World, list[Act]]:
    world = draw(st.sampled_from(WORLDS))
    steps = draw(st.lists(acts(world), min_size=10, max_size=max_steps))
    return world, steps


# --- the per-page model -------------------------------------------------------------------


class PageModel:
    """What every address maps to, as a dict ``page -> (obj, object offset)``: the
    brute-force meaning of a layout, independent of how ops split VAs."""

    def __init__(self) -> None:
        self.pages: dict[int, tuple[Any, int]] = {}

    def map(self, addr: int, range_: int, obj: Any, offset: int) -> None:
        for i in range(range_):
            self.pages[addr + i] = (obj, u64(offset + i))

    def unmap(self, addr: int, range_: int) -> None:
        for i in range(range_):
            self.pages.pop(addr + i, None)

    @staticmethod
    def of_layout(layout: list[tuple[int, int, Any, int]]) -> dict[int, tuple[Any, int]]:
        out: dict[int, tuple[Any, int]] = {}
        for a, r, o, f in layout:
            for i in range(r):
                out[a + i] = (o, u64(f + i))
        return out


# --- checks -------------------------------------------------------------------------------


def check_shape(ops: list[Any], *, is_map: bool) -> None:
    """The shape ``__drm_gpuvm_sm_map`` / ``__drm_gpuvm_sm_unmap`` produce: ascending, one
    MAP and last (sm_map) or none (sm_unmap), at most two REMAPs, none without a piece, keep
    False for sm_unmap."""
    maps = [i for i, op in enumerate(ops) if isinstance(op, MapOp)]
    if is_map:
        assert maps == [len(ops) - 1], ops
    else:
        assert maps == []
    remaps = [op for op in ops if isinstance(op, RemapOp)]
    assert len(remaps) <= 2
    for op in remaps:
        assert op.prev is not None or op.next is not None
        if op.prev is not None and op.next is not None:
            assert len(ops) == 2 if is_map else len(ops) == 1
    named = [op.va if isinstance(op, UnmapOp) else op.unmap.va for op in ops[: len(ops) - is_map]]
    addrs = [va.addr for va in named]
    assert addrs == sorted(addrs) and len(set(addrs)) == len(addrs)
    if len(remaps) >= 1:
        first_or_last = {id(named[0]), id(named[-1])}
        assert all(id(op.unmap.va) in first_or_last for op in remaps)
        for op in remaps:
            if op.prev is not None:
                assert op.unmap.va is named[0]
            if op.next is not None:
                assert op.unmap.va is named[-1]
    if not is_map:
        assert all(not (op.keep if isinstance(op, UnmapOp) else op.unmap.keep) for op in ops)


def named_vas(ops: list[Any]) -> list[Va]:
    out = []
    for op in ops:
        if isinstance(op, UnmapOp):
            out.append(op.va)
        elif isinstance(op, RemapOp):
            out.append(op.unmap.va)
    return out


def keep_of(op: Any) -> bool:
    return bool(op.keep if isinstance(op, UnmapOp) else op.unmap.keep)


def covered(events: list[Any]) -> dict[int, tuple[Any, int] | None]:
    """Pages touched by Mapped (-> obj, offset) or Unmapped (-> None) events, in order."""
    out: dict[int, tuple[Any, int] | None] = {}
    for ev in events:
        for i in range(ev.range):
            if isinstance(ev, Mapped):
                out[ev.addr + i] = (ev.obj, u64(ev.offset + i))
            else:
                out[ev.addr + i] = None
    return out


class Replay:
    """Replays a script on the model and the reference in lock step, checking every step."""

    def __init__(self, world: World, *, events: bool = True) -> None:
        self.world = world
        self.log = EventLog()
        self.vm = world.vm()
        if events:
            self.vm.bus.subscribe(self.log)
        self.ref = world.ref()
        self.objs = [GemObject(U64_MAX, name=f"o{i}") for i in range(N_OBJS)]
        self.pages = PageModel()

    def obj(self, i: int | None) -> GemObject | None:
        return None if i is None else self.objs[i]

    def step(self, act: Act) -> None:
        vm, ref = self.vm, self.ref
        note(f"{act}  layout before: {vm.layout()}")
        before_vas = list(vm.vas)
        before_layout = vm.layout()
        gen = vm.generation
        if act.kind == "map":
            obj = self.obj(act.obj)
            expect = ref.sm_map(act.addr, act.range, obj, act.offset)
            req = MapRequest(act.addr, act.range, obj, act.offset)
            if expect is None or act.range == 0:
                err = ZeroRange if act.range == 0 else InvalidRange
                with pytest.raises(err):
                    vm.sm_map_ops(req)
                with pytest.raises(err):
                    vm.map(act.addr, act.range, obj, act.offset)
                assert vm.layout() == before_layout and vm.generation == gen
                return
            ops = vm.sm_map_ops(req)
            got = [op_tuple(op) for op in ops]
            assert got == expect, f"model {got}\nkernel-loop reference {expect}"
            assert got == sm_map_by_cuts(ref.layout(), act.addr, act.range, obj, act.offset)
            check_shape(list(ops), is_map=True)
        else:
            expect = ref.sm_unmap(act.addr, act.range)
            if expect is None or act.range == 0:
                err = ZeroRange if act.range == 0 else InvalidRange
                with pytest.raises(err):
                    vm.sm_unmap_ops(act.addr, act.range)
                assert vm.layout() == before_layout and vm.generation == gen
                return
            ops = vm.sm_unmap_ops(act.addr, act.range)
            got = [op_tuple(op) for op in ops]
            assert got == expect, f"model {got}\nkernel-loop reference {expect}"
            check_shape(list(ops), is_map=False)

        # Every op names the VA the model holds at that place, by identity.
        by_addr = {va.addr: va for va in before_vas}
        names = named_vas(list(ops))
        for va in names:
            assert by_addr[va.addr] is va
        # The ops name exactly the VAs meeting the request.
        lo, hi = act.addr, act.addr + act.range
        assert [id(v) for v in names] == [id(v) for v in before_vas if v.addr < hi and lo < v.end]

        self.log.clear()
        created = vm.apply(ops)
        ref.apply(expect)
        if act.kind == "map":
            self.pages.map(act.addr, act.range, self.obj(act.obj), act.offset)
        else:
            self.pages.unmap(act.addr, act.range)

        # (c) the layout: reference and brute-force page model.
        assert vm.layout() == ref.layout()
        assert PageModel.of_layout(vm.layout()) == self.pages.pages
        if act.kind == "unmap":
            assert vm.interval_empty(act.addr, act.range)
        else:
            assert vm.find(act.addr, act.range) is created[-1]
        # (d) untouched VAs are the same objects; named ones are gone; created ones are in.
        gone = {id(v) for v in names}
        survivors = [v for v in before_vas if id(v) not in gone]
        now = vm.vas
        now_ids = {id(v) for v in now}
        assert all(id(v) in now_ids for v in survivors)
        assert all(not v.inserted for v in names)
        assert {id(v) for v in now} == {id(v) for v in survivors} | {id(v) for v in created}
        assert all(v.addr >= hi or v.end <= lo for v in survivors)
        vm.check_invariants()
        if self.log in vm.bus.listeners:
            self.check_events(ops, before_layout, act)

    def check_events(self, ops: Any, before: list[Any], act: Act) -> None:
        """Page-table events touch only the request's pages, skip every page a keep op
        preserves, and leave the PTEs describing exactly the new translation."""
        lo, hi = act.addr, act.addr + act.range
        evs: list[Any] = self.log.of(Mapped, Unmapped)
        tlb: list[Any] = self.log.of(TlbInvalidated)
        for ev in evs + tlb:
            assert lo <= ev.addr and ev.addr + ev.range <= hi, (ev, act)
        touched = covered(evs)
        kept: set[int] = set()
        for op in ops:
            if not isinstance(op, MapOp) and keep_of(op):
                va = op.va if isinstance(op, UnmapOp) else op.unmap.va
                kept |= set(range(max(va.addr, lo), min(va.end, hi)))
        assert not (kept & set(touched)), "a kept page got a page-table event"
        old = PageModel.of_layout(before)
        new = self.pages.pages
        for p in range(lo, hi):
            if p in kept:
                assert old.get(p) == new.get(p), "keep on a page whose translation changed"
                continue
            if old.get(p) is not None:
                assert p in touched, f"page {p:#x} was mapped before and not unmapped/rewritten"
            if new.get(p) != old.get(p) or act.kind == "map":
                assert touched.get(p) == new.get(p), f"page {p:#x}: PTE {touched.get(p)}"
        unmapped = set()
        for ev in evs:
            if not isinstance(ev, Unmapped):
                continue
            unmapped |= set(range(ev.addr, ev.addr + ev.range))
        tlbd = set()
        for ev in tlb:
            tlbd |= set(range(ev.addr, ev.addr + ev.range))
        assert unmapped <= tlbd


@given(scripts())
def test_scripts_match_reference_and_page_model(script: tuple[World, list[Act]]) -> None:
    world, steps = script
    rp = Replay(world)
    for act in steps:
        rp.step(act)


@given(scripts(max_steps=12), st.data())
def test_many_overlaps_then_one_request(script: tuple[World, list[Act]], data: Any) -> None:
    """Build a dense layout, then one more request drawn after seeing it."""
    world, steps = script
    rp = Replay(world, events=False)
    for act in steps:
        if act.kind == "map":
            rp.step(act)
    rp.vm.bus.subscribe(rp.log)
    rp.step(data.draw(acts(world)))


@given(scripts(max_steps=16), st.data())
def test_requests_continuing_an_existing_mapping(
    script: tuple[World, list[Act]], data: Any
) -> None:
    """Requests cut from an existing VA's own line (same object, same ``offset - addr``),
    possibly spilling over its neighbours: the cases where ``keep`` is true, including
    REMAPs with both pieces and offsets that wrap."""
    world, steps = script
    rp = Replay(world, events=False)
    for act in steps:
        if act.kind == "map":
            rp.step(act)
    rp.vm.bus.subscribe(rp.log)
    for _ in range(4):
        vas = [va for va in rp.vm.vas if va.obj is not None]
        if not vas:
            return
        va = data.draw(st.sampled_from(vas))
        lo = data.draw(st.integers(max(world.start, va.addr - 3), va.end - 1))
        hi = data.draw(
            st.integers(max(lo + 1, va.addr + 1), min(va.end + 3, world.start + world.range))
        )
        line = u64(va.offset - va.addr)
        if data.draw(st.integers(0, 4)) == 0:
            line = u64(line + 1)  # same object, off by one: never kept
        idx = rp.objs.index(va.obj)
        rp.step(Act("map", lo, hi - lo, idx, u64(lo + line)))


# --- the callback form, applying each op as it is generated ------------------------------


@given(scripts(max_steps=16))
def test_callback_form_applying_immediately(script: tuple[World, list[Act]]) -> None:
    """``drm_gpuvm_sm_map``/``sm_unmap`` with step callbacks that change the tree at once:
    the safe walk must produce the same ops and the same final layout as the list form."""
    world, steps = script
    vm = world.vm()
    ref = world.ref()
    objs = [GemObject(U64_MAX, name=f"o{i}") for i in range(N_OBJS)]
    for act in steps:
        seen: list[RefOp] = []

        def step(op: Any, seen: list[RefOp] = seen) -> int:
            seen.append(op_tuple(op))
            vm.apply([op])
            return 0

        if act.kind == "map":
            obj = None if act.obj is None else objs[act.obj]
            expect = ref.sm_map(act.addr, act.range, obj, act.offset)
            if expect is None or act.range == 0:
                continue
            assert vm.sm_map(MapRequest(act.addr, act.range, obj, act.offset), step) == 0
        else:
            expect = ref.sm_unmap(act.addr, act.range)
            if expect is None or act.range == 0:
                continue
            assert vm.sm_unmap(act.addr, act.range, step) == 0
        assert seen == expect
        ref.apply(expect)
        assert vm.layout() == ref.layout()
        vm.check_invariants()


def test_callback_error_stops_and_is_returned() -> None:
    """A step returning an error aborts at once; earlier steps stay done (no rollback)."""
    vm = GpuVm(0, 64)
    bo = GemObject(64)
    for a in (0, 8, 16):
        vm.map(a, 4, bo, a)
    seen: list[Any] = []

    def step(op: Any) -> int:
        seen.append(op)
        return -12 if len(seen) == 2 else 0

    assert vm.sm_map(MapRequest(0, 20, None, 0), step) == -12
    assert len(seen) == 2 and all(isinstance(op, UnmapOp) for op in seen)
    assert vm.sm_unmap(2, 20, lambda op: -5) == -5


# --- huge values, sparse probing -----------------------------------------------------------

BIG = [0, 1, 2, 3, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 63) + 1, TOP - 4, TOP - 3, TOP - 2]


@st.composite
def big_acts(draw: st.DrawFn) -> Act:
    addr = draw(st.sampled_from(BIG) | st.integers(0, U64_MAX))
    end = draw(st.sampled_from(BIG) | st.integers(0, U64_MAX))
    if end <= addr:
        addr, end = end, addr
    if end == addr:
        end = addr + 1
    kind = draw(st.sampled_from(["map", "map", "unmap"]))
    obj = draw(st.one_of(st.none(), st.integers(0, N_OBJS - 1)))
    off = draw(
        st.sampled_from([0, addr, u64(addr - 1), TOP - 1, 1 << 63]) | st.integers(0, U64_MAX)
    )
    return Act(kind, addr, end - addr, obj, off)


@given(st.lists(big_acts(), min_size=1, max_size=16))
def test_full_u64_window_with_huge_ranges(steps: list[Act]) -> None:
    """A window spanning [0, 2**64 - 1) with mappings of up to 2**64 - 1 units: compare with
    the reference, and the address map at every edge with a sparse probe."""
    vm = GpuVm(0, U64_MAX)
    ref = RefVm(0, U64_MAX)
    objs = [GemObject(U64_MAX, name=f"o{i}") for i in range(N_OBJS)]
    for act in steps:
        obj = None if act.obj is None else objs[act.obj]
        before = vm.layout()
        if act.kind == "map":
            expect = ref.sm_map(act.addr, act.range, obj, act.offset)
        else:
            expect = ref.sm_unmap(act.addr, act.range)
        if expect is None:
            with pytest.raises(InvalidRange):
                vm.sm_map_ops(MapRequest(act.addr, act.range, obj, act.offset))
            continue
        if act.kind == "map":
            ops = vm.sm_map_ops(MapRequest(act.addr, act.range, obj, act.offset))
            assert [op_tuple(op) for op in ops] == sm_map_by_cuts(
                before, act.addr, act.range, obj, act.offset
            )
        else:
            ops = vm.sm_unmap_ops(act.addr, act.range)
        assert [op_tuple(op) for op in ops] == expect
        check_shape(list(ops), is_map=act.kind == "map")
        vm.apply(ops)
        ref.apply(expect)
        after = vm.layout()
        assert after == ref.layout()
        spans = [(a, r) for a, r, _o, _f in before + after] + [(act.addr, act.range)]
        lo, hi = act.addr, act.addr + act.range
        for p in probe_points(*spans):
            if lo <= p < hi:
                want = (obj, u64(act.offset + p - lo)) if act.kind == "map" else None
            else:
                want = translate(before, p)
            assert translate(after, p) == want, hex(p)
        vm.check_invariants()


# --- the kernel-reserved node ------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "range_", "ok"),
    [
        (0, 24, True),  # ends right at the node
        (32, 32, True),  # starts right after it
        (23, 1, True),
        (32, 1, True),
        (23, 2, False),  # touches its first unit
        (31, 2, False),  # touches its last unit
        (24, 8, False),
        (26, 1, False),
        (0, 64, False),  # spans it
        (20, 20, False),
    ],
)
def test_requests_around_kernel_node(addr: int, range_: int, ok: bool) -> None:
    vm = GpuVm(0, 64, reserve_start=24, reserve_range=8)
    bo = GemObject(64)
    vm.map(16, 8, bo, 0)
    vm.map(32, 8, bo, 16)
    knode = vm.kernel_node
    assert knode is not None
    before = vm.layout()
    ref = RefVm(0, 64, 24, 8)
    ref.apply(ref.sm_map(16, 8, bo, 0) or [])
    ref.apply(ref.sm_map(32, 8, bo, 16) or [])
    for kind in ("map", "unmap"):
        expect = ref.sm_map(addr, range_, bo, 3) if kind == "map" else ref.sm_unmap(addr, range_)
        assert (expect is not None) == ok
        make: Callable[[], Any] = (
            (lambda: vm.sm_map_ops(MapRequest(addr, range_, bo, 3)))
            if kind == "map"
            else (lambda: vm.sm_unmap_ops(addr, range_))
        )
        if not ok:
            with pytest.raises(InvalidRange) as ei:
                make()
            assert ei.value.errno == 22
            assert vm.layout() == before
            continue
        ops = make()
        assert [op_tuple(op) for op in ops] == expect
        assert all(va is not knode for va in named_vas(list(ops)))
    # The kernel node survives every valid request and stays in the tree.
    vm.map(0, 24, bo, 0)
    vm.map(32, 32, None, 0)
    vm.unmap(0, 24)
    vm.unmap(32, 32)
    assert knode in list(vm) and vm.vas == []
    vm.check_invariants()


def test_kernel_node_at_window_edges_and_outside() -> None:
    """The kernel node need not lie inside the window; it still blocks its range."""
    vm = GpuVm(100, 50, reserve_start=0, reserve_range=10)
    assert vm.range_valid(100, 50) and not vm.range_valid(5, 1)
    vm2 = GpuVm(0, 64, reserve_start=60, reserve_range=10)
    with pytest.raises(InvalidRange):
        vm2.sm_map_ops(MapRequest(59, 2, None, 0))
    assert vm2.sm_map_ops(MapRequest(0, 60, None, 0))[-1] == MapOp(0, 60, None, 0)
