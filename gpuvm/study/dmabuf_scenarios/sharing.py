"""S1-S4: a buffer shared through PRIME (a self-import, a plain iGPU import of a dGPU
buffer, and the NO_MOVE import RFC probed and after an eviction)."""

from __future__ import annotations

import attrs

from gpuvm.drm.caps import (
    DeviceCaps,
    amdgpu_dgpu,
    i915_igpu,
)
from gpuvm.drm.device import Device
from gpuvm.drm.file import DrmFile
from gpuvm.drm.placement import (
    GIB,
    MIB,
    Domain,
)
from gpuvm.drm.prime import DRM_PRIME_FD_TO_HANDLE_NO_MOVE
from gpuvm.study.dmabuf_scenarios.world import (
    DEFAULT_GBPS,
    FRAME_BYTES,
    ScenarioResult,
    _bind,
    _dmabuf,
    _dmabuf_of_export,
    _share,
    _swapchain,
    _use,
    _World,
    scanout_pin,
)

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

NO_MOVE_RFC = "NO_MOVE import flag (Simon Ser, dri-devel, Oct 2024), not in mainline"
"""The label of every result that uses the NO_MOVE RFC (mainline
``drm_prime_fd_to_handle_ioctl`` ignores ``args->flags``)."""


def _rfc(caps: DeviceCaps) -> DeviceCaps:
    """``caps`` on a kernel carrying the NO_MOVE RFC."""
    return attrs.evolve(caps, rfc_no_move=True)


def s3_no_move_probe(gbps: float = DEFAULT_GBPS) -> ScenarioResult:
    """RFC: S2 with the NO_MOVE probe, on kernels carrying the NO_MOVE RFC: the iGPU import
    would migrate, so it fails ``-EINVAL`` leaving no attachment, pin or migration; the
    compositor then tries the dGPU, where the self-import succeeds: S1.  (On mainline the
    flag is ignored and the iGPU import is S2.)"""
    w = _World(gbps)
    dgpu = w.device(_rfc(amdgpu_dgpu("dgpu")), root="pci0")
    igpu = w.device(_rfc(i915_igpu("igpu")))
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
        rfc=NO_MOVE_RFC,
    )


# --- S4 ----------------------------------------------------------------------------------


def s4_no_move_after_eviction(gbps: float = DEFAULT_GBPS) -> ScenarioResult:
    """RFC (NO_MOVE, as S3): S3, but VRAM pressure
    (a game using 7.9 GiB in 64 MiB buffers, then one more)
    evicted the least recently used swapchain buffer to GTT before the probe: NO_MOVE
    sees the current placement, so the iGPU import passes and its first use pins the
    buffer in GTT; when the pressure ends it stays there (S2's steady state, the copy
    paid by the eviction: Michel Dänzer's objection 1)."""
    w = _World(gbps)
    dgpu = w.device(_rfc(amdgpu_dgpu("dgpu")), root="pci0")
    igpu = w.device(_rfc(i915_igpu("igpu")))
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
        rfc=NO_MOVE_RFC,
    )
