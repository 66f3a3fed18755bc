"""Property test: random allocate / validate / pin / unpin / evict / free sequences keep the
placement invariants, pinned buffers never move, eviction follows the LRU, and every
rejected call leaves the manager unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gpuvm import EventLog, GemObject
from gpuvm.core.errors import GpuvmError
from gpuvm.core.events import Migrated
from gpuvm.drm.placement import (
    Backing,
    Domain,
    MemoryManager,
    Move,
    Place,
    PlaceFlags,
    Resource,
    copy_bytes,
)

T = TypeVar("T")

FLAGS = [
    PlaceFlags.NONE,
    PlaceFlags.NONE,
    PlaceFlags.CONTIGUOUS,
    PlaceFlags.DESIRED,
    PlaceFlags.FALLBACK,
    PlaceFlags.CONTIGUOUS | PlaceFlags.DESIRED,
    PlaceFlags.TEMPORARY,
]
DOMAINS = [Domain.VRAM, Domain.VRAM, Domain.VRAM, Domain.TT, Domain.TT, Domain.SYSTEM]
place_st = st.builds(Place, st.sampled_from(DOMAINS), st.sampled_from(FLAGS))
where_st = st.lists(place_st, min_size=1, max_size=3)


class PlacementMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.m = MemoryManager(vram=100, tt=60, system=150)
        self.log = EventLog()
        self.m.bus.subscribe(self.log)
        self.objs: list[GemObject] = []
        self.pinned_at: dict[GemObject, Resource | None] = {}
        self.rejections = 0
        self.mark = 0

    # --- helpers ---------------------------------------------------------------------

    def attempt(self, fn: Callable[[], T]) -> T | None:
        before = self.m.snapshot()
        events = len(self.log.events)
        try:
            return fn()
        except GpuvmError:
            assert self.m.snapshot() == before, "a rejected call changed the manager"
            assert len(self.log.events) == events, "a rejected call emitted events"
            self.rejections += 1
            return None

    def check_moves(
        self, obj: GemObject, moves: tuple[Move, ...], lru_before: dict[Domain, list[Backing]]
    ) -> None:
        victims = [mv for mv in moves if mv.victim]
        if victims:
            src = victims[0].src
            assert src is not None and all(v.src == src for v in victims)
            order = [b.obj for b in lru_before[src] if b.obj is not obj]
            assert [v.obj for v in victims] == order[: len(victims)], "victims not in LRU order"
        own = [mv for mv in moves if not mv.victim]
        assert len(own) <= 1 and all(mv.obj is obj for mv in own)
        if own:
            assert self.m.backing(obj).domain == own[0].dst
        migrated = [e for e in self.log.events[self.mark :] if isinstance(e, Migrated)]
        want = [
            (mv.obj, mv.src, mv.dst, mv.bytes)
            for mv in moves
            if mv.src is not None and mv.dst is not None
        ]
        assert [(e.obj, Domain[e.src], Domain[e.dst], e.bytes) for e in migrated] == want
        for mv in moves:
            assert mv.bytes == copy_bytes(mv.src, mv.dst, self.m.backing(mv.obj).size)

    def lru_snapshot(self) -> dict[Domain, list[Backing]]:
        self.mark = len(self.log.events)
        return {d: self.m.lru(d) for d in Domain}

    # --- rules ---------------------------------------------------------------------------

    @rule(
        size=st.integers(1, 50),
        pref=where_st,
        allowed=st.none() | where_st,
    )
    def add(self, size: int, pref: list[Place], allowed: list[Place] | None) -> None:
        g = GemObject(size)
        self.m.add(g, pref, allowed)
        self.objs.append(g)

    @precondition(lambda self: self.objs)
    @rule(data=st.data(), domain=st.sampled_from([Domain.VRAM, Domain.TT]))
    def pressure(self, data: st.DataObject, domain: Domain) -> None:
        """Validate to one non-SYSTEM domain only: the evicting pass must make room."""
        self.validate(data, [Place(domain)])

    @precondition(lambda self: self.objs)
    @rule(data=st.data(), where=st.none() | st.lists(place_st, max_size=3))
    def validate(self, data: st.DataObject, where: list[Place] | None) -> None:
        g = data.draw(st.sampled_from(self.objs))
        plan = self.attempt(lambda: self.m.plan_validate(g, where))
        lru = self.lru_snapshot()
        moves = self.attempt(lambda: self.m.validate(g, where))
        assert (plan is None) == (moves is None)
        if moves is None:
            return
        assert moves == plan
        self.check_moves(g, moves, lru)
        b = self.m.backing(g)
        if where:
            assert b.resource is not None
            assert any(b.resource.compatible(p) for p in where) or PlaceFlags.TEMPORARY in (
                b.resource.flags
            )
        elif where == []:
            assert b.resource is None

    @precondition(lambda self: self.objs)
    @rule(data=st.data(), where=where_st)
    def pin(self, data: st.DataObject, where: list[Place]) -> None:
        g = data.draw(st.sampled_from(self.objs))
        was = self.m.backing(g).pin_count
        plan = self.attempt(lambda: self.m.plan_pin(g, where))
        lru = self.lru_snapshot()
        moves = self.attempt(lambda: self.m.pin(g, where))
        assert moves == plan
        if moves is None:
            return
        b = self.m.backing(g)
        assert b.pin_count == was + 1
        if was:
            assert moves == ()
        else:
            self.check_moves(g, moves, lru)
            self.pinned_at[g] = b.resource

    @precondition(lambda self: self.objs)
    @rule(data=st.data())
    def unpin(self, data: st.DataObject) -> None:
        g = data.draw(st.sampled_from(self.objs))
        if self.attempt(lambda: self.m.unpin(g)) is None and g not in self.pinned_at:
            return
        if self.m.backing(g).pin_count == 0:
            self.pinned_at.pop(g, None)

    @precondition(lambda self: self.objs)
    @rule(data=st.data())
    def evict(self, data: st.DataObject) -> None:
        g = data.draw(st.sampled_from(self.objs))
        self.attempt(lambda: self.m.evict(g))

    @rule(domain=st.sampled_from(list(Domain)))
    def evict_domain(self, domain: Domain) -> None:
        lru = [b.obj for b in self.m.lru(domain)]
        moves = self.attempt(lambda: self.m.evict_domain(domain))
        if moves:
            assert [mv.obj for mv in moves] == lru

    @precondition(lambda self: self.objs)
    @rule(data=st.data())
    def touch(self, data: st.DataObject) -> None:
        g = data.draw(st.sampled_from(self.objs))
        self.m.touch(g)
        b = self.m.backing(g)
        if b.resource is not None and not b.pinned:
            assert self.m.lru(b.resource.domain)[-1] is b

    @precondition(lambda self: self.objs)
    @rule(data=st.data(), via_free=st.booleans())
    def release(self, data: st.DataObject, via_free: bool) -> None:
        g = data.draw(st.sampled_from(self.objs))
        if via_free:
            g.put()  # the GEM free hook releases the backing, pinned or not
        elif self.attempt(lambda: self.m.remove(g)) is None and g in self.m:
            return
        assert g not in self.m
        self.objs.remove(g)
        self.pinned_at.pop(g, None)

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def consistent(self) -> None:
        self.m.check_invariants()
        for d in Domain:
            assert self.m.used(d) <= self.m.capacity[d]

    @invariant()
    def pinned_never_move(self) -> None:
        for g, res in self.pinned_at.items():
            b = self.m.backing(g)
            assert b.pinned and b.resource == res, f"pinned {b!r} moved from {res}"
        assert {b.obj for b in self.m.backings if b.pinned} == set(self.pinned_at)


PlacementMachine.TestCase.settings = settings(settings.default, stateful_step_count=40)
TestPlacementMachine = PlacementMachine.TestCase
