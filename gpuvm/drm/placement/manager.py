"""One device's memory manager (``ttm_device`` with its ``ttm_resource_manager``s):
a buffer's :class:`Backing`, ``ttm_bo_validate``'s two-pass placement with LRU eviction to
the driver's eviction table (``amdgpu_evict_flags``), nested pins (``ttm_bo_pin``,
``amdgpu_bo_pin_restricted``), dry runs, and the move callback hooks.  One class, one
concept: every mutation plans on a copy of the accounting and applies after.
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Callable, Mapping, Sequence

import attrs

from gpuvm.core.errors import Busy, InvalidValue, NoMemory, NotManaged, NotPinned, PinnedBuffer
from gpuvm.core.events import EventBus, Migrated, Warning
from gpuvm.core.u64 import check_u64
from gpuvm.drm.placement.cost import Move, copy_bytes
from gpuvm.drm.placement.domains import (
    GIB,
    PAGE_SIZE,
    Domain,
    Place,
    PlaceFlags,
    PlaceSpec,
    Resource,
    _as_places,
    _domain,
)

__all__ = [
    "AMDGPU_EVICTION",
    "Backing",
    "MemoryManager",
    "MoveHook",
]


@attrs.define(slots=True, eq=False, repr=False)
class Backing:
    """A buffer's placement state (the TTM part of ``ttm_buffer_object``).  Owned and
    mutated only by its :class:`MemoryManager`."""

    obj: object
    size: int
    preferred: tuple[Place, ...]
    allowed: tuple[Place, ...]
    resource: Resource | None = None
    pin_count: int = 0
    last_use: int = 0
    """LRU stamp: the manager's tick when the buffer was last validated, moved or unpinned."""

    def __repr__(self) -> str:
        where = self.resource.domain.name if self.resource else "none"
        pin = f", pinned x{self.pin_count}" if self.pin_count else ""
        return f"Backing({self.name}, {self.size} B, {where}{pin})"

    @property
    def name(self) -> str:
        return str(getattr(self.obj, "name", "") or self.obj)

    @property
    def domain(self) -> Domain | None:
        return self.resource.domain if self.resource else None

    @property
    def pinned(self) -> bool:
        return self.pin_count > 0

    def check_invariants(self) -> None:
        """Size positive, pin count non-negative, pinned implies resident."""
        if self.size <= 0:
            raise AssertionError(f"{self!r}: size {self.size} <= 0")
        if self.pin_count < 0:
            raise AssertionError(f"{self!r}: pin_count {self.pin_count} < 0")
        if self.pin_count and self.resource is None:
            raise AssertionError(f"{self!r}: pinned without backing")


MoveHook = Callable[[Backing, Resource | None, Resource | None], None]
"""Called before a backing changes: ``hook(backing, old, new)`` (TTM's move callback,
where amdgpu calls ``dma_buf_move_notify``).  Hooks must not raise."""

AMDGPU_EVICTION: Mapping[Domain, tuple[Domain, ...]] = types.MappingProxyType(
    {Domain.VRAM: (Domain.TT, Domain.SYSTEM), Domain.TT: (Domain.SYSTEM,)}
)
"""``amdgpu_evict_flags``: VRAM victims go to GTT, or SYSTEM if GTT is full; GTT victims
go to SYSTEM.  SYSTEM buffers are never evicted (only swapped, not modelled)."""

_Plan = list[tuple[Backing, Resource | None, bool]]


