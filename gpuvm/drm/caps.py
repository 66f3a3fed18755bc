"""Device capabilities for buffer sharing, as frozen data, and the attach-time solver.

:class:`DeviceCaps` holds what a device brings to a dma-buf attachment (``struct device``
DMA parameters: ``dma_mask``, IOMMU, ``dma_parms`` segment limits; plus the DRM driver's
memory domains, scanout domains, contiguity needs, which PRIME import paths it
implements and how it behaves as an exporter, :class:`ExporterRules`).  :class:`Topology`
answers peer-to-peer reachability between two devices (``pci_p2pdma_distance``, or the
same XGMI hive for amdgpu).  :func:`reachable` and :func:`choose_backing` are the
attach-time constraint solver: the backing an exporter could pick so that every attachment
reaches it, or the reason none exists (the least-common constraint set of Sumit Semwal's
attacher-constraints RFC v2/v3, dri-devel, Jan 2015; mainline leaves it to the exporter's
``attach`` callback).  Nothing here has side effects.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import ClassVar, Literal, Protocol

import attrs

from gpuvm.core.errors import InvalidValue
from gpuvm.core.u64 import U64_MAX, check_u64
from gpuvm.drm.placement import AMDGPU_EVICTION, PAGE_SIZE, Domain, Place, PlaceFlags

__all__ = [
    "DEFAULT_MAX_PHYS",
    "EXPORTERS",
    "Attacher",
    "BackingChoice",
    "DeviceCaps",
    "ExporterRules",
    "ImportMode",
    "ImportPaths",
    "PciLocation",
    "Topology",
    "Unsat",
    "amdgpu_dgpu",
    "bochs",
    "choose_backing",
    "i915_igpu",
    "qxl",
    "reachable",
    "soc_display",
    "xe_igpu",
]

DEFAULT_MAX_PHYS = (1 << 36) - 1
"""Highest physical RAM address when nothing limits where pages come from [M]: a 64 GiB
desktop.  A device without IOMMU whose ``dma_mask`` is below it cannot reach arbitrary
system pages (swiotlb bounce in the kernel, refused here)."""

UINT_MAX = (1 << 32) - 1


class ImportPaths(enum.IntFlag):
    """The PRIME import paths a driver implements."""

    NONE = 0
    SELF = 1 << 0
    """Re-import of its own export: the same GEM, no attachment (``drm_gem_prime_import``
    self check; every GEM driver since 6.6)."""
    FOREIGN_SG = 1 << 1
    """``gem_prime_import_sg_table``: it can import another device's buffer.  Missing on
    VRAM-only devices (bochs, qxl): such imports fail ``-EINVAL``."""
    DYNAMIC = 1 << 2
    """Importer ops with ``move_notify``: a dynamic attachment that maps on first use and
    lets the exporter move the buffer (amdgpu, xe).  Without it imports are static."""


ImportMode = Literal["self", "dynamic", "static"]


def _dom_set(value: Iterable[Domain | int]) -> frozenset[Domain]:
    try:
        return frozenset(Domain(d) for d in value)
    except ValueError:
        raise InvalidValue(f"not memory domains: {value!r}") from None


def _u64(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    check_u64(attribute.name, value)


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    check_u64(attribute.name, value)
    if value == 0:
        raise InvalidValue(f"{attribute.name} must be positive")


@attrs.frozen(slots=True)
class ExporterRules:
    """How a driver behaves as a dma-buf exporter (``amdgpu_dma_buf.c``, ``xe_dma_buf.c``,
    ``i915_gem_dmabuf.c``, the GEM shmem / DMA helpers: attach, map, pin, move), as data for
    the dma-buf layer to interpret."""

    flavour: str
    dynamic: bool
    """Implements ``pin``/``unpin``: a dynamic exporter that may move its buffers.  Without
    them (i915, GEM helpers) ``dma_buf_pin`` does nothing, ``dma_buf_pin_on_map`` never
    pins and the exporter never calls ``dma_buf_move_notify``."""
    pin_all_p2p: Domain
    """Where ``dma_buf_pin`` freezes the backing when every attachment is p2p (only with
    ``CONFIG_DMABUF_MOVE_NOTIFY``: without it ``amdgpu_dma_buf_pin`` masks VRAM out and
    ``xe_dma_buf_pin`` disallows it, so ``pin_otherwise`` applies)."""
    pin_otherwise: Domain
    """Where it freezes it when some attachment is not p2p."""
    map_non_p2p: Domain
    """Where mapping for a non-p2p attachment moves an unpinned backing."""
    p2p_keeps_vram: bool
    """A p2p attachment maps VRAM in place (p2p bus addresses)."""
    pins_at_attach: bool
    """Migrates and pins at attach until detach (i915, GEM helpers)."""
    refuses_non_system: bool
    """A non-p2p attach of a buffer that cannot live in system memory fails
    ``-EOPNOTSUPP`` (xe, i915)."""
    notify_from_system: bool
    """``move_notify`` also for moves out of SYSTEM (amdgpu only notifies when the
    backing leaves a non-SYSTEM domain)."""
    repromote_while_attached: bool
    """Command submission moves an exported buffer back to ``preferred`` while it has
    attachments (amdgpu stopped that in Feb 2020 against ping-pong)."""
    contiguous_backing: bool = False
    """The backing is always one contiguous range (GEM DMA helper)."""
    pin_migrates_to_tt: bool = False
    """The exporter's pin migrates the buffer to TT first (``xe_dma_buf_pin`` ->
    ``xe_bo_migrate(bo, XE_PL_TT)``), which refuses a buffer with no system placement (a
    VRAM-only buffer: ``-EINVAL``)."""
    imported_pin_domains: frozenset[Domain] = attrs.field(
        default=frozenset({Domain.TT}), converter=_dom_set
    )
    """Domains in which the driver can pin a buffer it imported (amdgpu: GTT only)."""
    eviction: tuple[tuple[Domain, tuple[Domain, ...]], ...] = tuple(AMDGPU_EVICTION.items())
    """The eviction table for :class:`~gpuvm.drm.placement.MemoryManager`."""

    def eviction_table(self) -> dict[Domain, tuple[Domain, ...]]:
        return dict(self.eviction)


EXPORTERS: dict[str, ExporterRules] = {
    "amdgpu": ExporterRules(
        "amdgpu",
        dynamic=True,
        pin_all_p2p=Domain.VRAM,  # 6.15+ (f5e7fabd1f5c); GTT before
        pin_otherwise=Domain.TT,
        map_non_p2p=Domain.TT,
        p2p_keeps_vram=True,
        pins_at_attach=False,
        refuses_non_system=False,
        notify_from_system=False,
        repromote_while_attached=False,
    ),
    "xe": ExporterRules(
        "xe",
        dynamic=True,
        pin_all_p2p=Domain.TT,  # VRAM in newer trees
        pin_otherwise=Domain.TT,
        map_non_p2p=Domain.TT,
        p2p_keeps_vram=True,
        pins_at_attach=False,
        refuses_non_system=True,
        notify_from_system=True,
        repromote_while_attached=True,  # [M]
        pin_migrates_to_tt=True,
        eviction=((Domain.VRAM, (Domain.SYSTEM,)), (Domain.TT, (Domain.SYSTEM,))),
    ),
    "i915": ExporterRules(
        "i915",
        dynamic=False,  # i915_dmabuf_ops has no .pin/.unpin: never calls dma_buf_move_notify
        pin_all_p2p=Domain.SYSTEM,
        pin_otherwise=Domain.SYSTEM,
        map_non_p2p=Domain.SYSTEM,
        p2p_keeps_vram=False,
        pins_at_attach=True,
        refuses_non_system=True,
        notify_from_system=False,
        repromote_while_attached=True,  # [M]
        imported_pin_domains=frozenset({Domain.SYSTEM, Domain.TT}),
        eviction=((Domain.VRAM, (Domain.SYSTEM,)),),
    ),
    "gem-shmem": ExporterRules(
        "gem-shmem",
        dynamic=False,
        pin_all_p2p=Domain.SYSTEM,
        pin_otherwise=Domain.SYSTEM,
        map_non_p2p=Domain.SYSTEM,
        p2p_keeps_vram=False,
        pins_at_attach=True,
        refuses_non_system=False,
        notify_from_system=False,
        repromote_while_attached=False,
        imported_pin_domains=frozenset({Domain.SYSTEM}),
        eviction=(),
    ),
    "gem-dma": ExporterRules(
        "gem-dma",
        dynamic=False,
        pin_all_p2p=Domain.SYSTEM,
        pin_otherwise=Domain.SYSTEM,
        map_non_p2p=Domain.SYSTEM,
        p2p_keeps_vram=False,
        pins_at_attach=True,
        refuses_non_system=False,
        notify_from_system=False,
        repromote_while_attached=False,
        contiguous_backing=True,
        imported_pin_domains=frozenset({Domain.SYSTEM}),
        eviction=(),
    ),
}
"""Exporter behaviours by flavour: ``amdgpu``, ``xe``, ``i915``, ``gem-shmem``,
``gem-dma``."""


@attrs.frozen(slots=True)
class DeviceCaps:
    """What one DRM device can do with shared buffers (frozen; compared by value, so give
    each device in a :class:`Topology` its own ``name``)."""

    name: str
    driver: str
    domains: frozenset[Domain] = attrs.field(converter=_dom_set)
    """Memory domains the device has (an iGPU has no VRAM)."""
    scanout_domains: frozenset[Domain] = attrs.field(converter=_dom_set)
    """Domains its display engine scans out of (discrete: VRAM; APU/SoC: TT/SYSTEM)."""
    dma_mask: int = attrs.field(default=U64_MAX, validator=_u64)
    has_iommu: bool = False
    max_segment_size: int = attrs.field(default=UINT_MAX, validator=_positive)
    max_segment_count: int | None = None
    """Not a kernel field (Rob Clark's 2012 proposal); None: unlimited."""
    seg_boundary: int = attrs.field(default=U64_MAX, validator=_u64)
    """``segment_boundary_mask`` (recorded; the solver does not use it)."""
    iommu_page_sizes: frozenset[int] = frozenset({PAGE_SIZE})
    needs_contiguous: bool = False
    """The importer rejects a DMA address list that is not one contiguous range (GEM DMA
    helper); irrelevant behind an IOMMU."""
    import_paths: ImportPaths = ImportPaths.SELF | ImportPaths.FOREIGN_SG
    allow_peer2peer: bool = False
    """The importer accepts p2p (VRAM bus) addresses (``importer_ops.allow_peer2peer``)."""
    maps_at_import: bool = False
    """A static import maps (and so pins and migrates) at import time (generic helper);
    False: maps on first use (dynamic importers, i915)."""
    integrated: bool = False
    """Shares system memory with the CPU (reads it at DRAM, not PCIe, bandwidth)."""
    exporter: ExporterRules | None = None
    """Exporter behaviour, None if the driver cannot export its buffers usefully."""
    rfc_no_move: bool = False
    """The device's kernel carries Simon Ser's NO_MOVE RFC (Oct 2024): PRIME_FD_TO_HANDLE
    checks ``flags`` and honours ``DRM_PRIME_FD_TO_HANDLE_NO_MOVE``.  Off (mainline):
    ``drm_prime_fd_to_handle_ioctl`` ignores ``args->flags``.  Results using it are RFC."""

    def __attrs_post_init__(self) -> None:
        if not self.scanout_domains <= self.domains:
            raise InvalidValue(f"{self.name}: scanout domains outside the device's domains")
        if self.max_segment_count is not None:
            _positive(self, attrs.fields(DeviceCaps).max_segment_size, self.max_segment_count)
        for size in self.iommu_page_sizes:
            if size <= 0 or size & (size - 1):
                raise InvalidValue(f"{self.name}: IOMMU page size {size} not a power of two")

    @property
    def vram_only(self) -> bool:
        """Scans out only from VRAM and cannot import foreign (system-memory) buffers."""
        return self.scanout_domains == {Domain.VRAM} and not self.can_import_foreign

    @property
    def can_import_foreign(self) -> bool:
        return ImportPaths.FOREIGN_SG in self.import_paths

    def import_mode(self, self_import: bool) -> ImportMode | None:
        """How an import would attach: ``"self"`` (same device and driver), ``"dynamic"``
        or ``"static"``; None when the driver lacks the path (``-EINVAL``)."""
        if self_import:
            return "self" if ImportPaths.SELF in self.import_paths else None
        if not self.can_import_foreign:
            return None
        return "dynamic" if ImportPaths.DYNAMIC in self.import_paths else "static"


# --- presets [M] ----------------------------------------------------------------------------


def amdgpu_dgpu(name: str = "dgpu") -> DeviceCaps:
    """A discrete amdgpu: VRAM scanout, 44-bit DMA without IOMMU translation, dynamic
    p2p-capable importer, amdgpu exporter."""
    return DeviceCaps(
        name,
        "amdgpu",
        domains={Domain.SYSTEM, Domain.TT, Domain.VRAM},
        scanout_domains={Domain.VRAM},
        dma_mask=(1 << 44) - 1,
        import_paths=ImportPaths.SELF | ImportPaths.FOREIGN_SG | ImportPaths.DYNAMIC,
        allow_peer2peer=True,
        exporter=EXPORTERS["amdgpu"],
    )


def i915_igpu(name: str = "igpu") -> DeviceCaps:
    """An Intel iGPU on i915: shares system memory, behind an IOMMU, static importer that
    maps lazily, i915 exporter."""
    return DeviceCaps(
        name,
        "i915",
        domains={Domain.SYSTEM, Domain.TT},
        scanout_domains={Domain.TT},
        dma_mask=(1 << 39) - 1,
        has_iommu=True,
        integrated=True,
        exporter=EXPORTERS["i915"],
    )


def xe_igpu(name: str = "igpu") -> DeviceCaps:
    """The same iGPU on xe: a dynamic importer."""
    return attrs.evolve(
        i915_igpu(name),
        driver="xe",
        import_paths=ImportPaths.SELF | ImportPaths.FOREIGN_SG | ImportPaths.DYNAMIC,
        allow_peer2peer=True,
        exporter=EXPORTERS["xe"],
    )


def bochs(name: str = "bochs") -> DeviceCaps:
    """A VRAM-only virtual display (GEM VRAM helper): no foreign import, no export."""
    return DeviceCaps(
        name,
        "bochs",
        domains={Domain.SYSTEM, Domain.VRAM},
        scanout_domains={Domain.VRAM},
        dma_mask=UINT_MAX,
        import_paths=ImportPaths.SELF,
    )


def qxl(name: str = "qxl") -> DeviceCaps:
    """qxl: VRAM-only like bochs (its 2019 import stubs returned ``-ENOSYS``)."""
    return attrs.evolve(bochs(name), driver="qxl")


def soc_display(name: str = "display") -> DeviceCaps:
    """A SoC display controller on the GEM DMA helper: 32-bit DMA, no IOMMU, needs
    contiguous buffers, static import that maps at import time."""
    return DeviceCaps(
        name,
        "rockchip",
        domains={Domain.SYSTEM},
        scanout_domains={Domain.SYSTEM},
        dma_mask=UINT_MAX,
        needs_contiguous=True,
        maps_at_import=True,
        integrated=True,
        exporter=EXPORTERS["gem-dma"],
    )


# --- peer-to-peer topology ------------------------------------------------------------------


@attrs.frozen(slots=True)
class PciLocation:
    """Where a device sits: PCI root complex (None: not a PCI device, e.g. a SoC block),
    PCIe switch it is behind, XGMI hive."""

    root: str | None = None
    switch: str | None = None
    hive: str | None = None


P2pPath = Literal["self", "xgmi", "pci-switch", "pci-host-bridge"]


class Topology:
    """Which devices can reach each other's VRAM (``pci_p2pdma_distance`` plus amdgpu's
    XGMI same-hive rule).  Devices behind the same PCIe switch can; devices on the same
    root complex only if its host bridge forwards p2p (``host_bridge_p2p``)."""

    def __init__(self, *, host_bridge_p2p: Iterable[str] = ()) -> None:
        self.locations: dict[str, PciLocation] = {}
        self.host_bridge_p2p = frozenset(host_bridge_p2p)

    def add(
        self,
        dev: DeviceCaps | str,
        *,
        root: str | None = None,
        switch: str | None = None,
        hive: str | None = None,
    ) -> PciLocation:
        """Register ``dev`` (its name must be new here)."""
        name = dev.name if isinstance(dev, DeviceCaps) else dev
        if name in self.locations:
            raise InvalidValue(f"device {name!r} is already in the topology")
        if switch is not None and root is None:
            raise InvalidValue(f"device {name!r}: a PCIe switch needs a root complex")
        loc = PciLocation(root, switch, hive)
        self.locations[name] = loc
        return loc

    def _loc(self, dev: DeviceCaps | str) -> tuple[str, PciLocation]:
        name = dev.name if isinstance(dev, DeviceCaps) else dev
        try:
            return name, self.locations[name]
        except KeyError:
            raise InvalidValue(f"device {name!r} is not in the topology") from None

    def path(self, a: DeviceCaps | str, b: DeviceCaps | str) -> P2pPath | None:
        """How ``a`` reaches ``b``'s VRAM, or None if it cannot."""
        na, la = self._loc(a)
        nb, lb = self._loc(b)
        if na == nb:
            return "self"
        if la.hive is not None and la.hive == lb.hive:
            return "xgmi"
        if la.root is None or la.root != lb.root:
            return None
        if la.switch is not None and la.switch == lb.switch:
            return "pci-switch"
        return "pci-host-bridge" if la.root in self.host_bridge_p2p else None

    def p2p(self, a: DeviceCaps | str, b: DeviceCaps | str) -> bool:
        return self.path(a, b) is not None

    def check_invariants(self) -> None:
        for name, loc in self.locations.items():
            if loc.switch is not None and loc.root is None:
                raise AssertionError(f"{name}: switch {loc.switch} without a root complex")


# --- the attach-time solver -----------------------------------------------------------------


class AttachView(Protocol):
    """What the solver needs from an attachment: the importer's caps and whether the
    attachment is peer-to-peer."""

    @property
    def caps(self) -> DeviceCaps: ...

    @property
    def peer2peer(self) -> bool: ...


@attrs.frozen(slots=True)
class Attacher:
    """A minimal :class:`AttachView` value."""

    caps: DeviceCaps
    peer2peer: bool = False


def reachable(
    caps: DeviceCaps,
    domain: Domain,
    p2p: bool,
    *,
    max_phys: int = DEFAULT_MAX_PHYS,
    contiguous: bool = False,
) -> bool:
    """Whether an importer with ``caps`` can DMA to a backing in ``domain``:
    VRAM needs a p2p attachment; system pages (TT or SYSTEM) need an IOMMU, or pages
    below its ``dma_mask`` (``max_phys`` is the backing's highest byte address) and,
    if it needs contiguity, a contiguous backing."""
    if domain == Domain.VRAM:
        return p2p
    if caps.has_iommu:
        return True
    return max_phys <= caps.dma_mask and (not caps.needs_contiguous or contiguous)


@attrs.frozen(slots=True)
class BackingChoice:
    """A backing every attachment reaches: ``place`` to validate the exporter's buffer
    to, and why it has its constraints."""

    domain: Domain
    place: Place
    contiguous: bool
    max_phys: int | None
    """Highest byte address allowed (lowest ``dma_mask`` among non-IOMMU attachers), None
    when unconstrained."""
    alignment: int
    """Largest IOMMU page size common to all IOMMU attachers (chunk alignment)."""
    why: tuple[str, ...] = ()

    ok: ClassVar[bool] = True


@attrs.frozen(slots=True)
class Unsat:
    """No backing suits every attachment; ``reason`` says why, ``tried`` per domain."""

    reason: str
    tried: tuple[str, ...] = ()

    ok: ClassVar[bool] = False


def choose_backing(
    attachments: Iterable[AttachView],
    exporter_pref: Sequence[Domain],
    *,
    size: int,
    ram_top: int = DEFAULT_MAX_PHYS,
) -> BackingChoice | Unsat:
    """The first domain of ``exporter_pref`` that every attachment reaches, with the
    least-common constraints of the attachers.

    Contiguous if a non-IOMMU attacher needs it, or if page-sized chunks would exceed a
    non-IOMMU attacher's segment count; system-memory backing limited to the lowest
    ``dma_mask`` among non-IOMMU attachers; UNSAT if a non-IOMMU attacher's
    ``max_segment_size * max_segment_count < size``.
    """
    check_u64("size", size)
    if size == 0:
        raise InvalidValue("choose_backing of a zero-size buffer")
    atts = list(attachments)
    direct = [a for a in atts if not a.caps.has_iommu]
    for a in direct:
        c = a.caps
        if c.max_segment_count is not None and c.max_segment_size * c.max_segment_count < size:
            return Unsat(
                f"{c.name}: max_segment_size {c.max_segment_size} x max_segment_count "
                f"{c.max_segment_count} < size {size}"
            )
    why: list[str] = []
    contiguous = False
    for a in direct:
        if a.caps.needs_contiguous:
            contiguous = True
            why.append(f"contiguous: {a.caps.name} needs contiguous DMA and has no IOMMU")
    pages = -(-size // PAGE_SIZE)
    for a in direct:
        if a.caps.max_segment_count is not None and pages > a.caps.max_segment_count:
            contiguous = True
            why.append(
                f"contiguous: {pages} pages exceed {a.caps.name}'s {a.caps.max_segment_count}"
                " segments"
            )
    mmu = [set(a.caps.iommu_page_sizes) for a in atts if a.caps.has_iommu]
    common = set.intersection(*mmu) if mmu else set()
    alignment = max(common, default=PAGE_SIZE)
    flags = PlaceFlags.CONTIGUOUS if contiguous else PlaceFlags.NONE
    tried: list[str] = []
    for dom in exporter_pref:
        dom = Domain(dom)
        if dom == Domain.VRAM:
            bad = [a.caps.name for a in atts if not a.peer2peer]
            if bad:
                tried.append(f"VRAM: not peer-to-peer for {', '.join(bad)}")
                continue
            return BackingChoice(dom, Place(dom, flags), contiguous, None, alignment, tuple(why))
        limit = min((a.caps.dma_mask for a in direct), default=None)
        lim_why = list(why)
        if limit is not None and limit < ram_top:
            if limit + 1 < size:
                tried.append(f"{dom.name}: dma_mask {limit:#x} cannot hold {size} B")
                continue
            low = min(direct, key=lambda a: a.caps.dma_mask).caps.name
            lim_why.append(f"limit: below {limit + 1:#x} for {low} (no IOMMU)")
            place = Place(dom, flags, lpfn=(limit + 1) // PAGE_SIZE)
        else:
            limit = None
            place = Place(dom, flags)
        top = ram_top if limit is None else limit
        bad = [
            a.caps.name
            for a in atts
            if not reachable(a.caps, dom, a.peer2peer, max_phys=top, contiguous=contiguous)
        ]
        if bad:  # defensive: the limit and contiguity above make every attacher reach it
            tried.append(f"{dom.name}: unreachable for {', '.join(bad)}")
            continue
        return BackingChoice(dom, place, contiguous, limit, alignment, tuple(lim_why))
    return Unsat("no domain of the exporter's preference reaches every attachment", tuple(tried))
