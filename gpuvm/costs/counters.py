"""Cost counters: an observer that tallies page-table work per VM, per device, per frame.

:class:`CostCounters` subscribes to one or more :class:`~gpuvm.events.EventBus` objects
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

from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Final

from gpuvm.costs.counts import (
    BYTES_MAPPED,
    BYTES_MIGRATED,
    BYTES_UNMAPPED,
    DEFAULT_PAGE_SIZE,
    DEFAULT_TLB_KIND,
    FRAMES,
    INT_FIELDS,
    IOCTLS,
    MAP_OPS,
    MIGRATIONS,
    PAGES_MAPPED,
    PAGES_UNMAPPED,
    TLB_FLUSH,
    TLB_FLUSH_PAGES,
    TLB_KINDS,
    TLB_RANGE,
    TLB_RANGE_PAGES,
    UNMAP_OPS,
    VMAS_CREATED,
    VMAS_DESTROYED,
    Counts,
    from_parts,
)
from gpuvm.costs.errors import FrameScopeError
from gpuvm.errors import InvalidValue
from gpuvm.events import (
    Event,
    EventBus,
    FrameEnd,
    Ioctl,
    Mapped,
    Migrated,
    TlbInvalidated,
    Unmapped,
    VmaCreated,
    VmaDestroyed,
)

__all__ = ["CostCounters", "FrameScope"]

PageSizeSpec = int | Callable[[Any], int]
TlbKindSpec = str | Callable[[Any], str]

_NF: Final = len(INT_FIELDS)

_Raw = tuple[list[int], dict[int, tuple[int, int]], dict[str, int]]


class _Acc:
    """A mutable tally laid out as :data:`INT_FIELDS`, plus per-page-size and per-ioctl
    cells."""

    __slots__ = ("by_size", "ioctl_names", "n")

    def __init__(self) -> None:
        self.n = [0] * _NF
        self.by_size: dict[int, list[int]] = {}
        self.ioctl_names: dict[str, int] = {}

    def raw(self) -> _Raw:
        return (
            list(self.n),
            {s: (c[0], c[1]) for s, c in self.by_size.items()},
            dict(self.ioctl_names),
        )

    def counts(self, frames: int | None = None) -> Counts:
        n = self.n if frames is None else [*self.n[:FRAMES], frames, *self.n[FRAMES + 1 :]]
        return from_parts(n, self.by_size, self.ioctl_names)

    def since(self, mark: _Raw) -> Counts:
        n0, bs0, names0 = mark
        n = [a - b for a, b in zip(self.n, n0, strict=True)]
        by_size: dict[int, list[int]] = {}
        for size, cell in self.by_size.items():
            m0, u0 = bs0.get(size, (0, 0))
            by_size[size] = [cell[0] - m0, cell[1] - u0]
        names = {k: v - names0.get(k, 0) for k, v in self.ioctl_names.items()}
        return from_parts(n, by_size, names)


class _VmState:
    """What the counters know about one VM: its page size, TLB kind and tallies."""

    __slots__ = ("acc", "dev_cell", "page_size", "per_page", "vm", "vm_cell")

    def __init__(self, vm: object, acc: _Acc) -> None:
        self.vm = vm
        self.acc = acc
        self.page_size = DEFAULT_PAGE_SIZE
        self.per_page = False
        self.vm_cell: list[int] = []
        self.dev_cell: list[int] = []


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
        "_dev_by_size",
        "_dispatch",
        "_frames",
        "_keep_frames",
        "_mark",
        "_overrides",
        "_scope",
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
        self._dispatch: dict[type, Callable[[Any], None] | None] = {}
        self._scope: FrameScope | None = None
        self._reset_tallies()
        if bus is not None:
            for b in [bus] if isinstance(bus, EventBus) else list(bus):
                self.attach(b)

    def _reset_tallies(self) -> None:
        self._dev = _Acc()
        self._dev_by_size = self._dev.by_size
        self._vms: dict[int, _VmState] = {}
        self._frames: list[Counts] = []
        self._mark = self._dev.raw()

    # --- attaching ----------------------------------------------------------------------

    def attach(self, bus: EventBus) -> None:
        """Subscribe to ``bus``; its events count towards this device's totals."""
        self._unsubscribe.append(bus.subscribe(self._on_event))

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
        return self._dev.counts()

    def vm(self, vm: object) -> Counts:
        """The counts of one VM (zero if it emitted nothing counted).  ``frames`` is the
        device's, so per-frame averages of a VM's counts work."""
        st = self._vms.get(id(vm))
        if st is None:
            return Counts(frames=self._dev.n[FRAMES])
        return st.acc.counts(self._dev.n[FRAMES])

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
        """Frame records in order (each with ``frames == 1``); do not mutate."""
        return self._frames

    def frames_sum(self, start: int = 0, stop: int | None = None) -> Counts:
        """The sum of frame records ``[start:stop]``, e.g. the steady state after
        ``start`` warm-up frames; its ``frames`` is the number summed."""
        return Counts.sum(self._frames[start:stop])

    def frame(self) -> FrameScope:
        """A scope whose body's counts become one frame record (see :class:`FrameScope`)."""
        return FrameScope(self)

    def reset(self) -> None:
        """Forget every count and frame record (settings made with :meth:`configure_vm`
        stay).  An open frame scope then counts from the reset."""
        self._reset_tallies()

    # --- frames ---------------------------------------------------------------------------

    def _open_scope(self, scope: FrameScope) -> None:
        if self._scope is not None:
            raise FrameScopeError(
                f"frame scopes do not nest: frame {self._scope.index} is still open"
            )
        self._scope = scope
        scope.index = self._dev.n[FRAMES]
        self._mark = self._dev.raw()

    def _close_scope(self, scope: FrameScope, *, record: bool) -> None:
        if self._scope is not scope:
            return
        self._scope = None
        if record:
            scope.counts = self._close_frame()
        else:
            self._mark = self._dev.raw()

    def _close_frame(self) -> Counts:
        dev = self._dev
        dev.n[FRAMES] += 1
        rec = dev.since(self._mark)
        self._mark = dev.raw()
        if self._keep_frames:
            self._frames.append(rec)
        return rec

    # --- VM settings ----------------------------------------------------------------------

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
        st.vm_cell = st.acc.by_size.setdefault(ps, [0, 0])
        st.dev_cell = self._dev_by_size.setdefault(ps, [0, 0])

    def _state(self, vm: object) -> _VmState:
        st = self._vms.get(id(vm))
        if st is None:
            st = _VmState(vm, _Acc())
            self._settle(st)
            self._vms[id(vm)] = st
        return st

    # --- the listener (hot path) ------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        cls = event.__class__
        try:
            handler = self._dispatch[cls]
        except KeyError:
            handler = self._dispatch[cls] = self._handler_for(cls)
        if handler is not None:
            handler(event)

    def _handler_for(self, cls: type) -> Callable[[Any], None] | None:
        table: tuple[tuple[type, Callable[[Any], None]], ...] = (
            (Mapped, self._mapped),
            (Unmapped, self._unmapped),
            (TlbInvalidated, self._tlb),
            (VmaCreated, self._vma_created),
            (VmaDestroyed, self._vma_destroyed),
            (Migrated, self._migrated),
            (Ioctl, self._ioctl),
            (FrameEnd, self._frame_end),
        )
        for base, handler in table:
            if issubclass(cls, base):
                return handler
        return None

    def _mapped(self, e: Mapped) -> None:
        st = self._vms.get(id(e.vm)) or self._state(e.vm)
        ps = st.page_size
        a = e.addr
        r = e.range
        n = (a + r + ps - 1) // ps - a // ps
        v = st.acc.n
        d = self._dev.n
        v[MAP_OPS] += 1
        v[PAGES_MAPPED] += n
        v[BYTES_MAPPED] += r
        d[MAP_OPS] += 1
        d[PAGES_MAPPED] += n
        d[BYTES_MAPPED] += r
        st.vm_cell[0] += n
        st.dev_cell[0] += n

    def _unmapped(self, e: Unmapped) -> None:
        st = self._vms.get(id(e.vm)) or self._state(e.vm)
        ps = st.page_size
        a = e.addr
        r = e.range
        n = (a + r + ps - 1) // ps - a // ps
        v = st.acc.n
        d = self._dev.n
        v[UNMAP_OPS] += 1
        v[PAGES_UNMAPPED] += n
        v[BYTES_UNMAPPED] += r
        d[UNMAP_OPS] += 1
        d[PAGES_UNMAPPED] += n
        d[BYTES_UNMAPPED] += r
        st.vm_cell[1] += n
        st.dev_cell[1] += n

    def _tlb(self, e: TlbInvalidated) -> None:
        st = self._vms.get(id(e.vm)) or self._state(e.vm)
        ps = st.page_size
        a = e.addr
        n = (a + e.range + ps - 1) // ps - a // ps
        v = st.acc.n
        d = self._dev.n
        if st.per_page:
            v[TLB_RANGE] += 1
            v[TLB_RANGE_PAGES] += n
            d[TLB_RANGE] += 1
            d[TLB_RANGE_PAGES] += n
        else:
            v[TLB_FLUSH] += 1
            v[TLB_FLUSH_PAGES] += n
            d[TLB_FLUSH] += 1
            d[TLB_FLUSH_PAGES] += n

    def _vma_created(self, e: VmaCreated) -> None:
        st = self._vms.get(id(e.vm)) or self._state(e.vm)
        st.acc.n[VMAS_CREATED] += 1
        self._dev.n[VMAS_CREATED] += 1

    def _vma_destroyed(self, e: VmaDestroyed) -> None:
        st = self._vms.get(id(e.vm)) or self._state(e.vm)
        st.acc.n[VMAS_DESTROYED] += 1
        self._dev.n[VMAS_DESTROYED] += 1

    def _migrated(self, e: Migrated) -> None:
        d = self._dev.n
        d[MIGRATIONS] += 1
        d[BYTES_MIGRATED] += e.bytes

    def _ioctl(self, e: Ioctl) -> None:
        dev = self._dev
        dev.n[IOCTLS] += 1
        names = dev.ioctl_names
        names[e.name] = names.get(e.name, 0) + 1

    def _frame_end(self, e: FrameEnd) -> None:
        # Inside an explicit scope the scope delimits the frame; the event is not a boundary.
        if self._scope is None:
            self._close_frame()


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
