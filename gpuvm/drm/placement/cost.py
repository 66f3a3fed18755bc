"""The migration cost model: a copy link's bandwidth, the bytes a move between
domains copies (what ``ttm_bo_move_memcpy`` or a driver's copy engine moves across PCIe),
and a tally of :class:`~gpuvm.core.events.Migrated` events in milliseconds.
"""

from __future__ import annotations

import attrs

from gpuvm.core.errors import InvalidValue
from gpuvm.core.events import Event, Migrated
from gpuvm.drm.placement.domains import Domain

__all__ = [
    "PCIE3_X16",
    "PCIE4_X16",
    "PCIE5_X16",
    "Link",
    "MigrationTally",
    "Move",
    "copy_bytes",
    "crosses_link",
    "migration_ms",
]


@attrs.frozen(slots=True)
class Link:
    """A copy link between VRAM and system memory with a practical bandwidth in bytes/s
    (about 80 % of the PCI-SIG per-direction rate of an x16 link)."""

    name: str
    bandwidth: float

    def ms(self, nbytes: int) -> float:
        """Milliseconds to copy ``nbytes`` over this link."""
        return nbytes / self.bandwidth * 1e3


PCIE3_X16 = Link("PCIe 3.0 x16", 12e9)
PCIE4_X16 = Link("PCIe 4.0 x16", 24e9)
PCIE5_X16 = Link("PCIe 5.0 x16", 48e9)


def migration_ms(nbytes: int, link: Link | float = PCIE4_X16) -> float:
    """Milliseconds to copy ``nbytes`` over ``link`` (a :class:`Link` or bytes/s); e.g.
    33,177,600 B at 24 GB/s = 1.38 ms."""
    bw = link.bandwidth if isinstance(link, Link) else float(link)
    if bw <= 0:
        raise InvalidValue(f"bandwidth must be positive, got {bw}")
    return nbytes / bw * 1e3


def copy_bytes(src: Domain | None, dst: Domain | None, size: int) -> int:
    """Bytes a move copies: a move touching VRAM copies the buffer once (amdgpu sends
    VRAM->SYSTEM through a TEMPORARY TT hop, still one copy); TT<->SYSTEM is a GART
    bind/unbind, no copy; a first allocation or a dropped backing copies nothing."""
    if src is None or dst is None:
        return 0
    return size if Domain.VRAM in (src, dst) else 0


def crosses_link(src: Domain | None, dst: Domain | None) -> bool:
    """True when a move's copy crosses the VRAM<->system link (not a VRAM-local blit)."""
    return src is not None and dst is not None and (src == Domain.VRAM) != (dst == Domain.VRAM)


@attrs.frozen(slots=True)
class Move:
    """One change of a buffer's backing done (or planned) by the manager; ``victim`` is
    True for buffers evicted to make room."""

    obj: object
    src: Domain | None
    dst: Domain | None
    bytes: int
    victim: bool = False


@attrs.define(slots=True, eq=False)
class MigrationTally:
    """An observer of :class:`~gpuvm.core.events.Migrated`: moves, bytes copied and bytes that
    crossed the link, and the milliseconds those take over ``link``.  Subscribe it with
    ``bus.subscribe(tally, [Migrated])``."""

    link: Link = PCIE4_X16
    moves: int = 0
    bytes: int = 0
    link_bytes: int = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, Migrated):
            self.moves += 1
            self.bytes += event.bytes
            if (event.src == "VRAM") != (event.dst == "VRAM"):
                self.link_bytes += event.bytes

    @property
    def ms(self) -> float:
        return self.link.ms(self.link_bytes)
