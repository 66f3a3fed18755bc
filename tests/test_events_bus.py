"""The event bus: per-type routes, listeners by kind, and per-type handler subscriptions."""

from __future__ import annotations

import pytest

from gpuvm.core.events import (
    Event,
    EventBus,
    EventLog,
    FrameEnd,
    Ioctl,
    Mapped,
    TlbInvalidated,
    Unmapped,
)


def test_handlers_get_their_own_type_in_subscription_order() -> None:
    bus = EventBus()
    seen: list[tuple[str, Event]] = []
    log = EventLog()
    bus.subscribe(log)
    unsubscribe = bus.subscribe_handlers(
        {
            Mapped: lambda e: seen.append(("map", e)),
            Event: lambda e: seen.append(("other", e)),
        }
    )
    m = Mapped("vm", 0x1000, 0x1000, None, 0)
    u = Unmapped("vm", 0x1000, 0x1000)
    bus.emit(m)
    bus.emit(u)
    assert seen == [("map", m), ("other", u)]
    assert log.events == [m, u]
    # The log subscribed first, so it comes first in every route.
    assert bus.route[Mapped][0] == log
    unsubscribe()
    bus.emit(m)
    assert len(seen) == 2 and log.events == [m, u, m]
    assert bus.listeners == [log]


def test_first_listed_type_wins_and_unlisted_types_are_not_routed() -> None:
    bus = EventBus()
    got: list[str] = []
    bus.subscribe_handlers(
        {Event: lambda e: got.append("base"), Mapped: lambda e: got.append("mapped")}
    )
    bus.emit(Mapped("vm", 0, 1, None, 0))
    assert got == ["base"]

    only = EventBus()
    only.subscribe_handlers({TlbInvalidated: lambda e: got.append("tlb")})
    assert not only.wants(Mapped) and only.wants(TlbInvalidated)
    only.emit(Ioctl("ATOMIC", None))
    assert got == ["base"]


def test_listeners_show_the_given_name_and_empty_mappings_are_refused() -> None:
    bus = EventBus()

    def counters(e: Event) -> None:
        return None

    bus.subscribe_handlers({FrameEnd: lambda e: None}, name=counters)
    assert bus.listeners == [counters] and bus.active
    with pytest.raises(ValueError):
        bus.subscribe_handlers({})
    assert bus.listeners == [counters]


def test_routes_are_rebuilt_after_each_subscription() -> None:
    bus = EventBus()
    assert bus.route[Mapped] == ()
    got: list[Event] = []
    bus.subscribe(got.append, [Mapped])
    assert bus.route[Mapped] == (got.append,)
    bus.subscribe_handlers({Mapped: got.append})
    assert len(bus.route[Mapped]) == 2


# --- events as values ---------------------------------------------------------------------


def test_events_are_frozen_values_of_their_own_type() -> None:
    """What ``attrs.frozen`` gave the events before they became plain (native) classes:
    equality and hash by fields within one type, never across types, the attrs repr, and
    no assignment."""
    from attrs.exceptions import FrozenInstanceError

    from gpuvm.core.events import VaInserted, VaRemoved, Warning

    vm, va = object(), object()
    a, b = VaInserted(vm, va), VaInserted(vm, va)
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    assert a != VaRemoved(vm, va)
    assert a != VaInserted(vm, object())
    assert Mapped("vm", 1, 2, None, 3) == Mapped("vm", 1, 2, None, 3)
    assert (
        repr(Mapped("vm", 1, 2, None, 3)) == "Mapped(vm='vm', addr=1, range=2, obj=None, offset=3)"
    )
    assert repr(Ioctl("MSM_GEM_NEW")) == "Ioctl(name='MSM_GEM_NEW', file=None)"
    assert Warning("here", "careful").kind == "Warning"
    with pytest.raises(FrozenInstanceError):
        a.vm = None  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        del a.va  # type: ignore[misc]


def test_fields_of_any_event_type() -> None:
    """``fields_of`` lists the fields of the core's events and of attrs event classes (the
    dma-buf ones, or a user's), in declaration order."""
    import attrs

    from gpuvm.core.events import fields_of
    from gpuvm.drm.dmabuf.attachment import AttachmentMapped

    @attrs.frozen(slots=True)
    class Mine(Event):
        x: int
        y: str = "y"

    assert fields_of(Mapped) == ("vm", "addr", "range", "obj", "offset")
    assert fields_of(FrameEnd) == ("index",)
    assert fields_of(AttachmentMapped) == ("att", "domain", "bytes", "p2p")
    assert fields_of(Mine) == ("x", "y")
    assert Mine(1) == Mine(1) and repr(Mine(1)) == "Mine(x=1, y='y')"


def test_interpreted_subclasses_of_events_are_routed_as_their_base() -> None:
    """A subclass of a concrete event (allowed in both builds) goes to the base type's
    handlers and keeps the base's fields, equality and repr."""

    class BigMapped(Mapped):
        pass

    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe_handlers({Mapped: seen.append})
    e = BigMapped("vm", 0, 2, None, 0)
    bus.emit(e)
    assert seen == [e] and e != Mapped("vm", 0, 2, None, 0)
    assert repr(e) == "BigMapped(vm='vm', addr=0, range=2, obj=None, offset=0)"
