"""The timeline for study settings: run the model for a pageflip setting, price its
per-flip counts with a cost preset, and split them into the commit's phases (maps in
``prepare_fb`` before arming, unmaps and TLB invalidations in ``cleanup_fb`` in the tail)
for :func:`gpuvm.observe.timeline.simulate`.  Also the timeline fields of a priced study
row, so a study gets dropped frames per second without rerunning the model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from gpuvm.observe.costs import CostPreset
from gpuvm.observe.timeline.params import TimelineParams

__all__ = ["TIMELINE_KEYS", "params_of_row", "setting_row", "timeline_fields"]

TIMELINE_KEYS: Final = (
    "dropped_frames_per_s",
    "flip_latency_ms_mean",
    "flip_latency_ms_max",
    "commit_tail_cpu_ms",
    "ioctl_cpu_ms",
)
"""The study row fields the timeline adds (None when the row was not priced)."""


def params_of_row(row: Mapping[str, object], **overrides: Any) -> TimelineParams:
    """The timeline parameters of a priced study row: per plane, prepare = map (+ VMA)
    cost, tail = unmap + TLB cost; the ioctl path's own cost per commit."""
    layers = int(row["layers"])  # type: ignore[call-overload]
    per_flip = {k: float(row[k]) for k in ("map_ms", "unmap_ms", "tlb_ms", "ioctl_ms")}  # type: ignore[arg-type]
    kw: dict[str, Any] = {
        "refresh_hz": float(row["refresh_hz"]),  # type: ignore[arg-type]
        "layers": layers,
        "prepare_ms": per_flip["map_ms"] / layers,
        "tail_ms": (per_flip["unmap_ms"] + per_flip["tlb_ms"]) / layers,
        "ioctl_ms": per_flip["ioctl_ms"],
    }
    kw.update(overrides)
    return TimelineParams(**kw)


def timeline_fields(row: Mapping[str, object], **overrides: Any) -> dict[str, object]:
    """:data:`TIMELINE_KEYS` for a priced study row (all None for an unpriced one, or when
    SimPy is not installed)."""
    if row.get("map_ms") is None:
        return dict.fromkeys(TIMELINE_KEYS)
    try:
        from gpuvm.observe.timeline.sim import simulate
    except ImportError:
        return dict.fromkeys(TIMELINE_KEYS)
    m = simulate(params_of_row(row, **overrides)).metrics()
    return {k: m[k] for k in TIMELINE_KEYS}


def setting_row(
    policy: str,
    preset: CostPreset,
    *,
    resolution: str = "1080p",
    refresh_hz: float = 60.0,
    layers: int = 1,
    page_size: int = 4096,
    depth: int = 3,
    frames: int = 60,
) -> dict[str, object]:
    """The priced study row of one pageflip setting (swapchain source, own buffers)."""
    from gpuvm.study.runner import price, record
    from gpuvm.study.workloads import WorkloadSpec

    spec = WorkloadSpec(
        "pageflip",
        "swapchain",
        "own",
        "kms",
        resolution,
        refresh_hz,
        layers,
        depth,
        frames + depth + 1,
        depth + 1,
        page_size,
    )
    spec.validate()
    return price(record(policy, spec), preset, refresh_hz)
