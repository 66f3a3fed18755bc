"""S5-S7: buffers migrating between VRAM and system memory as clients and displays move
(ping-pong with and without re-promotion, the access query, an iGPU client on a dGPU
display)."""

from __future__ import annotations

import attrs

from gpuvm.core.gem import GemObject
from gpuvm.drm.caps import (
    EXPORTERS,
    amdgpu_dgpu,
    i915_igpu,
    soc_display,
    xe_igpu,
)
from gpuvm.drm.device import snapshot
from gpuvm.drm.dmabuf import (
    DmaBuf,
    Exporter,
)
from gpuvm.drm.placement import (
    GIB,
    Domain,
    MemoryManager,
    Place,
    PlaceFlags,
)
from gpuvm.study.dmabuf_scenarios.world import (
    DEFAULT_GBPS,
    FRAME_BYTES,
    PAGES,
    ScenarioResult,
    _bind,
    _dmabuf,
    _dmabuf_of_export,
    _share,
    _use,
    _World,
    scanout_pin,
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
        sharing=Exporter(soc_gpu_caps, soc_mem, ram_top=soc_top, move_notify_built=w.move_notify),
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
