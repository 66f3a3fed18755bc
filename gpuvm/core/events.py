"""Facts the model emits, and the bus observers subscribe to.

The model is clock-free: operations change state and emit events; cost counters, the
lifetime checker and trace recorders are observers.  Events are frozen values.  Emitting
is free when nobody listens, so the hot paths stay fast without observers.

The events, the bus and the log are plain classes with ``__slots__`` and hand-written
``__init__`` / ``__eq__`` / ``__hash__`` / ``__repr__`` (what ``attrs.frozen`` generated
before: value equality within one event type, the same repr), the documented exception to
the house rule: the compiled build (``docs/compiled.md``) makes them native classes, so that
building and emitting an event from compiled code costs no interpreted call; mypyc cannot
compile attrs classes.  :func:`freeze` makes them frozen as attrs did.  :class:`Event`
allows subclasses of any kind, attrs ones included (``gpuvm.drm.dmabuf`` defines some);
:func:`fields_of` lists any event type's fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar, Final

import attrs

from gpuvm.core.frozen import freeze

try:  # mypyc reads the decorator at compile time; interpreted it does nothing
    from mypy_extensions import mypyc_attr
except ImportError:  # installed without mypy

    def mypyc_attr(*args: object, **kwargs: object) -> Callable[[type], type]:  # type: ignore[misc]
        return lambda cls: cls


Listener = Callable[["Event"], None]


@mypyc_attr(allow_interpreted_subclasses=True)
class Event:
    """Base class of every event.  A subclass lists its fields in ``_fields`` (in order; the
    repr, equality and hash use them), or is an attrs class (which brings its own)."""

    __slots__ = ()

    _fields: ClassVar[tuple[str, ...]] = ()

    @property
    def kind(self) -> str:
        return type(self).__name__

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Event)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self).__qualname__, *self._values()))

    def __repr__(self) -> str:
        body = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__qualname__.rsplit('>.', 1)[-1]}({body})"  # as attrs names it


# --- VA tree and links (drm_gpuva_insert / remove / link / unlink) -------------------------


@mypyc_attr(allow_interpreted_subclasses=True)
class VaInserted(Event):
    __slots__ = ("va", "vm")
    _fields: ClassVar[tuple[str, ...]] = ("vm", "va")

    vm: Final[object]
    va: Final[object]

    def __init__(self, vm: object, va: object) -> None:
        self.vm = vm
        self.va = va


@mypyc_attr(allow_interpreted_subclasses=True)
class VaRemoved(Event):
    __slots__ = ("va", "vm")
    _fields: ClassVar[tuple[str, ...]] = ("vm", "va")

    vm: Final[object]
    va: Final[object]

    def __init__(self, vm: object, va: object) -> None:
        self.vm = vm
        self.va = va


@mypyc_attr(allow_interpreted_subclasses=True)
class VaLinked(Event):
    __slots__ = ("va", "vm_bo")
    _fields: ClassVar[tuple[str, ...]] = ("va", "vm_bo")

    va: Final[object]
    vm_bo: Final[object]

    def __init__(self, va: object, vm_bo: object) -> None:
        self.va = va
        self.vm_bo = vm_bo


@mypyc_attr(allow_interpreted_subclasses=True)
class VaUnlinked(Event):
    __slots__ = ("va", "vm_bo")
    _fields: ClassVar[tuple[str, ...]] = ("va", "vm_bo")

    va: Final[object]
    vm_bo: Final[object]

    def __init__(self, va: object, vm_bo: object) -> None:
        self.va = va
        self.vm_bo = vm_bo


@mypyc_attr(allow_interpreted_subclasses=True)
class VmBoCreated(Event):
    __slots__ = ("vm_bo",)
    _fields: ClassVar[tuple[str, ...]] = ("vm_bo",)

    vm_bo: Final[object]

    def __init__(self, vm_bo: object) -> None:
        self.vm_bo = vm_bo


@mypyc_attr(allow_interpreted_subclasses=True)
class VmBoDestroyed(Event):
    __slots__ = ("vm_bo",)
    _fields: ClassVar[tuple[str, ...]] = ("vm_bo",)

    vm_bo: Final[object]

    def __init__(self, vm_bo: object) -> None:
        self.vm_bo = vm_bo


@mypyc_attr(allow_interpreted_subclasses=True)
class VmBoZombie(Event):
    """A deferred put dropped a VmBo's last reference: it left its GEM's list (and, unless
    the VM is RESV_PROTECTED, the extobj / evict lists) and waits on the VM's deferred list
    for ``drm_gpuvm_bo_deferred_cleanup``, still holding its VM and buffer."""

    __slots__ = ("vm_bo",)
    _fields: ClassVar[tuple[str, ...]] = ("vm_bo",)

    vm_bo: Final[object]

    def __init__(self, vm_bo: object) -> None:
        self.vm_bo = vm_bo


# --- page tables (what a driver does when it applies ops) -----------------------------------


@mypyc_attr(allow_interpreted_subclasses=True)
class Mapped(Event):
    """Page-table entries written for ``[addr, addr+range)`` (a map, or the non-kept part
    of one)."""

    __slots__ = ("addr", "obj", "offset", "range", "vm")
    _fields: ClassVar[tuple[str, ...]] = ("vm", "addr", "range", "obj", "offset")

    vm: Final[object]
    addr: Final[int]
    range: Final[int]
    obj: Final[object]
    offset: Final[int]

    def __init__(self, vm: object, addr: int, range: int, obj: object, offset: int) -> None:
        self.vm = vm
        self.addr = addr
        self.range = range
        self.obj = obj
        self.offset = offset


@mypyc_attr(allow_interpreted_subclasses=True)
class Unmapped(Event):
    """Page-table entries cleared for ``[addr, addr+range)``."""

    __slots__ = ("addr", "range", "vm")
    _fields: ClassVar[tuple[str, ...]] = ("vm", "addr", "range")

    vm: Final[object]
    addr: Final[int]
    range: Final[int]

    def __init__(self, vm: object, addr: int, range: int) -> None:
        self.vm = vm
        self.addr = addr
        self.range = range


@mypyc_attr(allow_interpreted_subclasses=True)
class TlbInvalidated(Event):
    """A TLB invalidation covering ``[addr, addr+range)``; whether it costs a per-page range
    invalidation or one whole-context flush is the cost preset's business."""

    __slots__ = ("addr", "range", "vm")
    _fields: ClassVar[tuple[str, ...]] = ("vm", "addr", "range")

    vm: Final[object]
    addr: Final[int]
    range: Final[int]

    def __init__(self, vm: object, addr: int, range: int) -> None:
        self.vm = vm
        self.addr = addr
        self.range = range


