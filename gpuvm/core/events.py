"""Facts the model emits, and the bus observers subscribe to.

The model is clock-free: operations change state and emit events; cost counters, the
lifetime checker and trace recorders are observers.  Events are frozen values.  Emitting
is free when nobody listens, so the hot paths stay fast without observers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import attrs

Listener = Callable[["Event"], None]


@attrs.frozen(slots=True)
class Event:
    """Base class of every event."""

    @property
    def kind(self) -> str:
        return type(self).__name__


# --- VA tree and links (drm_gpuva_insert / remove / link / unlink) -------------------------


@attrs.frozen(slots=True)
class VaInserted(Event):
    vm: object
    va: object


@attrs.frozen(slots=True)
class VaRemoved(Event):
    vm: object
    va: object


@attrs.frozen(slots=True)
class VaLinked(Event):
    va: object
    vm_bo: object


@attrs.frozen(slots=True)
class VaUnlinked(Event):
    va: object
    vm_bo: object


@attrs.frozen(slots=True)
class VmBoCreated(Event):
    vm_bo: object


@attrs.frozen(slots=True)
class VmBoDestroyed(Event):
    vm_bo: object


@attrs.frozen(slots=True)
class VmBoZombie(Event):
    """A deferred put dropped a VmBo's last reference: it left its GEM's list (and, unless
    the VM is RESV_PROTECTED, the extobj / evict lists) and waits on the VM's deferred list
    for ``drm_gpuvm_bo_deferred_cleanup``, still holding its VM and buffer."""

    vm_bo: object


# --- page tables (what a driver does when it applies ops) -----------------------------------


@attrs.frozen(slots=True)
class Mapped(Event):
    """Page-table entries written for ``[addr, addr+range)`` (a map, or the non-kept part
    of one)."""

    vm: object
    addr: int
    range: int
    obj: object
    offset: int


@attrs.frozen(slots=True)
class Unmapped(Event):
    """Page-table entries cleared for ``[addr, addr+range)``."""

    vm: object
    addr: int
    range: int


@attrs.frozen(slots=True)
class TlbInvalidated(Event):
    """A TLB invalidation covering ``[addr, addr+range)``; whether it costs a per-page range
    invalidation or one whole-context flush is the cost preset's business."""

    vm: object
    addr: int
    range: int


# --- VMAs (legacy path and kernel-managed VMs) ----------------------------------------------


@attrs.frozen(slots=True)
class VmaCreated(Event):
    vm: object
    vma: object


@attrs.frozen(slots=True)
class VmaDestroyed(Event):
    vm: object
    vma: object


# --- references and lifetimes --------------------------------------------------------------


@attrs.frozen(slots=True)
class RefGot(Event):
    target: object
    holder: object


@attrs.frozen(slots=True)
class RefPut(Event):
    target: object
    holder: object


@attrs.frozen(slots=True)
class Freed(Event):
    """An object's last reference is gone and it was destroyed (GEM free, VM free, ...)."""

    obj: object


@attrs.frozen(slots=True)
class Warning(Event):
    """Something the kernel would WARN about and then carry on with."""

    where: object
    message: str


# --- eviction and validation ---------------------------------------------------------------


@attrs.frozen(slots=True)
class Evicted(Event):
    vm_bo: object
    evicted: bool


@attrs.frozen(slots=True)
class Validated(Event):
    vm_bo: object


# --- driver layer -------------------------------------------------------------------------


@attrs.frozen(slots=True)
class Ioctl(Event):
    """A userspace call into the driver (counted by cost observers)."""

    name: str
    file: object = None


@attrs.frozen(slots=True)
class Migrated(Event):
    """A buffer's backing moved between memory domains."""

    obj: object
    src: str
    dst: str
    bytes: int


@attrs.frozen(slots=True)
class FrameEnd(Event):
    """A workload finished one frame (a pageflip)."""

    index: int


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


@attrs.frozen(slots=True, eq=False)
class Subscription:
    """One subscriber: a ``listener`` for every event (``kinds is None``) or for ``kinds``
    and their subclasses; or, with ``handlers``, one callable per event type (an event goes
    to the handler of the first listed type it is an instance of), so the bus calls the
    right handler directly instead of a listener that dispatches on the type itself."""

    listener: Listener
    kinds: tuple[type, ...] | None = None
    handlers: tuple[tuple[type, Listener], ...] = ()

    def handler_for(self, kind: type) -> Listener | None:
        if self.handlers:
            for base, handler in self.handlers:
                if issubclass(kind, base):
                    return handler
            return None
        if self.kinds is None or issubclass(kind, self.kinds):
            return self.listener
        return None


@attrs.define(slots=True, eq=False)
class EventBus:
    """Fan-out of events to subscribers, in subscription order.

    A listener may subscribe to a few event types only; ``route[EventType]`` is the tuple of
    callables that want that type, so the model builds an event only when someone will
    receive it (``if bus.route[Mapped]: bus.emit(Mapped(...))``).
    """

    listeners: list[Listener] = attrs.field(factory=list)
    filters: list[Subscription] = attrs.field(factory=list)
    route: _Routes = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
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


@attrs.define(slots=True, eq=False)
class EventLog:
    """A listener that keeps every event, for tests and traces."""

    events: list[Event] = attrs.field(factory=list)

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, *kinds: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kinds)]

    def clear(self) -> None:
        self.events.clear()
