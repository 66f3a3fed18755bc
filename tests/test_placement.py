"""Placement (TTM-like): two-pass validate, LRU eviction, pinning, migrations, costs."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import pytest

from gpuvm import EventLog, GemObject
from gpuvm.core.errors import (
    Busy,
    GpuvmError,
    InvalidValue,
    NoMemory,
    NotManaged,
    NotPinned,
    PinnedBuffer,
)
from gpuvm.core.events import Migrated, Warning
from gpuvm.drm.placement import (
    AMDGPU_EVICTION,
    GIB,
    MIB,
    PCIE3_X16,
    PCIE4_X16,
    PCIE5_X16,
    Backing,
    Domain,
    Link,
    MemoryManager,
    MigrationTally,
    Move,
    Place,
    PlaceFlags,
    PlaceSpec,
    Resource,
    amdgpu_domains,
    copy_bytes,
    crosses_link,
    migration_ms,
    places,
)

VRAM, TT, SYSTEM = Domain.VRAM, Domain.TT, Domain.SYSTEM
DESIRED, FALLBACK = PlaceFlags.DESIRED, PlaceFlags.FALLBACK
CONTIG = PlaceFlags.CONTIGUOUS
SCANOUT = 33_177_600  # 3840x2160 XRGB8888


def mgr(vram: int = 100, tt: int = 100, system: int = 1000) -> tuple[MemoryManager, EventLog]:
    m = MemoryManager(vram=vram, tt=tt, system=system)
    log = EventLog()
    m.bus.subscribe(log)
    return m, log


def bo(
    m: MemoryManager, size: int, name: str, pref: PlaceSpec = VRAM, allowed: PlaceSpec | None = None
) -> GemObject:
    g = GemObject(size, name=name)
    m.add(g, pref, allowed)
    return g


def names(backings: list[Backing]) -> list[str]:
    return [b.name for b in backings]


def rejected(
    m: MemoryManager, exc: type[GpuvmError], fn: Callable[..., object], *args: Any, **kw: Any
) -> GpuvmError:
    """Call ``fn``, expect ``exc``, and check that nothing changed."""
    before = m.snapshot()
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    assert m.snapshot() == before
    m.check_invariants()
    return info.value


# --- values -----------------------------------------------------------------------------


def test_ttm_numbering_and_flag_values() -> None:
    assert (SYSTEM, TT, VRAM) == (0, 1, 2)
    assert [int(f) for f in PlaceFlags if f] == [1, 2, 4, 8, 16]
    assert str(Place(VRAM, CONTIG | DESIRED, lpfn=0x100)) == "VRAM|CONTIGUOUS|DESIRED|lpfn=0x100"


@pytest.mark.parametrize("bad", [3, -1, "VRAM"])
def test_place_rejects_unknown_domain(bad: object) -> None:
    with pytest.raises(InvalidValue):
        Place(bad)


def test_place_rejects_unknown_flags_and_bad_lpfn() -> None:
    with pytest.raises(InvalidValue):
        Place(VRAM, 1 << 5)
    with pytest.raises(InvalidValue):
        Place(VRAM, lpfn=-1)
    with pytest.raises(InvalidValue):
        places(VRAM, "TT")  # type: ignore[arg-type]


def test_resource_compatibility() -> None:
    plain = Resource(VRAM)
    contig = Resource.from_place(Place(VRAM, CONTIG | DESIRED))
    assert contig.flags == CONTIG  # DESIRED/FALLBACK are search hints, not kept
    assert plain.compatible(Place(VRAM)) and not plain.compatible(Place(TT))
    assert not plain.compatible(Place(VRAM, CONTIG)) and contig.compatible(Place(VRAM, CONTIG))
    assert contig.compatible(Place(VRAM))
    assert not plain.compatible(Place(VRAM, lpfn=10))
    assert Resource(VRAM, lpfn=8).compatible(Place(VRAM, lpfn=10))
    assert not Resource(VRAM, lpfn=12).compatible(Place(VRAM, lpfn=10))
    assert not Resource(TT, PlaceFlags.TEMPORARY).compatible(Place(TT))


# --- the two passes -----------------------------------------------------------------------


def test_first_pass_takes_a_later_place_rather_than_evict() -> None:
    m, log = mgr()
    a, b = bo(m, 60, "a"), bo(m, 60, "b")
    m.validate(a)
    moves = m.validate(b, [VRAM, TT])
    assert moves == (Move(b, None, TT, 0),)
    assert m.backing(a).domain == VRAM and m.backing(b).domain == TT
    assert log.of(Migrated) == []


def test_second_pass_evicts_lru_victims() -> None:
    m, log = mgr()
    a, b, c = bo(m, 40, "a"), bo(m, 40, "b"), bo(m, 40, "c")
    m.validate(a)
    m.validate(b)
    moves = m.validate(c, [VRAM])
    assert moves == (Move(a, VRAM, TT, 40, victim=True), Move(c, None, VRAM, 0))
    assert log.of(Migrated) == [Migrated(a, "VRAM", "TT", 40)]
    assert names(m.lru(VRAM)) == ["b", "c"]
    m.check_invariants()


def test_desired_places_are_skipped_when_evicting() -> None:
    m, _ = mgr(vram=100, tt=100)
    v1, v2 = bo(m, 60, "v1"), bo(m, 60, "v2", TT)
    m.validate(v1)
    m.validate(v2)
    x = bo(m, 60, "x")
    # Pass 1: VRAM and TT full.  Pass 2 may not evict for VRAM (DESIRED), so evicts in TT.
    moves = m.validate(x, [Place(VRAM, DESIRED), Place(TT)])
    assert moves == (Move(v2, TT, SYSTEM, 0, victim=True), Move(x, None, TT, 0))
    assert m.backing(v1).domain == VRAM


def test_fallback_places_only_in_the_evicting_pass() -> None:
    m, _ = mgr(vram=100)
    wall = bo(m, 80, "wall")
    m.pin(wall, VRAM)
    x = bo(m, 40, "x")
    where = [Place(VRAM), Place(SYSTEM, FALLBACK)]
    assert m.plan_validate(x, where) == (Move(x, None, SYSTEM, 0),)
    m.validate(x, where)
    assert m.backing(x).domain == SYSTEM
    # Pass 2 accepts the SYSTEM fallback as a match: it stays, nothing is tried.
    assert m.validate(x, where) == ()
    # Once VRAM frees up, pass 1 (which ignores the fallback) moves it back.
    m.unpin(wall)
    m.evict(wall)
    assert m.validate(x, where) == (Move(x, SYSTEM, VRAM, 40),)


def test_fallback_not_used_while_the_first_pass_succeeds() -> None:
    m, _ = mgr()
    x = bo(m, 40, "x")
    assert m.validate(x, [Place(SYSTEM, FALLBACK), Place(VRAM)]) == (Move(x, None, VRAM, 0),)


def test_compatible_backing_stays_and_becomes_most_recent() -> None:
    m, log = mgr()
    a, b = bo(m, 30, "a"), bo(m, 30, "b")
    m.validate(a)
    m.validate(b)
    assert m.validate(a, [TT, VRAM]) == ()  # already matches VRAM
    assert names(m.lru(VRAM)) == ["b", "a"]
    assert log.of(Migrated) == []


def test_contiguous_request_moves_a_non_contiguous_backing() -> None:
    m, log = mgr()
    a = bo(m, 30, "a")
    m.validate(a)
    assert m.validate(a, [Place(VRAM, CONTIG)]) == (Move(a, VRAM, VRAM, 30),)
    assert m.backing(a).resource == Resource(VRAM, CONTIG)
    assert log.of(Migrated) == [Migrated(a, "VRAM", "VRAM", 30)]  # a local blit
    assert m.used(VRAM) == 30


def test_move_within_a_domain_needs_room_for_both_copies() -> None:
    m, _ = mgr(vram=50)
    a = bo(m, 30, "a")
    m.validate(a)
    e = rejected(m, NoMemory, m.validate, a, [Place(VRAM, CONTIG)])
    assert e.errno == errno.ENOMEM


def test_temporary_resources_never_match() -> None:
    m, _ = mgr()
    a = bo(m, 30, "a", TT)
    m.validate(a, [Place(TT, PlaceFlags.TEMPORARY)])
    assert m.validate(a, [TT]) == (Move(a, TT, TT, 0),)
    assert m.backing(a).resource == Resource(TT)


def test_lpfn_limits_recorded_and_checked() -> None:
    m, _ = mgr(tt=1 << 30)
    a = bo(m, 3 * 4096, "a", TT)
    rejected(m, NoMemory, m.validate, a, [Place(TT, lpfn=2)])  # window smaller than buffer
    m.validate(a, [TT])
    assert m.validate(a, [Place(TT, lpfn=8)]) == (Move(a, TT, TT, 0),)
    assert m.validate(a, [Place(TT, lpfn=16)]) == ()  # inside the wider window


def test_absent_domain_is_skipped() -> None:
    m, _ = mgr(vram=0)
    a = bo(m, 10, "a", VRAM, [VRAM, TT])
    assert not m.present(VRAM)
    assert m.validate(a) == (Move(a, None, TT, 0),)


def test_default_validate_retries_allowed_on_enomem() -> None:
    m, _ = mgr(vram=100)
    pref, allowed = amdgpu_domains([VRAM])
    assert pref == (Place(VRAM),) and allowed == (Place(VRAM), Place(TT))
    wall = bo(m, 80, "wall")
    m.pin(wall, VRAM)
    x = GemObject(40, name="x")
    m.add(x, pref, allowed)
    assert m.validate(x) == (Move(x, None, TT, 0),)
    only_vram = bo(m, 40, "y")
    rejected(m, NoMemory, m.validate, only_vram)


def test_amdgpu_domains_rules() -> None:
    assert amdgpu_domains([VRAM], kernel_or_discardable=True)[1] == (Place(VRAM),)
    assert amdgpu_domains([VRAM, TT]) == (places(VRAM, TT), places(VRAM, TT))
    assert amdgpu_domains([TT])[1] == (Place(TT),)


def test_empty_placement_drops_backing_unless_pinned() -> None:
    m, _ = mgr()
    a = bo(m, 30, "a")
    m.validate(a)
    m.pin(a, VRAM)
    rejected(m, PinnedBuffer, m.validate, a, [])
    m.unpin(a)
    assert m.validate(a, []) == (Move(a, VRAM, None, 0),)
    assert m.backing(a).domain is None and m.used(VRAM) == 0
    assert m.validate(a, []) == ()


# --- eviction -------------------------------------------------------------------------------


def test_eviction_walks_the_lru_oldest_first_and_touch_reorders() -> None:
    m, _ = mgr(vram=100, tt=1000)
    a, b, c, d = (bo(m, 25, n) for n in "abcd")
    for g in (a, b, c, d):
        m.validate(g)
    m.touch(a)  # order now b, c, d, a
    assert names(m.lru(VRAM)) == ["b", "c", "d", "a"]
    big = bo(m, 50, "big")
    moves = m.validate(big, [VRAM])
    assert [mv.obj for mv in moves if mv.victim] == [b, c]
    assert names(m.lru(VRAM)) == ["d", "a", "big"]


def test_eviction_skips_pinned_buffers() -> None:
    m, _ = mgr(vram=100, tt=1000)
    a, b, c = (bo(m, 30, n) for n in "abc")
    for g in (a, b, c):
        m.validate(g)
    m.pin(a, VRAM)
    x = bo(m, 50, "x")
    moves = m.validate(x, [VRAM])
    assert [mv.obj for mv in moves if mv.victim] == [b, c]
    assert m.backing(a).domain == VRAM


def test_victims_go_to_system_when_tt_is_full() -> None:
    m, log = mgr(vram=100, tt=50)
    t = bo(m, 40, "t", TT)
    m.validate(t)
    v = bo(m, 60, "v")
    m.validate(v)
    x = bo(m, 60, "x")
    m.pin(t, TT)  # TT keeps only 10 free bytes
    moves = m.validate(x, [VRAM])
    assert moves[0] == Move(v, VRAM, SYSTEM, 60, victim=True)
    assert log.of(Migrated) == [Migrated(v, "VRAM", "SYSTEM", 60)]  # one copy, via TT


def test_no_room_for_victims_is_enomem_and_changes_nothing() -> None:
    m, _ = mgr(vram=100, tt=10, system=10)
    a = bo(m, 60, "a")
    m.validate(a)
    x = bo(m, 60, "x")
    e = rejected(m, NoMemory, m.validate, x, [VRAM])
    assert e.errno == errno.ENOMEM


def test_only_pinned_in_vram_gives_enomem() -> None:
    m, _ = mgr(vram=100)
    a = bo(m, 80, "a")
    m.pin(a, VRAM)
    x = bo(m, 40, "x")
    rejected(m, NoMemory, m.validate, x, [VRAM])
    rejected(m, NoMemory, m.pin, x, VRAM)


def test_partial_eviction_that_cannot_finish_changes_nothing() -> None:
    m, _ = mgr(vram=100, tt=1000)
    a, p = bo(m, 30, "a"), bo(m, 60, "p")
    m.validate(a)
    m.pin(p, VRAM)
    x = bo(m, 50, "x")  # evicting a frees 30: 40 free, not 50
    rejected(m, NoMemory, m.validate, x, [VRAM])
    assert m.backing(a).domain == VRAM


def test_system_is_never_evicted_for_room() -> None:
    m, _ = mgr(system=100)
    a = bo(m, 80, "a", SYSTEM)
    m.validate(a)
    x = bo(m, 40, "x", SYSTEM)
    rejected(m, NoMemory, m.validate, x)
    assert m.evict(a) == ()


def test_explicit_evict() -> None:
    m, log = mgr()
    a = bo(m, 30, "a")
    assert m.evict(a) == ()  # not resident
    m.validate(a)
    m.pin(a, VRAM)
    e = rejected(m, Busy, m.evict, a)
    assert e.errno == errno.EBUSY
    m.unpin(a)
    assert m.evict(a) == (Move(a, VRAM, TT, 30, victim=True),)
    assert m.evict(a) == (Move(a, TT, SYSTEM, 0, victim=True),)
    assert [(e.src, e.dst, e.bytes) for e in log.of(Migrated) if isinstance(e, Migrated)] == [
        ("VRAM", "TT", 30),
        ("TT", "SYSTEM", 0),
    ]


def test_evict_domain_is_all_or_nothing() -> None:
    m, _ = mgr(vram=100, tt=50, system=40)
    a, b, p = bo(m, 30, "a"), bo(m, 30, "b"), bo(m, 30, "p")
    for g in (a, b, p):
        m.validate(g)
    m.pin(p, VRAM)
    assert [mv.obj for mv in m.evict_domain(VRAM)] == [a, b]
    assert m.backing(a).domain == TT and m.backing(b).domain == SYSTEM
    assert m.backing(p).domain == VRAM
    c, d = bo(m, 30, "c"), bo(m, 30, "d")
    m.validate(c)
    m.validate(d)
    rejected(m, NoMemory, m.evict_domain, VRAM)  # TT 20 free, SYSTEM 10 free
    assert m.evict_domain(SYSTEM) == ()


# --- pinning --------------------------------------------------------------------------------


def test_pins_nest_and_pinned_never_moves() -> None:
    m, _ = mgr()
    a = bo(m, 30, "a")
    assert m.pin(a, VRAM) == (Move(a, None, VRAM, 0),)
    assert m.pin(a, [TT, VRAM]) == ()
    assert m.backing(a).pin_count == 2 and m.lru(VRAM) == []
    assert m.pinned_bytes(VRAM) == 30
    rejected(m, PinnedBuffer, m.validate, a, [TT])
    m.unpin(a)
    assert m.evict_domain(VRAM) == ()  # still pinned once: not on the LRU
    m.unpin(a)
    assert names(m.lru(VRAM)) == ["a"]
    e = rejected(m, NotPinned, m.unpin, a)
    assert e.errno == errno.EINVAL


def test_pin_moves_first_when_unpinned_and_fails_when_pinned_elsewhere() -> None:
    m, log = mgr()
    a = bo(m, 30, "a")
    m.validate(a)
    assert m.pin(a, TT) == (Move(a, VRAM, TT, 30),)
    assert log.of(Migrated) == [Migrated(a, "VRAM", "TT", 30)]
    e = rejected(m, PinnedBuffer, m.pin, a, VRAM)
    assert e.errno == errno.EINVAL
    rejected(m, PinnedBuffer, m.pin, a, [Place(TT, CONTIG)])
    rejected(m, InvalidValue, m.pin, a, [])


def test_pin_under_pressure_evicts_others() -> None:
    m, _ = mgr(vram=100)
    a, b = bo(m, 50, "a"), bo(m, 50, "b")
    m.validate(a)
    m.validate(b)
    s = bo(m, 50, "scanout")
    moves = m.pin(s, [Place(VRAM, CONTIG)])
    assert moves == (Move(a, VRAM, TT, 50, victim=True), Move(s, None, VRAM, 0))
    assert m.backing(s).resource == Resource(VRAM, CONTIG)


# --- hooks, dry runs, lifetime ------------------------------------------------------------


def test_move_hooks_run_before_each_change_victims_first() -> None:
    m, log = mgr(vram=60)
    a, x = bo(m, 40, "a"), bo(m, 40, "x")
    m.validate(a)
    seen: list[tuple[str, Domain | None, Domain | None, int]] = []

    def hook(b: Backing, old: Resource | None, new: Resource | None) -> None:
        assert b.resource == old  # not yet changed
        src, dst = (r.domain if r else None for r in (old, new))
        seen.append((b.name, src, dst, len(log.events)))

    m.on_move.append(hook)
    m.validate(x, [VRAM])
    assert seen == [("a", VRAM, TT, 0), ("x", None, VRAM, 1)]


def test_plan_pin_matches_pin() -> None:
    m, _ = mgr(vram=60)
    a, x = bo(m, 40, "a"), bo(m, 40, "x")
    m.validate(a)
    before = m.snapshot()
    plan = m.plan_pin(x, VRAM)
    assert m.snapshot() == before
    assert m.pin(x, VRAM) == plan == (Move(a, VRAM, TT, 40, victim=True), Move(x, None, VRAM, 0))
    assert m.plan_pin(x, VRAM) == ()
    rejected(m, PinnedBuffer, m.plan_pin, x, TT)
    rejected(m, InvalidValue, m.plan_pin, x, [])


def test_plan_validate_is_side_effect_free() -> None:
    m, log = mgr(vram=60)
    a, x = bo(m, 40, "a"), bo(m, 40, "x")
    m.validate(a)
    before = m.snapshot()
    plan = m.plan_validate(x, [VRAM])
    assert m.snapshot() == before and log.of(Migrated) == []
    assert m.validate(x, [VRAM]) == plan


def test_add_and_remove() -> None:
    m, _ = mgr()
    a = bo(m, 30, "a")
    rejected(m, NotManaged, m.add, a, VRAM)
    rejected(m, InvalidValue, m.add, GemObject(0), VRAM)
    rejected(m, InvalidValue, m.add, object(), VRAM)
    rejected(m, InvalidValue, m.add, GemObject(4), [])
    assert m.add(object(), [VRAM], size=8).size == 8
    m.pin(a, VRAM)
    e = rejected(m, Busy, m.remove, a)
    assert e.errno == errno.EBUSY
    m.unpin(a)
    m.remove(a)
    assert a not in m and m.used(VRAM) == 0
    rejected(m, NotManaged, m.validate, a)
    m.check_invariants()


def test_gem_free_releases_backing_and_warns_if_pinned() -> None:
    m, log = mgr()
    a, b = bo(m, 30, "a"), bo(m, 30, "b")
    m.validate(a)
    m.pin(b, TT)
    a.put()
    assert a not in m and m.used(VRAM) == 0
    b.put()
    assert b not in m and m.used(TT) == 0
    assert [w.where for w in log.of(Warning) if isinstance(w, Warning)] == [b]
    m.check_invariants()


def test_check_invariants_detects_corruption() -> None:
    m, _ = mgr()
    a = bo(m, 30, "a")
    m.validate(a)
    m.check_invariants()
    m._used[VRAM] += 1
    with pytest.raises(AssertionError, match="accounted"):
        m.check_invariants()
    m._used[VRAM] -= 1
    m.backing(a).pin_count = 1  # pinned but still on the LRU
    with pytest.raises(AssertionError, match="LRU"):
        m.check_invariants()
    m.backing(a).pin_count = 0
    m._used[VRAM] = m.capacity[VRAM] + 1
    m.backing(a).size = m.capacity[VRAM] + 1
    with pytest.raises(AssertionError, match="over capacity"):
        m.check_invariants()


# --- migration cost -------------------------------------------------------------------------


def test_bandwidth_arithmetic() -> None:
    assert migration_ms(SCANOUT) == pytest.approx(1.3824)
    assert round(migration_ms(SCANOUT), 2) == 1.38
    assert round(migration_ms(SCANOUT, PCIE3_X16), 2) == 2.76
    assert round(migration_ms(SCANOUT, 12e9), 2) == 2.76
    assert round(migration_ms(SCANOUT, PCIE5_X16), 2) == 0.69
    assert round(3 * migration_ms(SCANOUT), 2) == 4.15
    assert PCIE4_X16.ms(SCANOUT) == migration_ms(SCANOUT)
    assert round(SCANOUT / MIB, 2) == 31.64 and SCANOUT // 4096 == 8100
    with pytest.raises(InvalidValue):
        migration_ms(1, Link("dead", 0))


def test_copy_bytes_rules() -> None:
    n = 1000
    assert copy_bytes(VRAM, TT, n) == copy_bytes(TT, VRAM, n) == n
    assert copy_bytes(VRAM, SYSTEM, n) == copy_bytes(SYSTEM, VRAM, n) == n  # one copy via TT
    assert copy_bytes(TT, SYSTEM, n) == copy_bytes(SYSTEM, TT, n) == 0  # GART bind/unbind
    assert copy_bytes(None, VRAM, n) == copy_bytes(VRAM, None, n) == 0
    assert copy_bytes(VRAM, VRAM, n) == n and not crosses_link(VRAM, VRAM)
    assert crosses_link(VRAM, SYSTEM) and not crosses_link(TT, SYSTEM)


def test_migration_tally_counts_link_bytes() -> None:
    m = MemoryManager(vram=8 * GIB, tt=16 * GIB)
    tally = MigrationTally(PCIE4_X16)
    m.bus.subscribe(tally, [Migrated])
    g = GemObject(SCANOUT, name="fb")
    m.add(g, VRAM, [VRAM, TT])
    m.validate(g)  # first allocation: no migration
    m.validate(g, [TT])  # VRAM -> TT: one copy
    m.validate(g, [VRAM])  # TT -> VRAM: one copy
    m.validate(g, [Place(VRAM, CONTIG)])  # VRAM-local blit: not over the link
    m.evict(g)
    m.evict(g)  # TT -> SYSTEM: no copy
    assert tally.moves == 5
    assert tally.link_bytes == 3 * SCANOUT and tally.bytes == 4 * SCANOUT
    assert round(tally.ms, 2) == 4.15


def test_eviction_table_is_configurable() -> None:
    m = MemoryManager(vram=100, tt=100, eviction={VRAM: [SYSTEM]})
    assert dict(AMDGPU_EVICTION) == {VRAM: (TT, SYSTEM), TT: (SYSTEM,)}
    g = GemObject(30)
    m.add(g, VRAM)
    m.validate(g)
    assert m.evict(g) == (Move(g, VRAM, SYSTEM, 30, victim=True),)
    assert m.evict(g) == ()
    with pytest.raises(InvalidValue):
        MemoryManager(eviction={VRAM: [TT, VRAM]})
    with pytest.raises(InvalidValue):
        MemoryManager(eviction={VRAM: [5]})  # type: ignore[list-item]
