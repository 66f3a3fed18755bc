"""Seven multi-GPU dma-buf scenarios (S1-S7, around Simon Ser's NO_MOVE import RFC,
dri-devel, 13 Oct 2024, and Michel Dänzer's replies), plus a VRAM-only device importing a
system-memory buffer (V) and late attachers (L), run on the model with numbers.

Setup ([M]: a modelling choice): dGPU = amdgpu, 8 GiB VRAM, PCIe 4.0 x16 (24 GB/s), scans out
of VRAM; iGPU = Intel sharing system memory, no p2p path to the dGPU's VRAM, i915 static
importer (xe: dynamic).  A 3840x2160 XRGB8888 linear buffer is 33,177,600 B (8100 pages);
swapchain of 3; 60 Hz.  Devices are :class:`~gpuvm.drm.device.Device` s with caps and a memory
manager; buffers move through PRIME (client export, fd passed to the compositor, import),
and an importer's GPU VM is a plain :class:`~gpuvm.drm.driver.DriverVm` whose VmBos are evicted
by ``move_notify`` and revalidated (re-mapping the attachment) before the next use.

Each scenario function returns a frozen :class:`ScenarioResult`: migrations and bytes
over the link with their milliseconds at the stated bandwidth, pins, attachment
maps/unmaps, ``move_notify`` calls, page-table writes in importer VMs, refused calls with
their errno, and per-frame steady-state numbers.  The model itself is clock-free; the
milliseconds come from an observer (:class:`~gpuvm.drm.placement.MigrationTally`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import attrs

from gpuvm.core.errors import GpuvmError, InvalidValue
from gpuvm.core.events import Event, Mapped, Migrated, Unmapped
from gpuvm.core.gem import GemObject
from gpuvm.drm.caps import (
    EXPORTERS,
    DeviceCaps,
    Topology,
    amdgpu_dgpu,
    bochs,
    i915_igpu,
    soc_display,
    xe_igpu,
)
from gpuvm.drm.device import Device, snapshot
from gpuvm.drm.dmabuf import (
    AttachmentMapped,
    AttachmentUnmapped,
    DmaBuf,
    Exporter,
    ImporterOps,
    MoveNotified,
    evict_importer_vms,
    revalidate_import,
)
from gpuvm.drm.driver import Bo, DriverVm
from gpuvm.drm.file import DrmFile
from gpuvm.drm.placement import (
    GIB,
    MIB,
    PAGE_SIZE,
    Domain,
    Link,
    MemoryManager,
    MigrationTally,
    Place,
    PlaceFlags,
    amdgpu_domains,
)
from gpuvm.drm.prime import DRM_PRIME_FD_TO_HANDLE_NO_MOVE

__all__ = [
    "FRAME_BYTES",
    "SCENARIOS",
    "ScenarioResult",
    "format_result",
    "l_late_attach",
    "run",
    "s1_self_import",
    "s2_plain_igpu_import",
    "s3_no_move_probe",
    "s4_no_move_after_eviction",
    "s5_ping_pong",
    "s6_access_query",
    "s7_igpu_client_dgpu_display",
    "scanout_pin",
    "v_vram_only_import",
]

FRAME_BYTES = 3840 * 2160 * 4
"""A 4K XRGB8888 linear buffer: 33,177,600 B, 8100 pages."""
PAGES = FRAME_BYTES // PAGE_SIZE
HZ = 60.0
DEFAULT_GBPS = 24.0
IMPORT_VA = 0x1_0000_0000


@attrs.frozen(slots=True)
class ScenarioResult:
    """One scenario's numbers.  Totals cover the whole run (setup included);
    ``frame_*`` numbers are the steady state per frame over ``frames`` frames."""

    key: str
    title: str
    gbps: float
    """Link bandwidth the milliseconds are priced at (GB/s)."""
    moves: int
    """Backing changes with a source and a destination (``Migrated`` events)."""
    link_bytes: int
    """Bytes those moves copied over the VRAM<->system link."""
    migration_ms: float
    pins: int
    """Pins held on the shared buffers at the end."""
    pinned_tt_bytes: int
    pinned_vram_bytes: int
    maps: int
    """Attachment maps (``dma_buf_map_attachment``)."""
    unmaps: int
    notifies: int
    """``move_notify`` calls."""
    pte_writes: int
    """Pages written in importer GPU VMs (``Mapped``)."""
    pte_clears: int
    errors: tuple[tuple[str, str], ...]
    """Refused calls: (what, errno name).  Each left every device unchanged."""
    frames: int
    frame_moves: float
    frame_copy_ms: float
    """Milliseconds of copies per frame: migrations plus copies userspace must do."""
    frame_link_bytes: float
    frame_pte: float
    facts: tuple[tuple[str, object], ...] = ()

    def fact(self, name: str) -> object:
        for k, v in self.facts:
            if k == name:
                return v
        raise KeyError(name)

    @property
    def link_gbps(self) -> float:
        """Steady-state link traffic in GB/s at 60 Hz."""
        return self.frame_link_bytes * HZ / 1e9

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            f.name: getattr(self, f.name) for f in attrs.fields(ScenarioResult) if f.name != "facts"
        }
        out["errors"] = [list(e) for e in self.errors]
        out["link_gbps"] = round(self.link_gbps, 3)
        out["facts"] = {k: v for k, v in self.facts}
        return out


# --- measurement --------------------------------------------------------------------------


class _Meter:
    """Bus listener counting migrations, attachment maps, move_notify and page-table
    writes in importer VMs."""

    def __init__(self, link: Link) -> None:
        self.tally = MigrationTally(link)
        self.maps = 0
        self.unmaps = 0
        self.notifies = 0
        self.pte_writes = 0
        self.pte_clears = 0
        self.vms: list[object] = []

    def __call__(self, e: Event) -> None:
        if isinstance(e, Migrated):
            self.tally(e)
        elif isinstance(e, AttachmentMapped):
            self.maps += 1
        elif isinstance(e, AttachmentUnmapped):
            self.unmaps += 1
        elif isinstance(e, MoveNotified):
            self.notifies += 1
        elif isinstance(e, Mapped) and any(e.vm is v for v in self.vms):
            self.pte_writes += e.range // PAGE_SIZE
        elif isinstance(e, Unmapped) and any(e.vm is v for v in self.vms):
            self.pte_clears += e.range // PAGE_SIZE

    def mark(self) -> tuple[int, int, int]:
        return (self.tally.moves, self.tally.link_bytes, self.pte_writes + self.pte_clears)


_KINDS: list[type[Event]] = [
    Migrated,
    AttachmentMapped,
    AttachmentUnmapped,
    MoveNotified,
    Mapped,
    Unmapped,
]


class _World:
    """Devices of one scenario with a meter on each bus, and the refused calls."""

    def __init__(self, gbps: float) -> None:
        if gbps <= 0:
            raise InvalidValue(f"bandwidth must be positive, got {gbps}")
        self.gbps = gbps
        self.link = Link(f"{gbps:g} GB/s", gbps * 1e9)
        self.meter = _Meter(self.link)
        self.topology = Topology()
        self.devices: list[Device] = []
        self.errors: list[tuple[str, str]] = []
        self.shared: list[DmaBuf] = []

    def device(self, caps: DeviceCaps, **loc: str) -> Device:
        dev = Device("nouveau", name=caps.name, display=False, caps=caps, topology=self.topology)
        self.topology.add(caps, **loc)
        dev.bus.subscribe(self.meter, _KINDS)
        self.devices.append(dev)
        return dev

    def importer_vm(self, dev: Device) -> DriverVm:
        vm = DriverVm(1 << 32, 1 << 40, name=f"{dev.name}.ctx", bus=dev.bus)
        self.meter.vms.append(vm)
        return vm

    @contextmanager
    def refused(self, what: str) -> Iterator[None]:
        """The body must raise a GpuvmError and leave every device unchanged."""
        before = snapshot(*self.devices)
        try:
            yield
        except GpuvmError as e:
            if snapshot(*self.devices) != before:
                raise AssertionError(f"{what}: refused but the model changed") from e
            self.errors.append((what, e.errno_name))
        else:
            raise AssertionError(f"{what}: expected a refusal")

    def check(self) -> None:
        for d in self.devices:
            d.check_invariants()
        for b in self.shared:
            b.check_invariants()

    def result(
        self,
        key: str,
        title: str,
        *,
        frames: int = 0,
        frame_mark: tuple[int, int, int] | None = None,
        extra_copy_bytes: int = 0,
        facts: tuple[tuple[str, object], ...] = (),
    ) -> ScenarioResult:
        self.check()
        m = self.meter
        pins = 0
        tt = vram = 0
        for d in self.shared:
            if d.released or d.sharing is None:
                continue
            b = d.backing
            pins += b.pin_count
            if b.pinned and b.domain == Domain.TT:
                tt += b.size
            if b.pinned and b.domain == Domain.VRAM:
                vram += b.size
        fmoves = flink = fpte = 0.0
        if frames and frame_mark is not None:
            now = m.mark()
            fmoves = (now[0] - frame_mark[0]) / frames
            flink = (now[1] - frame_mark[1]) / frames
            fpte = (now[2] - frame_mark[2]) / frames
        flink_total = flink + extra_copy_bytes
        return ScenarioResult(
            key=key,
            title=title,
            gbps=self.gbps,
            moves=m.tally.moves,
            link_bytes=m.tally.link_bytes,
            migration_ms=m.tally.ms,
            pins=pins,
            pinned_tt_bytes=tt,
            pinned_vram_bytes=vram,
            maps=m.maps,
            unmaps=m.unmaps,
            notifies=m.notifies,
            pte_writes=m.pte_writes,
            pte_clears=m.pte_clears,
            errors=tuple(self.errors),
            frames=frames,
            frame_moves=fmoves,
            frame_copy_ms=self.link.ms(int(flink_total)),
            frame_link_bytes=flink_total,
            frame_pte=fpte,
            facts=facts,
        )


def _share(client: DrmFile, comp: DrmFile, handle: int, flags: int = 0) -> int:
    """Client exports ``handle``, passes the fd to the compositor, which imports it."""
    fd = client.prime_handle_to_fd(handle)
    cfd = client.fds.send(fd, comp.fds)
    client.fds.close(fd)
    try:
        return comp.prime_fd_to_handle(cfd, flags)
    finally:
        comp.fds.close(cfd)


def _dmabuf(client: DrmFile, handle: int) -> DmaBuf:
    d = client.bo(handle).dma_buf
    assert d is not None
    return d


def _bind(vm: DriverVm, bo: Bo, slot: int) -> None:
    """First GPU use of an import: map the attachment, then the VA."""
    att = bo.import_attach
    if att is not None and not att.usable:
        att.dmabuf.map(att)
    vm.map(IMPORT_VA + slot * 2 * FRAME_BYTES, bo.size, bo)


def _use(vm: DriverVm) -> None:
    """Next GPU use: revalidate what ``move_notify`` evicted (re-map, rewrite PTEs)."""
    vm.exec_lock()
    vm.validate(revalidate_import)


def scanout_pin(dev: Device, bo: Bo) -> None:
    """The display pins a framebuffer in a scanout domain (``amdgpu_display``'s pin):
    a native buffer in ``caps.scanout_domains`` (``-EINVAL`` if pinned elsewhere); an
    imported one only where the driver can pin imports (amdgpu: GTT), else ``-EINVAL``."""
    caps = dev.caps
    assert caps is not None and dev.mem is not None
    where = [Place(d) for d in sorted(caps.scanout_domains, reverse=True)]
    if bo.import_attach is not None:
        rules = caps.exporter
        ok = rules.imported_pin_domains if rules is not None else frozenset()
        allowed = [p for p in where if p.domain in ok]
        if not allowed:
            raise InvalidValue(
                f"{caps.name} cannot pin imported {bo!r} for scanout in "
                f"{'/'.join(d.name for d in caps.scanout_domains)} (imports pin in "
                f"{'/'.join(d.name for d in ok) or 'nothing'})"
            )
        return
    dev.mem.pin(bo, where)


def _swapchain(client: DrmFile, n: int = 3) -> list[int]:
    return [client.create_bo(FRAME_BYTES, name=f"swap{i}") for i in range(n)]


# --- S1 ----------------------------------------------------------------------------------


def s1_self_import(gbps: float = DEFAULT_GBPS) -> ScenarioResult:
    """Client and display on the dGPU, compositor (another process) imports on the dGPU:
    a self-import (the same buffer, no attachment), 0 copies, direct scanout."""
    w = _World(gbps)
    dgpu = w.device(amdgpu_dgpu("dgpu"), root="pci0")
    client, comp = dgpu.open(name="client"), dgpu.open(name="compositor")
    hs = _swapchain(client)
    imported = [_share(client, comp, h) for h in hs]
    w.shared = [_dmabuf(client, h) for h in hs]
    same = all(comp.bo(i) is client.bo(h) for i, h in zip(imported, hs, strict=True))
    atts = sum(len(d.attachments) for d in w.shared)
    scanout_pin(dgpu, comp.bo(imported[0]))
    mark = w.meter.mark()
    for f in range(60):
        w.shared[f % 3].exporter_use()
    return w.result(
        "S1",
        "client and display on dGPU, compositor imports on dGPU",
        frames=60,
        frame_mark=mark,
        facts=(("self_import", same), ("attachments", atts), ("direct_scanout", True)),
    )


# --- S2 ----------------------------------------------------------------------------------


def _s2_world(gbps: float) -> tuple[_World, Device, Device, DrmFile, DrmFile, list[int]]:
    w = _World(gbps)
    dgpu = w.device(amdgpu_dgpu("dgpu"), root="pci0")
    igpu = w.device(i915_igpu("igpu"))
    client, comp = dgpu.open(name="client"), igpu.open(name="compositor")
    return w, dgpu, igpu, client, comp, _swapchain(client)


def s2_plain_igpu_import(gbps: float = DEFAULT_GBPS) -> ScenarioResult:
    """Compositor imports the dGPU client's swapchain on the iGPU (i915, static): the
    first use maps, so the amdgpu exporter pins each buffer in GTT (one VRAM->GTT copy
    each) for the swapchain's life; the client then renders into system RAM over PCIe; the
    dGPU's VRAM scanout pin fails ``-EINVAL``, so the compositor composites and one
    cross-GPU copy per frame brings the result to VRAM."""
    w, dgpu, igpu, client, comp, hs = _s2_world(gbps)
    vm = w.importer_vm(igpu)
    imported = [_share(client, comp, h) for h in hs]
    w.shared = [_dmabuf(client, h) for h in hs]
    for i, h in enumerate(imported):
        _bind(vm, comp.bo(h), i)
    with w.refused("dGPU scanout pin in VRAM"):
        scanout_pin(dgpu, client.bo(hs[0]))
    mark = w.meter.mark()
    for f in range(60):
        w.shared[f % 3].exporter_use()
        _use(vm)
    return w.result(
        "S2",
        "compositor imports on iGPU (plain import)",
        frames=60,
        frame_mark=mark,
        extra_copy_bytes=FRAME_BYTES,
        facts=(
            ("static_import", not any(a.dynamic for d in w.shared for a in d.attachments)),
            ("per_buffer_ms", w.link.ms(FRAME_BYTES)),
            ("client_renders_over_pcie_bytes_per_frame", FRAME_BYTES),
            ("pinned_tt_mib", round(3 * FRAME_BYTES / MIB, 1)),
        ),
    )


# --- S3 ----------------------------------------------------------------------------------


def s3_no_move_probe(gbps: float = DEFAULT_GBPS) -> ScenarioResult:
    """S2 with the NO_MOVE probe: the iGPU import would migrate, so it fails ``-EINVAL``
    leaving no attachment, pin or migration; the compositor then tries the dGPU, where
    the self-import succeeds: S1."""
    w = _World(gbps)
    dgpu = w.device(amdgpu_dgpu("dgpu"), root="pci0")
    igpu = w.device(i915_igpu("igpu"))
    client = dgpu.open(name="client")
    comp_i, comp_d = igpu.open(name="compositor-igpu"), dgpu.open(name="compositor-dgpu")
    hs = _swapchain(client)
    w.shared = [_dmabuf_of_export(client, h) for h in hs]
    ok = []
    for h in hs:
        with w.refused("NO_MOVE import on iGPU"):
            _share(client, comp_i, h, DRM_PRIME_FD_TO_HANDLE_NO_MOVE)
        ok.append(_share(client, comp_d, h, DRM_PRIME_FD_TO_HANDLE_NO_MOVE))
    same = all(comp_d.bo(i) is client.bo(h) for i, h in zip(ok, hs, strict=True))
    scanout_pin(dgpu, comp_d.bo(ok[0]))
    return w.result(
        "S3",
        "NO_MOVE probe: iGPU refused, dGPU self-import",
        facts=(("dgpu_self_import", same), ("igpu_attachments", 0)),
    )


def _dmabuf_of_export(client: DrmFile, h: int) -> DmaBuf:
    fd = client.prime_handle_to_fd(h)
    client.fds.close(fd)
    return _dmabuf(client, h)


# --- S4 ----------------------------------------------------------------------------------


def s4_no_move_after_eviction(gbps: float = DEFAULT_GBPS) -> ScenarioResult:
    """S3, but VRAM pressure (a game using 7.9 GiB in 64 MiB buffers, then one more)
    evicted the least recently used swapchain buffer to GTT before the probe: NO_MOVE
    sees the current placement, so the iGPU import passes and its first use pins the
    buffer in GTT; when the pressure ends it stays there (S2's steady state, the copy
    paid by the eviction: Michel Dänzer's objection 1)."""
    w = _World(gbps)
    dgpu = w.device(amdgpu_dgpu("dgpu"), root="pci0")
    igpu = w.device(i915_igpu("igpu"))
    client, game = dgpu.open(name="client"), dgpu.open(name="game")
    comp = igpu.open(name="compositor")
    hs = _swapchain(client)
    w.shared = [_dmabuf_of_export(client, h) for h in hs]
    chunk = 64 * MIB
    textures = [game.create_bo(chunk) for _ in range(126)]  # 7.875 GiB
    assert dgpu.mem is not None
    before_pressure = dgpu.mem.backing(client.bo(hs[0])).domain
    textures.append(game.create_bo(chunk))  # evicts the LRU swapchain buffer
    evicted = [i for i, h in enumerate(hs) if dgpu.mem.backing(client.bo(h)).domain != Domain.VRAM]
    victim = hs[evicted[0]]
    d = _dmabuf(client, victim)
    query = d.can_access_optimal(igpu.caps)  # type: ignore[arg-type]
    vm = w.importer_vm(igpu)
    h = _share(client, comp, victim, DRM_PRIME_FD_TO_HANDLE_NO_MOVE)
    _bind(vm, comp.bo(h), 0)
    for t in textures[-2:]:  # the pressure ends
        game.gem_close(t)
    mark = w.meter.mark()
    for _ in range(60):
        d.exporter_use()
        _use(vm)
    with w.refused("dGPU scanout pin in VRAM"):
        scanout_pin(dgpu, client.bo(victim))
    return w.result(
        "S4",
        "NO_MOVE after a VRAM-pressure eviction: probe passes, buffer pinned in GTT",
        frames=60,
        frame_mark=mark,
        extra_copy_bytes=FRAME_BYTES,
        facts=(
            ("vram_used_by_game_gib", round(126 * chunk / GIB, 3)),
            ("placement_before_pressure", before_pressure.name if before_pressure else None),
            ("evicted_buffers", len(evicted)),
            ("no_move_probe_ok", True),
            ("query_optimal_ok", query.ok),
            ("query_current_ok", query.current_ok),
            ("final_domain", d.backing.domain.name if d.backing.domain else None),
        ),
    )


# --- S5 ----------------------------------------------------------------------------------


def s5_ping_pong(gbps: float = DEFAULT_GBPS, *, repromote: bool = True) -> ScenarioResult:
    """A dynamic unpinned importer on the iGPU (xe) and an exporter that re-promotes its
    buffer to ``preferred`` (VRAM) at every render: per frame GTT->VRAM, ``move_notify``
    (the importer's PTEs cleared), then the importer's revalidate moves it VRAM->GTT and
    rewrites its PTEs.  With amdgpu's rule (no re-promote while attached,
    ``repromote=False``) it settles in GTT after one move."""
    w = _World(gbps)
    rules = attrs.evolve(EXPORTERS["amdgpu"], repromote_while_attached=repromote)
    dgpu = w.device(attrs.evolve(amdgpu_dgpu("dgpu"), exporter=rules), root="pci0")
    igpu = w.device(xe_igpu("igpu"))
    client, comp = dgpu.open(name="client"), igpu.open(name="compositor")
    h = client.create_bo(FRAME_BYTES, name="surface")
    vm = w.importer_vm(igpu)
    ih = _share(client, comp, h)
    d = _dmabuf(client, h)
    w.shared = [d]
    _bind(vm, comp.bo(ih), 0)
    mark = w.meter.mark()
    for _ in range(60):
        d.exporter_use()  # client renders
        _use(vm)  # compositor samples it
    att = comp.bo(ih).import_attach
    assert att is not None
    return w.result(
        "S5" if repromote else "S5-settled",
        "ping-pong: exporter re-promotes to VRAM, dynamic importer reaches only GTT"
        if repromote
        else "no re-promote while attached: settles in GTT",
        frames=60,
        frame_mark=mark,
        facts=(
            ("dynamic_import", att.dynamic),
            ("peer2peer", att.peer2peer),
            ("repromote_while_attached", repromote),
            ("final_domain", d.backing.domain.name if d.backing.domain else None),
            ("pages", PAGES),
        ),
    )


# --- S6 ----------------------------------------------------------------------------------


def s6_access_query(gbps: float = DEFAULT_GBPS) -> ScenarioResult:
    """The side-effect-free query "can the importer access it while the exporter keeps
    its optimal placement": iGPU False; the dGPU itself True; a second dGPU behind the
    same PCIe switch True (p2p bus addresses, reads at PCIe bandwidth, the buffer stays in
    VRAM); a SoC display controller scanning out the SoC render GPU's buffer True."""
    w = _World(gbps)
    dgpu = w.device(amdgpu_dgpu("dgpu"), root="pci0", switch="sw0")
    dgpu2_caps = amdgpu_dgpu("dgpu2")
    w.topology.add(dgpu2_caps, root="pci0", switch="sw0")
    client = dgpu.open(name="client")
    h = client.create_bo(FRAME_BYTES)
    d = _dmabuf_of_export(client, h)
    w.shared = [d]
    # a SoC: render GPU (GEM DMA helper exporter, contiguous) and display, 4 GiB of RAM
    soc_top = (1 << 32) - 1
    soc_gpu_caps = attrs.evolve(soc_display("soc-gpu"), driver="panfrost", scanout_domains=())
    soc_mem = MemoryManager(vram=0, tt=0, system=2 * GIB, name="soc")
    obj = GemObject(FRAME_BYTES, name="soc-fb")
    soc_mem.add(obj, Place(Domain.SYSTEM, PlaceFlags.CONTIGUOUS))
    soc_mem.validate(obj)
    soc = DmaBuf(
        obj,
        "soc-gpu",
        obj.size,
        obj.resv,
        name="soc-fb",
        sharing=Exporter(soc_gpu_caps, soc_mem, ram_top=soc_top),
    )
    soc.get("fd")
    before = (snapshot(dgpu), soc_mem.snapshot(), soc.state())
    answers = {
        "igpu": d.can_access_optimal(i915_igpu("igpu"), pcie_gbps=gbps),
        "dgpu-self": d.can_access_optimal(amdgpu_dgpu("dgpu"), pcie_gbps=gbps),
        "dgpu2-p2p": d.can_access_optimal(dgpu2_caps, pcie_gbps=gbps),
        "soc-display": soc.can_access_optimal(soc_display("display"), pcie_gbps=gbps),
    }
    after = (snapshot(dgpu), soc_mem.snapshot(), soc.state())
    if before != after:
        raise AssertionError("the access query changed the model")
    soc.put("fd")
    facts: list[tuple[str, object]] = []
    for k, a in answers.items():
        facts.append((k, a.ok))
        facts.append((f"{k}.path", a.path))
        facts.append((f"{k}.read_gbps", a.read_gbps))
    facts.append(("exporter_domain", d.backing.domain.name if d.backing.domain else None))
    return w.result(
        "S6", "query: importer access with the exporter's optimal placement", facts=tuple(facts)
    )


# --- S7 ----------------------------------------------------------------------------------


def s7_igpu_client_dgpu_display(gbps: float = DEFAULT_GBPS) -> ScenarioResult:
    """Client renders on the iGPU, display on the dGPU: amdgpu imports the system pages as
    GTT only; a discrete display scans out of VRAM and amdgpu cannot pin an import there
    (``-EINVAL``), so each frame is copied into VRAM (or composited on the dGPU)."""
    w = _World(gbps)
    igpu = w.device(i915_igpu("igpu"))
    dgpu = w.device(amdgpu_dgpu("dgpu"), root="pci0")
    client, comp = igpu.open(name="client"), dgpu.open(name="compositor")
    h = client.create_bo(FRAME_BYTES, name="client-fb")
    vm = w.importer_vm(dgpu)
    ih = _share(client, comp, h)
    d = _dmabuf(client, h)
    w.shared = [d]
    bo = comp.bo(ih)
    _bind(vm, bo, 0)
    with w.refused("dGPU scanout pin of the import in VRAM"):
        scanout_pin(dgpu, bo)
    mark = w.meter.mark()
    for _ in range(60):
        d.exporter_use()
        _use(vm)
    att = bo.import_attach
    assert att is not None
    return w.result(
        "S7",
        "client on iGPU, display on dGPU",
        frames=60,
        frame_mark=mark,
        extra_copy_bytes=FRAME_BYTES,
        facts=(
            ("dynamic_import", att.dynamic),
            ("peer2peer", att.peer2peer),
            ("import_domain", att.mapped_resource.domain.name if att.mapped_resource else None),
            ("exporter_pinned_at_attach", att.attach_pins > 0),
        ),
    )


# --- VRAM-only device ----------------------------------------------------------------------


def v_vram_only_import(gbps: float = DEFAULT_GBPS) -> ScenarioResult:
    """A VRAM-only virtual display (bochs) importing a system-memory buffer from the
    iGPU: no foreign import path, ``-EINVAL``, nothing changed; userspace must copy each
    frame into a bochs VRAM (dumb) buffer instead, priced at the stated bandwidth."""
    w = _World(gbps)
    igpu = w.device(i915_igpu("igpu"))
    vdev = w.device(bochs("bochs"))
    client, comp = igpu.open(name="client"), vdev.open(name="compositor")
    h = client.create_bo(FRAME_BYTES, name="client-fb")
    w.shared = [_dmabuf_of_export(client, h)]
    with w.refused("bochs import of a system-memory dma-buf"):
        _share(client, comp, h)
    fb = comp.create_bo(FRAME_BYTES, name="bochs-fb")
    assert vdev.mem is not None
    domain = vdev.mem.backing(comp.bo(fb)).domain
    return w.result(
        "V",
        "VRAM-only device importing a system-memory buffer",
        frames=1,
        frame_mark=w.meter.mark(),
        extra_copy_bytes=FRAME_BYTES,
        facts=(("copy_target", domain.name if domain else None),),
    )


# --- attach-time constraints ---------------------------------------------------------------


def l_late_attach(gbps: float = DEFAULT_GBPS) -> ScenarioResult:
    """Placement constraints learned at attach time on a dGPU buffer shared with a second
    dGPU (dynamic, p2p) and the iGPU (static): (a) both attach before the first map, which
    allocates where both reach (GTT): 0 copies; (b) the iGPU attaches late while only the
    dynamic p2p importer has mapped VRAM: its map moves the buffer to GTT (one copy, one
    move_notify, the p2p importer re-maps); (c) the p2p importer pinned it in VRAM: the
    late attach fails ``-EBUSY`` and changes nothing."""
    w = _World(gbps)
    dgpu = w.device(amdgpu_dgpu("dgpu"), root="pci0", switch="sw0")
    dgpu2 = amdgpu_dgpu("dgpu2")
    w.topology.add(dgpu2, root="pci0", switch="sw0")
    igpu = i915_igpu("igpu")
    assert dgpu.mem is not None and dgpu.caps is not None
    mem = dgpu.mem
    p2p_ops = ImporterOps(evict_importer_vms, allow_peer2peer=True)

    def deferred(name: str) -> DmaBuf:
        obj = GemObject(FRAME_BYTES, name=name, bus=dgpu.bus)
        mem.add(obj, *amdgpu_domains([Domain.VRAM]))  # not resident until the first map
        d = DmaBuf(
            obj,
            dgpu,
            obj.size,
            obj.resv,
            bus=dgpu.bus,
            name=name,
            sharing=Exporter(dgpu.caps, mem, topology=w.topology),  # type: ignore[arg-type]
        )
        d.get("fd")
        w.shared.append(d)
        return d

    # (a) attach all first
    a = deferred("early")
    a2 = a.attach("dgpu2", dgpu2, p2p_ops)
    ai = a.attach("igpu", igpu)
    a.map(a2)
    a.map(ai)
    early = a.backing.domain
    moves_a = w.meter.tally.moves
    # (b) late static attacher, only dynamic mappings: it moves
    b = deferred("late")
    b2 = b.attach("dgpu2", dgpu2, p2p_ops)
    b.map(b2)
    first = b.backing.domain
    bi = b.attach("igpu", igpu)
    b.map(bi)
    b.remap(b2)
    moved = b.backing.domain
    # (c) pinned by the p2p importer: EBUSY
    c = deferred("pinned")
    c2 = c.attach("dgpu2", dgpu2, p2p_ops)
    c.map(c2)
    c.pin(c2)
    before = (mem.snapshot(), c.state())
    try:
        c.attach("igpu", igpu)
    except GpuvmError as e:
        if (mem.snapshot(), c.state()) != before:
            raise AssertionError("refused late attach changed the model") from e
        w.errors.append(("late static attach to a VRAM-pinned buffer", e.errno_name))
    else:
        raise AssertionError("late attach to a pinned buffer was accepted")
    res = w.result(
        "L",
        "attach-time placement constraints and late attachers",
        facts=(
            ("early_first_map_domain", early.name if early else None),
            ("early_moves", moves_a),
            ("late_first_map_domain", first.name if first else None),
            ("late_after_static_map", moved.name if moved else None),
            ("late_notifies", b2.notifies),
            ("pinned_domain", c.backing.domain.name if c.backing.domain else None),
        ),
    )
    for d in (a, b, c):
        for att in list(d.attachments):
            d.detach(att, teardown=True)
        d.put("fd")
    return res


def format_result(r: ScenarioResult) -> str:
    """A scenario's numbers as a few lines of text (the CLI's output)."""
    lines = [f"{r.key}: {r.title}  [link {r.gbps:g} GB/s]"]
    lines.append(
        f"  migrations {r.moves}, {r.link_bytes:,} B over the link "
        f"({r.link_bytes / MIB:.1f} MiB) = {r.migration_ms:.2f} ms"
    )
    lines.append(
        f"  pins {r.pins} (GTT {r.pinned_tt_bytes / MIB:.1f} MiB, VRAM "
        f"{r.pinned_vram_bytes / MIB:.1f} MiB); attachment maps {r.maps} / unmaps {r.unmaps}; "
        f"move_notify {r.notifies}; importer PTE writes {r.pte_writes} / clears {r.pte_clears}"
    )
    for what, err in r.errors:
        lines.append(f"  refused: {what} -> {err} (state unchanged)")
    if r.frames:
        lines.append(
            f"  per frame ({r.frames} frames): {r.frame_moves:g} migrations, "
            f"{r.frame_copy_ms:.2f} ms of copies, {r.frame_link_bytes:,.0f} B "
            f"({r.link_gbps:.2f} GB/s at 60 Hz), {r.frame_pte:g} PTE rewrites"
        )
    if r.facts:
        lines.append("  " + ", ".join(f"{k}={v}" for k, v in r.facts))
    return "\n".join(lines)


SCENARIOS: dict[str, Callable[[float], ScenarioResult]] = {
    "S1": s1_self_import,
    "S2": s2_plain_igpu_import,
    "S3": s3_no_move_probe,
    "S4": s4_no_move_after_eviction,
    "S5": s5_ping_pong,
    "S5-settled": lambda gbps: s5_ping_pong(gbps, repromote=False),
    "S6": s6_access_query,
    "S7": s7_igpu_client_dgpu_display,
    "V": v_vram_only_import,
    "L": l_late_attach,
}
"""Scenario functions by key: S1-S7 (S5 in both exporter behaviours), V
(VRAM-only import) and L (late attachers)."""


def run(key: str = "all", gbps: float = DEFAULT_GBPS) -> list[ScenarioResult]:
    """Run one scenario (``"S2"``) or ``"all"``; the key ``"S5"`` also runs
    ``"S5-settled"``."""
    if key == "all":
        return [f(gbps) for f in SCENARIOS.values()]
    if key not in SCENARIOS:
        raise InvalidValue(f"unknown scenario {key!r} (one of {', '.join(SCENARIOS)}, all)")
    out = [SCENARIOS[key](gbps)]
    if key == "S5":
        out.append(SCENARIOS["S5-settled"](gbps))
    return out
