"""V and L: a VRAM-only device importing a system-memory buffer, and late attachers
meeting a backing already placed or pinned (``dma_buf_attach`` after the first map)."""

from __future__ import annotations

from gpuvm.core.errors import GpuvmError
from gpuvm.core.gem import GemObject
from gpuvm.drm.caps import (
    amdgpu_dgpu,
    bochs,
    i915_igpu,
)
from gpuvm.drm.dmabuf import (
    DmaBuf,
    Exporter,
    ImporterOps,
    evict_importer_vms,
)
from gpuvm.drm.placement import (
    Domain,
    amdgpu_domains,
)
from gpuvm.study.dmabuf_scenarios.world import (
    DEFAULT_GBPS,
    FRAME_BYTES,
    ScenarioResult,
    _dmabuf_of_export,
    _share,
    _World,
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
    late attach succeeds (``amdgpu_dma_buf_attach`` only clears ``peer2peer``) and its
    first map fails ``-EBUSY``, changing nothing."""
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
            sharing=Exporter(
                dgpu.caps,  # type: ignore[arg-type]
                mem,
                topology=w.topology,
                move_notify_built=w.move_notify,
            ),
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
    # (c) pinned by the p2p importer: the attach succeeds (amdgpu_dma_buf_attach only
    # clears peer2peer), the first map fails EBUSY (amdgpu_dma_buf_map: pinned, not GTT)
    c = deferred("pinned")
    c2 = c.attach("dgpu2", dgpu2, p2p_ops)
    c.map(c2)
    c.pin(c2)
    ci = c.attach("igpu", igpu)
    before = (mem.snapshot(), c.state())
    try:
        c.map(ci)
    except GpuvmError as e:
        if (mem.snapshot(), c.state()) != before:
            raise AssertionError("refused map changed the model") from e
        what = "first map of a late static attacher to a VRAM-pinned buffer"
        w.errors.append((what, e.errno_name))
    else:
        raise AssertionError("map of a pinned buffer out of reach was accepted")
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