# --- VMAs (legacy path and kernel-managed VMs) ----------------------------------------------


@mypyc_attr(allow_interpreted_subclasses=True)
class VmaCreated(Event):
    __slots__ = ("vm", "vma")
    _fields: ClassVar[tuple[str, ...]] = ("vm", "vma")

    vm: Final[object]
    vma: Final[object]

    def __init__(self, vm: object, vma: object) -> None:
        self.vm = vm
        self.vma = vma


@mypyc_attr(allow_interpreted_subclasses=True)
class VmaDestroyed(Event):
    __slots__ = ("vm", "vma")
    _fields: ClassVar[tuple[str, ...]] = ("vm", "vma")

    vm: Final[object]
    vma: Final[object]

    def __init__(self, vm: object, vma: object) -> None:
        self.vm = vm
        self.vma = vma


# --- references and lifetimes --------------------------------------------------------------


@mypyc_attr(allow_interpreted_subclasses=True)
class RefGot(Event):
    __slots__ = ("holder", "target")
    _fields: ClassVar[tuple[str, ...]] = ("target", "holder")

    target: Final[object]
    holder: Final[object]

    def __init__(self, target: object, holder: object) -> None:
        self.target = target
        self.holder = holder


@mypyc_attr(allow_interpreted_subclasses=True)
class RefPut(Event):
    __slots__ = ("holder", "target")
    _fields: ClassVar[tuple[str, ...]] = ("target", "holder")

    target: Final[object]
    holder: Final[object]

    def __init__(self, target: object, holder: object) -> None:
        self.target = target
        self.holder = holder