class MemoryManager:
    """One device's memory: capacities per domain, resident accounting, LRUs and the
    eviction table (``ttm_device`` with its ``ttm_resource_manager``s).

    A domain with capacity 0 is absent (its places are skipped, as TTM skips unused
    managers).  TT and SYSTEM are separate pools, as in TTM.
    """

    def __init__(
        self,
        *,
        vram: int = 8 * GIB,
        tt: int = 16 * GIB,
        system: int = 64 * GIB,
        bus: EventBus | None = None,
        eviction: Mapping[Domain, Sequence[Domain]] = AMDGPU_EVICTION,
        name: str = "mem",
    ) -> None:
        caps = {Domain.SYSTEM: system, Domain.TT: tt, Domain.VRAM: vram}
        for d, c in caps.items():
            check_u64(f"{d.name} capacity", c)
        self.name = name
        self.capacity: Mapping[Domain, int] = types.MappingProxyType(caps)
        self.bus = bus if bus is not None else EventBus()
        table = {_domain(k): tuple(_domain(d) for d in v) for k, v in eviction.items()}
        for src, dsts in table.items():
            if src in dsts:
                raise InvalidValue(f"eviction table sends {src.name} victims to {src.name}")
        self.eviction: Mapping[Domain, tuple[Domain, ...]] = types.MappingProxyType(table)
        self.on_move: list[MoveHook] = []
        self._used: dict[Domain, int] = dict.fromkeys(Domain, 0)
        self._lru: dict[Domain, dict[Backing, None]] = {d: {} for d in Domain}
        self._backings: dict[object, Backing] = {}
        self._tick = 0

    def __repr__(self) -> str:
        use = ", ".join(f"{d.name} {self._used[d]}/{self.capacity[d]}" for d in Domain)
        return f"MemoryManager({self.name}: {use})"

    # --- queries -----------------------------------------------------------------------

    def present(self, domain: Domain) -> bool:
        return self.capacity[domain] > 0

    def used(self, domain: Domain) -> int:
        """Resident bytes in ``domain``."""
        return self._used[domain]

    def free(self, domain: Domain) -> int:
        return self.capacity[domain] - self._used[domain]

    def pinned_bytes(self, domain: Domain) -> int:
        return sum(b.size for b in self._backings.values() if b.pinned and b.domain == domain)

    def lru(self, domain: Domain) -> list[Backing]:
        """Unpinned buffers resident in ``domain``, least recently used first."""
        return list(self._lru[domain])

    def resident(self, domain: Domain) -> list[Backing]:
        return [b for b in self._backings.values() if b.domain == domain]

    @property
    def backings(self) -> list[Backing]:
        return list(self._backings.values())

    def backing(self, obj: object) -> Backing:
        """The placement state of ``obj`` (:class:`NotManaged` if it has none)."""
        try:
            return self._backings[obj]
        except KeyError:
            raise NotManaged(f"{obj!r} has no backing in {self.name}") from None

    def __contains__(self, obj: object) -> bool:
        return obj in self._backings

    def snapshot(self) -> tuple[object, ...]:
        """A comparable value of the whole state, for "rejected call changed nothing"
        checks."""
        return (
            self._tick,
            tuple(self._used.items()),
            tuple((id(b), b.resource, b.pin_count, b.last_use) for b in self._backings.values()),
            tuple(tuple(id(b) for b in self._lru[d]) for d in Domain),
        )

    # --- buffers -----------------------------------------------------------------------

    def add(
        self,
        obj: object,
        preferred: PlaceSpec,
        allowed: PlaceSpec | None = None,
        *,
        size: int | None = None,
    ) -> Backing:
        """Give ``obj`` placement state, not yet resident (``ttm_bo_init_reserved`` before
        its first validate).  ``size`` defaults to ``obj.size``; ``allowed`` to
        ``preferred``.  A GEM object's free hook releases the backing."""
        if obj in self._backings:
            raise NotManaged(f"{obj!r} already has a backing in {self.name}")
        sz = getattr(obj, "size", None) if size is None else size
        if not isinstance(sz, int) or isinstance(sz, bool):
            raise InvalidValue(f"size of {obj!r} must be an int, got {sz!r}")
        check_u64("size", sz)
        if sz == 0:
            raise InvalidValue(f"{obj!r}: zero-size buffer")
        pref = _as_places(preferred)
        allow = pref if allowed is None else _as_places(allowed)
        if not pref or not allow:
            raise InvalidValue(f"{obj!r}: empty preferred or allowed placement")
        b = Backing(obj, sz, pref, allow)
        self._backings[obj] = b
        hooks = getattr(obj, "free_hooks", None)
        if isinstance(hooks, list):
            hooks.append(self._on_free)
        return b

    def remove(self, obj: object) -> None:
        """Release ``obj``'s backing (``ttm_bo_put`` at the last reference); a pinned
        buffer is refused with ``-EBUSY``."""
        b = self.backing(obj)
        if b.pinned:
            raise Busy(f"{b!r} is pinned")
        self._release(b)

    def _on_free(self, obj: object) -> None:
        b = self._backings.get(obj)
        if b is None:
            return
        if b.pinned:
            if self.bus.route[Warning]:
                self.bus.emit(Warning(obj, f"freed while pinned x{b.pin_count} in {b.domain}"))
            b.pin_count = 0
        self._release(b)

    def _release(self, b: Backing) -> None:
        if b.resource is not None:
            self._used[b.resource.domain] -= b.size
            self._lru[b.resource.domain].pop(b, None)
            b.resource = None
        del self._backings[b.obj]
        hooks = getattr(b.obj, "free_hooks", None)
        if isinstance(hooks, list) and self._on_free in hooks:
            hooks.remove(self._on_free)

    # --- validate ----------------------------------------------------------------------

    def plan_validate(self, obj: object, where: PlaceSpec | None = None) -> tuple[Move, ...]:
        """What :meth:`validate` would do, without doing it (raises the same errors)."""
        b = self.backing(obj)
        return self._moves(self._plan(b, None if where is None else _as_places(where)))

    def validate(self, obj: object, where: PlaceSpec | None = None) -> tuple[Move, ...]:
        """Place ``obj`` in the first place of ``where`` that fits (``ttm_bo_validate``).

        Pass 1 skips FALLBACK places and never evicts; pass 2 skips DESIRED places and
        evicts LRU victims from non-SYSTEM domains until the buffer fits.  A backing that
        already matches a candidate of a pass stays put.  ``where=None`` means the
        buffer's preferred places, retried with its allowed places on ``-ENOMEM`` (amdgpu's
        CS retry); an empty list drops the backing.  Raises :class:`PinnedBuffer` if the
        buffer is pinned and does not match, :class:`NoMemory` when nothing fits.  Returns
        the moves done (victims first); the buffer becomes the most recently used.
        """
        b = self.backing(obj)
        plan = self._plan(b, None if where is None else _as_places(where))
        moves = self._apply(plan)
        self._touch(b)
        return moves

    def _plan(self, b: Backing, where: tuple[Place, ...] | None) -> _Plan:
        if where is not None:
            return self._plan_places(b, where)
        try:
            return self._plan_places(b, b.preferred)
        except NoMemory:
            if b.allowed == b.preferred:
                raise
            return self._plan_places(b, b.allowed)

    def _plan_places(self, b: Backing, where: tuple[Place, ...]) -> _Plan:
        if not where:  # ttm_bo_pipeline_gutting: drop the backing
            if b.pinned:
                raise PinnedBuffer(f"{b!r}: cannot drop the backing of a pinned buffer")
            return [(b, None, False)] if b.resource is not None else []
        for evicting in (False, True):
            skip = PlaceFlags.DESIRED if evicting else PlaceFlags.FALLBACK
            cands = [p for p in where if skip not in p.flags]
            if b.resource is not None and any(b.resource.compatible(p) for p in cands):
                return []
            if b.pinned:
                raise PinnedBuffer(
                    f"{b!r} is pinned in {b.resource} and does not match "
                    f"[{', '.join(map(str, where))}]"
                )
            for p in cands:
                if not self.present(p.domain) or (p.lpfn and p.lpfn * PAGE_SIZE < b.size):
                    continue
                used = dict(self._used)
                plan: _Plan = []
                if used[p.domain] + b.size > self.capacity[p.domain]:
                    if not evicting or p.domain == Domain.SYSTEM:
                        continue
                    victims = self._plan_evict(p.domain, b.size, b, used)
                    if victims is None:
                        continue
                    plan = victims
                return [*plan, (b, Resource.from_place(p), False)]
        raise NoMemory(
            f"{b!r}: no room in [{', '.join(map(str, where))}] "
            f"({', '.join(f'{d.name} free {self.free(d)}' for d in Domain)})"
        )

    def _plan_evict(
        self, domain: Domain, need: int, exclude: Backing, used: dict[Domain, int]
    ) -> _Plan | None:
        """Walk ``domain``'s LRU, planning victims' moves to the eviction table's first
        destination with room (no cascading), until ``need`` bytes fit; None if the LRU
        runs out or a victim has nowhere to go.  Updates ``used`` in place."""
        plan: _Plan = []
        for v in self._lru[domain]:
            if used[domain] + need <= self.capacity[domain]:
                break
            if v is exclude:
                continue
            dst = next(
                (
                    d
                    for d in self.eviction.get(domain, ())
                    if self.present(d) and used[d] + v.size <= self.capacity[d]
                ),
                None,
            )
            if dst is None:
                return None
            used[domain] -= v.size
            used[dst] += v.size
            plan.append((v, Resource(dst), True))
        if used[domain] + need > self.capacity[domain]:
            return None
        return plan

    def _moves(self, plan: _Plan) -> tuple[Move, ...]:
        out = []
        for b, dst, victim in plan:
            src = b.domain
            new = dst.domain if dst else None
            out.append(Move(b.obj, src, new, copy_bytes(src, new, b.size), victim))
        return tuple(out)

    def _apply(self, plan: _Plan) -> tuple[Move, ...]:
        moves = self._moves(plan)
        for (b, dst, _), move in zip(plan, moves, strict=True):
            old = b.resource
            for hook in list(self.on_move):
                hook(b, old, dst)
            if old is not None:
                self._used[old.domain] -= b.size
                self._lru[old.domain].pop(b, None)
            b.resource = dst
            if dst is not None:
                self._used[dst.domain] += b.size
                if not b.pinned:
                    self._tick += 1
                    b.last_use = self._tick
                    self._lru[dst.domain][b] = None
            if move.src is not None and move.dst is not None and self.bus.route[Migrated]:
                self.bus.emit(Migrated(b.obj, move.src.name, move.dst.name, move.bytes))
        return moves

    def _touch(self, b: Backing) -> None:
        if b.resource is None or b.pinned:
            return
        lru = self._lru[b.resource.domain]
        lru.pop(b, None)
        self._tick += 1
        b.last_use = self._tick
        lru[b] = None

    def touch(self, obj: object) -> None:
        """Mark ``obj`` used: move it to its LRU's tail (``ttm_bo_move_to_lru_tail``)."""
        self._touch(self.backing(obj))

    # --- pinning -----------------------------------------------------------------------

    def pin(self, obj: object, where: PlaceSpec) -> tuple[Move, ...]:
        """Pin ``obj`` in one of ``where`` (``amdgpu_bo_pin_restricted`` + ``ttm_bo_pin``).

        Already pinned: the current backing must match a place (:class:`PinnedBuffer`
        otherwise) and the count nests.  Not pinned: validate to ``where`` first (which
        may move it and evict others, or fail with :class:`NoMemory`), then pin; a pinned
        buffer leaves the LRU and never moves until its last unpin.
        """
        b = self.backing(obj)
        plan = self._plan_pin(b, _as_places(where))
        if b.pinned:
            b.pin_count += 1
            return ()
        moves = self._apply(plan)
        assert b.resource is not None
        b.pin_count = 1
        self._lru[b.resource.domain].pop(b, None)
        return moves

    def plan_pin(self, obj: object, where: PlaceSpec) -> tuple[Move, ...]:
        """What :meth:`pin` would move, without doing it (raises the same errors)."""
        return self._moves(self._plan_pin(self.backing(obj), _as_places(where)))

    def _plan_pin(self, b: Backing, wanted: tuple[Place, ...]) -> _Plan:
        if not wanted:
            raise InvalidValue(f"pin of {b!r} with an empty placement")
        if b.pinned:
            if b.resource is None or not any(b.resource.compatible(p) for p in wanted):
                raise PinnedBuffer(
                    f"{b!r} is pinned in {b.resource}, not in [{', '.join(map(str, wanted))}]"
                )
            return []
        return self._plan_places(b, wanted)

    def unpin(self, obj: object) -> None:
        """Drop one pin (``ttm_bo_unpin``); at zero the buffer rejoins its LRU's tail."""
        b = self.backing(obj)
        if not b.pinned:
            raise NotPinned(f"{b!r} is not pinned")
        b.pin_count -= 1
        if b.pin_count == 0:
            self._touch(b)

    # --- eviction ----------------------------------------------------------------------

    def evict(self, obj: object) -> tuple[Move, ...]:
        """Move ``obj`` to its domain's eviction placement (``ttm_bo_evict``): the first
        destination with room, no cascading.  No-op if it is not resident or in a domain
        with no eviction target; :class:`Busy` if pinned; :class:`NoMemory` if full."""
        b = self.backing(obj)
        if b.resource is None or not self.eviction.get(b.resource.domain):
            return ()
        if b.pinned:
            raise Busy(f"{b!r} is pinned")
        plan = self._plan_evict_all([b])
        return self._apply(plan)

    def evict_domain(self, domain: Domain) -> tuple[Move, ...]:
        """Evict every unpinned buffer of ``domain`` in LRU order
        (``ttm_resource_manager_evict_all``); all or nothing (:class:`NoMemory`)."""
        if not self.eviction.get(domain):
            return ()
        return self._apply(self._plan_evict_all(list(self._lru[domain])))

    def _plan_evict_all(self, victims: list[Backing]) -> _Plan:
        used = dict(self._used)
        plan: _Plan = []
        for v in victims:
            assert v.resource is not None
            src = v.resource.domain
            dst = next(
                (
                    d
                    for d in self.eviction.get(src, ())
                    if self.present(d) and used[d] + v.size <= self.capacity[d]
                ),
                None,
            )
            if dst is None:
                raise NoMemory(f"no room to evict {v!r} from {src.name}")
            used[src] -= v.size
            used[dst] += v.size
            plan.append((v, Resource(dst), True))
        return plan

    # --- invariants --------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Per domain: resident bytes equal the sum of resident sizes and fit the
        capacity; the LRU holds exactly the unpinned residents, in increasing stamp order;
        pinned buffers are resident."""
        sums = dict.fromkeys(Domain, 0)
        for obj, b in self._backings.items():
            if b.obj is not obj:
                raise AssertionError(f"{b!r} filed under {obj!r}")
            b.check_invariants()
            if b.resource is not None:
                sums[b.resource.domain] += b.size
        for d in Domain:
            if sums[d] != self._used[d]:
                raise AssertionError(f"{d.name}: accounted {self._used[d]} != resident {sums[d]}")
            if self._used[d] > self.capacity[d]:
                raise AssertionError(
                    f"{d.name}: {self._used[d]} B over capacity {self.capacity[d]}"
                )
            want = {b for b in self._backings.values() if b.domain == d and not b.pinned}
            lru = self._lru[d]
            if set(lru) != want:
                raise AssertionError(f"{d.name} LRU {list(lru)} != unpinned residents {want}")
            stamps = [b.last_use for b in lru]
            if any(x >= y for x, y in itertools.pairwise(stamps)):
                raise AssertionError(f"{d.name} LRU out of order: {stamps}")
            if stamps and stamps[-1] > self._tick:
                raise AssertionError(f"{d.name} LRU stamp {stamps[-1]} > tick {self._tick}")
