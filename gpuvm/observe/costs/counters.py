"""Cost counters: an observer that tallies page-table work per VM, per device, per frame.

:class:`CostCounters` subscribes to one or more :class:`~gpuvm.core.events.EventBus` objects
(a device's bus) and counts the events the model emits: ``Mapped`` (one map call each),
``Unmapped`` (one unmap call each), ``TlbInvalidated`` (a range invalidation or a
whole-context flush, by the VM's TLB kind), ``VmaCreated`` / ``VmaDestroyed``,
``Migrated``, ``Ioctl`` and ``FrameEnd``.  It never calls into the model and never raises
from its listener, so attaching it cannot change what the model does.  Because it counts
events only, a ``keep`` op (for which the core emits no page-table events) is charged
nothing.

Frames: ``with counters.frame(): ...`` records the counts of its body as one frame, and
so does each ``FrameEnd`` event emitted outside such a scope (the frame then runs from the
previous frame boundary).  Scopes do not nest.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Final, overload

from gpuvm.core.errors import InvalidValue
from gpuvm.core.events import (
    Event,
    EventBus,
    FrameEnd,
)
from gpuvm.observe.costs.counts import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_TLB_KIND,
    FRAMES,
    INT_FIELDS,
    TLB_KINDS,
    Counts,
    from_parts,
)
from gpuvm.observe.costs.errors import FrameScopeError
from gpuvm.observe.costs.tally import SlotKey as _SlotKey
from gpuvm.observe.costs.tally import VmState as _VmState
from gpuvm.observe.costs.tally import make_handlers

__all__ = ["CostCounters", "FrameScope"]

PageSizeSpec = int | Callable[[Any], int]
TlbKindSpec = str | Callable[[Any], str]

_NF: Final = len(INT_FIELDS)

# Slots past the fixed fields are allocated on demand, one per key (tally.SlotKey).
_Record = tuple[int, ...]


class FrameScope:
    """``with counters.frame() as f: ...``: the body's counts become one frame record,
    available as ``f.counts`` after the block (``None`` if the block raised: a scope left
    by an exception records no frame, and closes either way)."""

    __slots__ = ("counters", "counts", "index")

    def __init__(self, counters: CostCounters) -> None:
        self.counters = counters
        self.counts: Counts | None = None
        self.index = -1

    def __enter__(self) -> FrameScope:
        self.counters._open_scope(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.counters._close_scope(self, record=exc_type is None)


class _FrameView(Sequence[Counts]):
    """The frame records as :class:`Counts`, built on access (identical frames share one
    record and one :class:`Counts`)."""

    __slots__ = ("_counters",)

    def __init__(self, counters: CostCounters) -> None:
        self._counters = counters

    def __len__(self) -> int:
        return len(self._counters._frames)

    @overload
    def __getitem__(self, i: int) -> Counts: ...

    @overload
    def __getitem__(self, i: slice) -> list[Counts]: ...

    def __getitem__(self, i: int | slice) -> Counts | list[Counts]:
        c = self._counters
        if isinstance(i, slice):
            return [c._record_counts(r) for r in c._frames[i]]
        return c._record_counts(c._frames[i])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"<{len(self)} frame records>"


class CostCounters:
    """Counts page-table work from model events, per VM, per device and per frame.

    ``bus`` (one bus or several) is attached at once; :meth:`attach` adds more, and
    everything attached counts as one device.  A VM's page size and TLB kind are settled
    the first time one of its events arrives, in this order: :meth:`configure_vm`, then the
    VM's own ``page_size`` / ``tlb_kind`` attribute if it has one, then the ``page_size`` /
    ``tlb_kind`` given here (a value, or a function of the VM).  ``keep_frames=False``
    keeps no per-frame records (totals still count ``frames``), for very long runs.
    """

    __slots__ = (
        "_default_page_size",
        "_default_tlb_kind",
        "_dev",
        "_frames",
        "_handlers",
        "_interned",
        "_keep_frames",
        "_mark",
        "_overrides",
        "_record_cache",
        "_scope",
        "_slot_keys",
        "_slot_of",
        "_unsubscribe",
        "_vms",
        "warnings",
    )

    def __init__(
        self,
        bus: EventBus | Iterable[EventBus] | None = None,
        *,
        page_size: PageSizeSpec = DEFAULT_PAGE_SIZE,
        tlb_kind: TlbKindSpec = DEFAULT_TLB_KIND,
        keep_frames: bool = True,
    ) -> None:
        if not callable(page_size):
            _check_page_size(page_size)
        if not callable(tlb_kind):
            _check_tlb_kind(tlb_kind)
        self._default_page_size = page_size
        self._default_tlb_kind = tlb_kind
        self._keep_frames = keep_frames
        self._overrides: dict[int, tuple[object, int | None, str | None]] = {}
        self._unsubscribe: list[Callable[[], None]] = []
        self.warnings: list[str] = []
        self._scope: FrameScope | None = None
        self._slot_keys: list[_SlotKey] = []
        self._slot_of: dict[_SlotKey, int] = {}
        # These containers are captured by the listener and only ever changed in place.
        self._dev: list[int] = [0] * _NF
        self._vms: dict[int, _VmState] = {}
        self._frames: list[_Record] = []
        self._interned: dict[_Record, _Record] = {}
        self._record_cache: dict[_Record, Counts] = {}
        self._mark: list[int] = [0] * _NF
        self._handlers = dict(self._make_handlers())
        if bus is not None:
            for b in [bus] if isinstance(bus, EventBus) else list(bus):
                self.attach(b)

    # --- attaching ----------------------------------------------------------------------

    def attach(self, bus: EventBus) -> None:
        """Subscribe to ``bus``; its events count towards this device's totals.  Only the
        counted event types are routed here, so the model builds no reference or tree
        events for the counters."""
        self._unsubscribe.append(bus.subscribe_handlers(self._handlers))

    def detach(self) -> None:
        """Unsubscribe from every attached bus; the counts stay readable."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    def configure_vm(
        self, vm: object, *, page_size: int | None = None, tlb_kind: str | None = None
    ) -> None:
        """Fix ``vm``'s page size and/or TLB kind (``"per_page"`` or ``"context_flush"``),
        overriding its attributes and the defaults.  Events already counted keep the
        classification they got; later events use the new settings."""
        if page_size is not None:
            _check_page_size(page_size)
        if tlb_kind is not None:
            _check_tlb_kind(tlb_kind)
        _, old_ps, old_kind = self._overrides.get(id(vm), (vm, None, None))
        self._overrides[id(vm)] = (
            vm,
            page_size if page_size is not None else old_ps,
            tlb_kind if tlb_kind is not None else old_kind,
        )
        st = self._vms.get(id(vm))
        if st is not None:
            self._settle(st)

    # --- reading --------------------------------------------------------------------------

    def total(self) -> Counts:
        """Everything counted on the attached buses (the device scope); ``frames`` is the
        number of frames closed so far."""
        return self._counts(self._dev)

    def vm(self, vm: object) -> Counts:
        """The counts of one VM (zero if it emitted nothing counted).  ``frames`` is the
        device's, so per-frame averages of a VM's counts work."""
        st = self._vms.get(id(vm))
        if st is None:
            return Counts(frames=self._dev[FRAMES])
        return self._counts(st.acc, frames=self._dev[FRAMES])

    def per_vm(self) -> dict[object, Counts]:
        """Counts of every VM seen, in first-seen order, keyed by the VM object."""
        return {st.vm: self.vm(st.vm) for st in self._vms.values()}

    def page_size_of(self, vm: object) -> int:
        """The page size the counters use for ``vm``."""
        st = self._vms.get(id(vm))
        return st.page_size if st is not None else self._resolve(vm)[0]

    def tlb_kind_of(self, vm: object) -> str:
        """The TLB kind the counters use for ``vm``."""
        st = self._vms.get(id(vm))
        if st is not None:
            return "per_page" if st.per_page else "context_flush"
        return self._resolve(vm)[1]

    @property
    def frames(self) -> Sequence[Counts]:
        """Frame records in order, each with ``frames == 1`` (a read-only view)."""
        return _FrameView(self)

    def frames_sum(self, start: int = 0, stop: int | None = None) -> Counts:
        """The sum of frame records ``[start:stop]``, e.g. the steady state after
        ``start`` warm-up frames; its ``frames`` is the number summed."""
        tally: dict[_Record, int] = {}
        for rec in self._frames[start:stop]:
            tally[rec] = tally.get(rec, 0) + 1
        width = max((len(r) for r in tally), default=_NF)
        total = [0] * width
        for rec, k in tally.items():
            for i, x in enumerate(rec):
                if x:
                    total[i] += k * x
        return self._counts(total)

    def frame(self) -> FrameScope:
        """A scope whose body's counts become one frame record (see :class:`FrameScope`)."""
        return FrameScope(self)

    def reset(self) -> None:
        """Forget every count and frame record (settings made with :meth:`configure_vm`
        stay).  An open frame scope then counts from the reset."""
        self._dev[:] = [0] * len(self._dev)
        self._vms.clear()
        self._frames.clear()
        self._interned.clear()
        self._record_cache.clear()
        self._mark = list(self._dev)

    # --- frames ---------------------------------------------------------------------------

    def _open_scope(self, scope: FrameScope) -> None:
        if self._scope is not None:
            raise FrameScopeError(
                f"frame scopes do not nest: frame {self._scope.index} is still open"
            )
        self._scope = scope
        scope.index = self._dev[FRAMES]
        self._mark = list(self._dev)

    def _close_scope(self, scope: FrameScope, *, record: bool) -> None:
        if self._scope is not scope:
            return
        self._scope = None
        if record:
            scope.counts = self._record_counts(self._close_frame())
        else:
            self._mark = list(self._dev)

    def _close_frame(self) -> _Record:
        dev = self._dev
        dev[FRAMES] += 1
        cur = list(dev)
        mark = self._mark
        if len(mark) < len(cur):
            mark = mark + [0] * (len(cur) - len(mark))
        rec = tuple(map(operator.sub, cur, mark))
        self._mark = cur
        if self._keep_frames:
            rec = self._interned.setdefault(rec, rec)
            self._frames.append(rec)
        return rec

    def _record_counts(self, rec: _Record) -> Counts:
        c = self._record_cache.get(rec)
        if c is None:
            c = self._record_cache[rec] = self._counts(rec)
        return c

    def _counts(self, vec: Sequence[int], frames: int | None = None) -> Counts:
        fixed = list(vec[:_NF])
        if frames is not None:
            fixed[FRAMES] = frames
        by_size: dict[int, list[int]] = {}
        names: dict[str, int] = {}
        sizes: dict[tuple[str, int, int, int], list[int]] = {}
        for i in range(_NF, len(vec)):
            x = vec[i]
            if not x:
                continue
            what, key = self._slot_keys[i - _NF]
            if what == "ioctl":
                names[str(key)] = x
            elif what == "tlb":
                k = key  # (vm_kind, page_size, lo, hi)
                cell = sizes.setdefault(k, [0, 0])  # type: ignore[arg-type]
                cell[0] += x
                if k[2] == k[3]:  # type: ignore[index]
                    cell[1] += x * k[2]  # type: ignore[index]
            elif what == "tlb_pages":
                sizes.setdefault(key, [0, 0])[1] += x  # type: ignore[arg-type]
            else:
                cell = by_size.setdefault(int(key), [0, 0])  # type: ignore[call-overload]
                cell[what == "unmapped"] += x
        return from_parts(fixed, by_size, names, sizes)

    # --- slots and VM settings --------------------------------------------------------------

    def _slot(self, key: _SlotKey, acc: list[int] | None = None) -> int:
        i = self._slot_of.get(key)
        if i is None:
            i = self._slot_of[key] = _NF + len(self._slot_keys)
            self._slot_keys.append(key)
        for lst in (self._dev, acc):
            if lst is not None and len(lst) <= i:
                lst.extend([0] * (i + 1 - len(lst)))
        return i

    def _resolve(self, vm: object) -> tuple[int, str]:
        _, ps, kind = self._overrides.get(id(vm), (vm, None, None))
        if ps is None:
            ps = self._attr_or_default(vm, "page_size", self._default_page_size, _ok_page_size)
        if kind is None:
            kind = self._attr_or_default(vm, "tlb_kind", self._default_tlb_kind, _ok_tlb_kind)
        return ps, kind

    def _attr_or_default(
        self, vm: object, attr: str, default: Any, ok: Callable[[object], bool]
    ) -> Any:
        fallback = DEFAULT_PAGE_SIZE if attr == "page_size" else DEFAULT_TLB_KIND
        value = getattr(vm, attr, None)
        if value is not None:
            if ok(value):
                return value
            self.warnings.append(f"{vm!r}.{attr} = {value!r} is not valid; using defaults")
        if callable(default):
            try:
                value = default(vm)
            except Exception as exc:  # a listener must never raise into the model
                self.warnings.append(f"{attr} function failed for {vm!r}: {exc!r}")
                return fallback
            if ok(value):
                return value
            self.warnings.append(f"{attr} function gave {value!r} for {vm!r}; using {fallback}")
            return fallback
        return default

    def _settle(self, st: _VmState) -> None:
        ps, kind = self._resolve(st.vm)
        st.page_size = ps
        st.per_page = kind == "per_page"
        st.mapped_slot = self._slot(("mapped", ps), st.acc)
        st.unmapped_slot = self._slot(("unmapped", ps), st.acc)

    def _state(self, vm: object) -> _VmState:
        st = self._vms.get(id(vm))
        if st is None:
            st = _VmState(vm)
            self._settle(st)
            self._vms[id(vm)] = st
        return st

    # --- the listener (hot path) ------------------------------------------------------------

    def _make_handlers(self) -> tuple[tuple[type[Event], Callable[[Any], None]], ...]:
        """Build one handler per counted event type, which the bus calls directly (see
        :meth:`EventBus.subscribe_handlers`): the closures over the tallies of
        :func:`gpuvm.observe.costs.tally.make_handlers`, and ``FrameEnd``'s here."""

        def frame_end(e: FrameEnd) -> None:
            # Inside an explicit scope, the scope delimits the frame: not a boundary.
            if self._scope is None:
                self._close_frame()

        return (
            *make_handlers(self._dev, self._vms, self._state, self._slot),
            (FrameEnd, frame_end),
        )


def _ok_page_size(value: object) -> bool:
    return type(value) is int and value > 0 and value & (value - 1) == 0


def _ok_tlb_kind(value: object) -> bool:
    return value in TLB_KINDS


def _check_page_size(value: object) -> None:
    if not _ok_page_size(value):
        raise InvalidValue(f"page_size must be a power of two > 0, got {value!r}")


def _check_tlb_kind(value: object) -> None:
    if not _ok_tlb_kind(value):
        raise InvalidValue(f"tlb_kind must be one of {', '.join(TLB_KINDS)}; got {value!r}")
