"""The two sides of a dma-buf attachment and the attachment itself: the importer's
``struct dma_buf_attach_ops`` (:class:`ImporterOps`), the exporter's placement side
(:class:`Exporter`, the ``dma_buf_ops`` of a TTM driver), ``struct dma_buf_attachment``
(:class:`Attachment`), the events of ``dma_buf_map_attachment`` /
``dma_buf_unmap_attachment`` / ``dma_buf_move_notify``, and the answer of an access query
(:class:`AccessAnswer`).  The operations on them are :class:`~gpuvm.drm.dmabuf.DmaBuf`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import attrs

from gpuvm.core.errors import NotSupported
from gpuvm.core.events import Event
from gpuvm.drm.caps import DEFAULT_MAX_PHYS, DeviceCaps, ExporterRules, Topology
from gpuvm.drm.placement import Domain, MemoryManager, Resource

if TYPE_CHECKING:
    from gpuvm.drm.dmabuf.buffer import DmaBuf

__all__ = [
    "AccessAnswer",
    "AccessPath",
    "AttachView",
    "Attachment",
    "AttachmentMapped",
    "AttachmentUnmapped",
    "Exporter",
    "ImporterOps",
    "MoveNotified",
]

# --- events -----------------------------------------------------------------------------


@attrs.frozen(slots=True)
class AttachmentMapped(Event):
    """``dma_buf_map_attachment``: a DMA address list of ``bytes`` for ``att`` in
    ``domain`` (``"VRAM"`` means p2p bus addresses, else IOMMU/DMA-mapped pages)."""

    att: object
    domain: str
    bytes: int
    p2p: bool


@attrs.frozen(slots=True)
class AttachmentUnmapped(Event):
    """``dma_buf_unmap_attachment`` of one mapping of ``att``."""

    att: object
    bytes: int
    stale: bool
    """The mapping had been invalidated by ``move_notify`` (a re-map after a move)."""


@attrs.frozen(slots=True)
class MoveNotified(Event):
    """The exporter called ``move_notify`` on dynamic attachment ``att`` before moving
    the backing from ``src`` to ``dst`` (domain names)."""

    att: object
    src: str
    dst: str


# --- importer and exporter ops ------------------------------------------------------------


@attrs.frozen(slots=True)
class ImporterOps:
    """``struct dma_buf_attach_ops``: a dynamic importer's ``move_notify`` (renamed
    ``invalidate_mappings`` by the 2026 series) and ``allow_peer2peer``.  Without
    ``move_notify`` the attach fails ``-EINVAL``."""

    move_notify: Callable[[Attachment], None] | None
    allow_peer2peer: bool = False


@attrs.define(slots=True, eq=False, repr=False)
class Exporter:
    """The exporter side of a dma-buf with placement: its device caps, memory manager,
    behaviour (:class:`~gpuvm.drm.caps.ExporterRules`, default ``caps.exporter``), the p2p
    topology, and whether ``CONFIG_DMABUF_MOVE_NOTIFY`` is built (default off, as the stock
    ``drivers/dma-buf/Kconfig``: dynamic importers pin at map like static ones, and the
    exporter's pin never chooses VRAM)."""

    caps: DeviceCaps
    mem: MemoryManager
    rules: ExporterRules = attrs.field(kw_only=True)
    topology: Topology | None = attrs.field(default=None, kw_only=True)
    move_notify_built: bool = attrs.field(default=False, kw_only=True)
    ram_top: int = attrs.field(default=DEFAULT_MAX_PHYS, kw_only=True)
    """Highest RAM byte address where unconstrained system pages may land (a SoC with
    4 GiB of RAM: ``(1 << 32) - 1``)."""

    @rules.default
    def _rules_default(self) -> ExporterRules:
        if self.caps.exporter is None:
            raise NotSupported(f"{self.caps.name} has no exporter behaviour")
        return self.caps.exporter

    def __repr__(self) -> str:
        return f"Exporter({self.caps.name}, {self.rules.flavour})"

    def p2p(self, importer: DeviceCaps) -> bool:
        """Whether ``importer`` reaches this device's VRAM (``pci_p2pdma_distance`` or the
        XGMI hive check); the same device always does."""
        if importer.name == self.caps.name:
            return True
        if self.topology is None:
            return False
        if importer.name not in self.topology.locations:
            return False
        if self.caps.name not in self.topology.locations:
            return False
        return self.topology.p2p(importer, self.caps)


@attrs.frozen(slots=True)
class AttachView:
    """What the exporter knows of an attachment when placing the buffer: importer caps,
    ``peer2peer``, dynamic or static."""

    caps: DeviceCaps
    peer2peer: bool
    dynamic: bool


@attrs.define(slots=True, eq=False, repr=False)
class Attachment:
    """``struct dma_buf_attachment``: an importer device attached to a dma-buf.  It holds
    no dma-buf reference (the importer's buffer does, edge 4).

    ``ops`` is None for a static importer.  ``mappings`` counts live mappings; after a
    ``move_notify`` they are ``stale`` until the importer re-maps.  ``pins`` counts the
    importer's ``dma_buf_pin`` calls, ``map_pins`` the pins its static mappings hold,
    ``attach_pins`` the exporter's pin taken at attach (i915, GEM helpers); ``unnotified``
    the old resource a live mapping still points at after a move nobody was told about.
    ``maps``,
    ``unmaps`` and ``notifies`` are running totals for studies.  ``bo`` is the importer's
    buffer around this attachment (set by PRIME import)."""

    dmabuf: DmaBuf
    importer: object
    dynamic: bool = False
    peer2peer: bool = False
    caps: DeviceCaps | None = attrs.field(default=None, kw_only=True)
    ops: ImporterOps | None = attrs.field(default=None, kw_only=True)
    bo: object = attrs.field(default=None, kw_only=True)
    detached: bool = attrs.field(default=False, init=False)
    mappings: int = attrs.field(default=0, init=False)
    mapped_resource: Resource | None = attrs.field(default=None, init=False)
    stale: bool = attrs.field(default=False, init=False)
    pins: int = attrs.field(default=0, init=False)
    map_pins: int = attrs.field(default=0, init=False)
    attach_pins: int = attrs.field(default=0, init=False)
    maps: int = attrs.field(default=0, init=False)
    unmaps: int = attrs.field(default=0, init=False)
    notifies: int = attrs.field(default=0, init=False)
    unnotified: Resource | None = attrs.field(default=None, init=False)
    """Set when the exporter moved the backing away from this live mapping without calling
    ``move_notify`` (the exporter's ``obj->dma_buf`` was already cleared by
    ``drm_gem_object_exported_dma_buf_free``): the importer still DMAs to this old
    resource.  Cleared when the importer maps again or drops its last mapping."""

    def __repr__(self) -> str:
        kind = "dynamic" if self.dynamic else "static"
        p2p = ", p2p" if self.peer2peer else ""
        return f"Attachment({self.dmabuf.name} -> {self.importer!r}, {kind}{p2p})"

    @property
    def view(self) -> AttachView | None:
        return None if self.caps is None else AttachView(self.caps, self.peer2peer, self.dynamic)

    @property
    def usable(self) -> bool:
        """Mapped and not invalidated: the importer may access the buffer through it."""
        return self.mappings > 0 and not self.stale

    def state(self) -> tuple[object, ...]:
        return (
            repr(self),
            self.detached,
            self.mappings,
            self.mapped_resource,
            self.stale,
            self.pins,
            self.map_pins,
            self.attach_pins,
            self.maps,
            self.unmaps,
            self.notifies,
            self.unnotified,
        )


AccessPath = Literal["self", "p2p", "system"]


@attrs.frozen(slots=True)
class AccessAnswer:
    """Michel Dänzer's question as a value: can ``importer`` access the buffer while the
    exporter keeps its optimal placement (``domain``)?  ``path`` says how (``"self"``:
    the same device; ``"p2p"``: p2p bus addresses into VRAM; ``"system"``: DMA to system
    pages); ``read_gbps`` is the importer's read bandwidth there [M] (None: local
    memory); ``current_ok`` is what a NO_MOVE probe would see (the current backing)."""

    ok: bool
    importer: str
    domain: Domain
    path: AccessPath | None
    read_gbps: float | None
    current_ok: bool
    reason: str
