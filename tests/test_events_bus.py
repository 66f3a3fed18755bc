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
