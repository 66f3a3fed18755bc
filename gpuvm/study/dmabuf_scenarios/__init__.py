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

The package has one module per concept: :mod:`~gpuvm.study.dmabuf_scenarios.world` (setup,
results, meter, sharing helpers), :mod:`~gpuvm.study.dmabuf_scenarios.sharing` (S1-S4),
:mod:`~gpuvm.study.dmabuf_scenarios.migration` (S5-S7) and
:mod:`~gpuvm.study.dmabuf_scenarios.constraints` (V, L); every public name is importable from
``gpuvm.study.dmabuf_scenarios``.
"""

from __future__ import annotations

from collections.abc import Callable

from gpuvm.core.errors import InvalidValue
from gpuvm.study.dmabuf_scenarios.constraints import l_late_attach, v_vram_only_import
from gpuvm.study.dmabuf_scenarios.migration import (
    s5_ping_pong,
    s6_access_query,
    s7_igpu_client_dgpu_display,
)
from gpuvm.study.dmabuf_scenarios.sharing import (
    s1_self_import,
    s2_plain_igpu_import,
    s3_no_move_probe,
    s4_no_move_after_eviction,
)
from gpuvm.study.dmabuf_scenarios.world import (
    DEFAULT_GBPS,
    FRAME_BYTES,
    MOVE_NOTIFY,
    ScenarioResult,
    format_result,
    scanout_pin,
)

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


def run(
    key: str = "all", gbps: float = DEFAULT_GBPS, *, move_notify: bool = True
) -> list[ScenarioResult]:
    """Run one scenario (``"S2"``) or ``"all"``; the key ``"S5"`` also runs
    ``"S5-settled"``.  ``move_notify=False`` builds the exporters as a stock kernel
    (``CONFIG_DMABUF_MOVE_NOTIFY=n``: dynamic importers pin at map); every result records
    it."""
    if key != "all" and key not in SCENARIOS:
        raise InvalidValue(f"unknown scenario {key!r} (one of {', '.join(SCENARIOS)}, all)")
    token = MOVE_NOTIFY.set(bool(move_notify))
    try:
        if key == "all":
            return [f(gbps) for f in SCENARIOS.values()]
        out = [SCENARIOS[key](gbps)]
        if key == "S5":
            out.append(SCENARIOS["S5-settled"](gbps))
        return out
    finally:
        MOVE_NOTIFY.reset(token)