@mypyc_attr(allow_interpreted_subclasses=True)
class Freed(Event):
    """An object's last reference is gone and it was destroyed (GEM free, VM free, ...)."""

    __slots__ = ("obj",)
    _fields: ClassVar[tuple[str, ...]] = ("obj",)

    obj: Final[object]

    def __init__(self, obj: object) -> None:
        self.obj = obj


@mypyc_attr(allow_interpreted_subclasses=True)
class Warning(Event):
    """Something the kernel would WARN about and then carry on with."""

    __slots__ = ("message", "where")
    _fields: ClassVar[tuple[str, ...]] = ("where", "message")

    where: Final[object]
    message: Final[str]

    def __init__(self, where: object, message: str) -> None:
        self.where = where
        self.message = message


# --- eviction and validation ---------------------------------------------------------------


@mypyc_attr(allow_interpreted_subclasses=True)
class Evicted(Event):
    __slots__ = ("evicted", "vm_bo")
    _fields: ClassVar[tuple[str, ...]] = ("vm_bo", "evicted")

    vm_bo: Final[object]
    evicted: Final[bool]

    def __init__(self, vm_bo: object, evicted: bool) -> None:
        self.vm_bo = vm_bo
        self.evicted = evicted


@mypyc_attr(allow_interpreted_subclasses=True)
class Validated(Event):
    __slots__ = ("vm_bo",)
    _fields: ClassVar[tuple[str, ...]] = ("vm_bo",)

    vm_bo: Final[object]

    def __init__(self, vm_bo: object) -> None:
        self.vm_bo = vm_bo


# --- driver layer -------------------------------------------------------------------------


@mypyc_attr(allow_interpreted_subclasses=True)
class Ioctl(Event):
    """A userspace call into the driver (counted by cost observers)."""

    __slots__ = ("file", "name")
    _fields: ClassVar[tuple[str, ...]] = ("name", "file")

    name: Final[str]
    file: Final[object]

    def __init__(self, name: str, file: object = None) -> None:
        self.name = name
        self.file = file


@mypyc_attr(allow_interpreted_subclasses=True)
class Migrated(Event):
    """A buffer's backing moved between memory domains."""

    __slots__ = ("bytes", "dst", "obj", "src")
    _fields: ClassVar[tuple[str, ...]] = ("obj", "src", "dst", "bytes")

    obj: Final[object]
    src: Final[str]
    dst: Final[str]
    bytes: Final[int]

    def __init__(self, obj: object, src: str, dst: str, bytes: int) -> None:
        self.obj = obj
        self.src = src
        self.dst = dst
        self.bytes = bytes


@mypyc_attr(allow_interpreted_subclasses=True)
class FrameEnd(Event):
    """A workload finished one frame (a pageflip)."""

    __slots__ = ("index",)
    _fields: ClassVar[tuple[str, ...]] = ("index",)

    index: Final[int]

    def __init__(self, index: int) -> None:
        self.index = index


freeze(
    VaInserted,
    VaRemoved,
    VaLinked,
    VaUnlinked,
    VmBoCreated,
    VmBoDestroyed,
    VmBoZombie,
    Mapped,
    Unmapped,
    TlbInvalidated,
    VmaCreated,
    VmaDestroyed,
    RefGot,
    RefPut,
    Freed,
    Warning,
    Evicted,
    Validated,
    Ioctl,
    Migrated,
    FrameEnd,
)


def fields_of(kind: type) -> tuple[str, ...]:
    """The field names of an event type, in order: its ``_fields``, or an attrs event
    class's attributes (for traces and reports that print any event)."""
    if attrs.has(kind):
        return tuple(a.name for a in attrs.fields(kind))
    fields: tuple[str, ...] = getattr(kind, "_fields", ())
    return fields


class _Routes(dict[type, tuple[Listener, ...]]):
    """Event type -> the callables that receive it, filled on first use of each type."""

    __slots__ = ("bus",)

    def __init__(self, bus: EventBus) -> None:
        super().__init__()
        self.bus = bus

    def __missing__(self, kind: type) -> tuple[Listener, ...]:
        route: list[Listener] = []
        for sub in self.bus.filters:
            handler = sub.handler_for(kind)
            if handler is not None:
                route.append(handler)
        self[kind] = found = tuple(route)
        return found


class Subscription:
    """One subscriber: a ``listener`` for every event (``kinds is None``) or for ``kinds``
    and their subclasses; or, with ``handlers``, one callable per event type (an event goes
    to the handler of the first listed type it is an instance of), so the bus calls the
    right handler directly instead of a listener that dispatches on the type itself.  A
    frozen value compared by identity."""

    __slots__ = ("handlers", "kinds", "listener")

    listener: Final[Listener]
    kinds: Final[tuple[type, ...] | None]
    handlers: Final[tuple[tuple[type, Listener], ...]]

    def __init__(
        self,
        listener: Listener,
        kinds: tuple[type, ...] | None = None,
        handlers: tuple[tuple[type, Listener], ...] = (),
    ) -> None:
        self.listener = listener
        self.kinds = kinds
        self.handlers = handlers

    def handler_for(self, kind: type) -> Listener | None:
        if self.handlers:
            for base, handler in self.handlers:
                if issubclass(kind, base):
                    return handler
            return None
        if self.kinds is None or issubclass(kind, self.kinds):
            return self.listener
        return None

    def __repr__(self) -> str:
        return (
            f"Subscription(listener={self.listener!r}, kinds={self.kinds!r}, "
            f"handlers={self.handlers!r})"
        )


freeze(Subscription)


class EventBus:
    """Fan-out of events to subscribers, in subscription order.

    A listener may subscribe to a few event types only; ``route[EventType]`` is the tuple of
    callables that want that type, so the model builds an event only when someone will
    receive it (``if bus.route[Mapped]: bus.emit(Mapped(...))``).  Compared by identity.
    """

    __slots__ = ("filters", "listeners", "route")

    listeners: list[Listener]
    filters: list[Subscription]
    route: _Routes

    def __init__(
        self, listeners: list[Listener] | None = None, filters: list[Subscription] | None = None
    ) -> None:
        self.listeners = [] if listeners is None else listeners
        self.filters = [] if filters is None else filters
        self.route = _Routes(self)
        self.filters.extend(Subscription(listener) for listener in self.listeners)

    def subscribe(
        self, listener: Listener, kinds: Iterable[type[Event]] | None = None
    ) -> Callable[[], None]:
        """Add ``listener`` for every event, or only for ``kinds`` (and their subclasses);
        returns a function that removes it."""
        return self._add(Subscription(listener, None if kinds is None else tuple(kinds)))

    def subscribe_handlers(
        self, handlers: Mapping[type[Event], Listener], *, name: Listener | None = None
    ) -> Callable[[], None]:
        """Add one handler per event type (checked in the mapping's order; an event goes to
        the first type it is an instance of): the bus routes each event straight to its
        handler.  ``name`` is what :attr:`listeners` shows for this subscriber (by
        default the first handler).  Returns a function that removes it."""
        pairs = tuple(handlers.items())
        if not pairs:
            raise ValueError("subscribe_handlers needs at least one handler")
        shown = name if name is not None else pairs[0][1]
        return self._add(Subscription(shown, tuple(k for k, _ in pairs), pairs))

    def _add(self, sub: Subscription) -> Callable[[], None]:
        self.listeners.append(sub.listener)
        self.filters.append(sub)
        self.route.clear()

        def unsubscribe() -> None:
            if sub in self.filters:
                self.filters.remove(sub)
                self.listeners.remove(sub.listener)
                self.route.clear()

        return unsubscribe

    def emit(self, event: Event) -> None:
        for listener in self.route[type(event)]:
            listener(event)

    def wants(self, kind: type[Event]) -> bool:
        """Whether any listener receives events of type ``kind``."""
        return bool(self.route[kind])

    @property
    def active(self) -> bool:
        return bool(self.listeners)

    def __repr__(self) -> str:
        return (
            f"EventBus(listeners={self.listeners!r}, filters={self.filters!r}, "
            f"route={self.route!r})"
        )


class EventLog:
    """A listener that keeps every event, for tests and traces.  Compared by identity."""

    __slots__ = ("events",)

    events: list[Event]

    def __init__(self, events: list[Event] | None = None) -> None:
        self.events = [] if events is None else events

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, *kinds: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kinds)]

    def clear(self) -> None:
        self.events.clear()

    def __repr__(self) -> str:
        return f"EventLog(events={self.events!r})"
