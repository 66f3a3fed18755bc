"""The timeline for study settings: run the model for a pageflip setting, price its
per-flip counts with a cost preset, and split them into the commit's phases (maps in
``prepare_fb`` before arming, unmaps and TLB invalidations in ``cleanup_fb`` in the tail)
for :func:`gpuvm.observe.timeline.simulate`.  Also the timeline fields of a priced study
row, so a study gets dropped frames per second without rerunning the model."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, Final

from gpuvm.core.errors import GpuvmError
from gpuvm.observe.costs import CostPreset
from gpuvm.observe.timeline.params import TimelineParams

__all__ = [
    "TIMELINE_KEYS",
    "close_waits",
    "params_of_row",
    "setting_row",
    "timeline_fields",
]

TIMELINE_KEYS: Final = (
    "dropped_frames_per_s",
    "flip_latency_ms_mean",
    "flip_latency_ms_max",
    "commit_tail_cpu_ms",
    "ioctl_cpu_ms",
    "ioctl_blocked_ms",
)
"""The study row fields the timeline adds (None when the row was not priced)."""


@functools.cache
def close_waits(policy: str) -> bool:
    """Whether GEM_CLOSE waits for the buffer's fences under ``policy``, asked of the model
    itself: a legacy context (its VM exists) submits a job on a buffer and closes the
    handle; the close waited if the job has retired (``msm_gem_close``)."""
    from gpuvm.drm.device import Device

    try:
        dev = Device("msm", policy, display=False)
        f = dev.open(name="probe")
        h = f.create_bo(4096)
        job = f.submit([h])
        f.gem_close(h)
    except GpuvmError:
        return False
    return bool(job.retired)


def params_of_row(row: Mapping[str, object], **overrides: Any) -> TimelineParams:
    """The timeline parameters of a priced study row: per plane, prepare = map (+ VMA)
    cost, tail = unmap + TLB cost; the ioctl path's own cost per commit; the GEM_CLOSEs
    per commit and whether the row's policy makes them wait (:func:`close_waits`)."""
    layers = int(row["layers"])  # type: ignore[call-overload]
    per_flip = {k: float(row[k]) for k in ("map_ms", "unmap_ms", "tlb_ms", "ioctl_ms")}  # type: ignore[arg-type]
    closes = row.get("gem_closes_per_flip")
    kw: dict[str, Any] = {
        "refresh_hz": float(row["refresh_hz"]),  # type: ignore[arg-type]
        "layers": layers,
        "prepare_ms": per_flip["map_ms"] / layers,
        "tail_ms": (per_flip["unmap_ms"] + per_flip["tlb_ms"]) / layers,
        "ioctl_ms": per_flip["ioctl_ms"],
        "gem_closes": round(float(closes)) if closes is not None else 0,  # type: ignore[arg-type]
        "close_waits": close_waits(str(row["policy"])),
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
    m = _metrics(params_of_row(row, **overrides), simulate)
    return {k: m[k] for k in TIMELINE_KEYS}


_CACHE: dict[TimelineParams, dict[str, float]] = {}


def _metrics(params: TimelineParams, simulate: Any) -> dict[str, float]:
    """Metrics of ``params``, memoised: study rows repeat the same few settings."""
    got = _CACHE.get(params)
    if got is None:
        if len(_CACHE) > 4096:
            _CACHE.clear()
        got = _CACHE[params] = simulate(params).metrics()
    return got


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
    source: str = "swapchain",
    pattern: str | None = None,
) -> dict[str, object]:
    """The priced study row of one pageflip setting (by default the swapchain source, own
    buffers; ``source`` / ``pattern`` as in :func:`gpuvm.study.workloads.pageflip`)."""
    from gpuvm.study.runner import price, record
    from gpuvm.study.workloads import WorkloadSpec

    if pattern is None:
        pattern = "own" if source == "swapchain" else "weston"
    spec = WorkloadSpec(
        "pageflip",
        source,
        pattern,
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


HEADLINE_PRESETS: Final = (
    "msm-kms",
    "msm-thread",
    "sm8150-smmu-before",
    "sm8150-smmu-after",
    "vtd",
)
"""The presets of the headline table (per-page display invalidation first)."""


def headline_rows(
    *,
    policies: tuple[str, ...] = ("gpuvm_eager", "gpuvm_vma_ref"),
    presets: tuple[str, ...] = HEADLINE_PRESETS,
    refresh_hz: float = 144.0,
    layers: int = 2,
) -> list[dict[str, object]]:
    """The headline settings (1080p swapchain pageflip) priced and simulated."""
    from gpuvm.observe.costs import get_preset

    out = []
    for name in presets:
        preset = get_preset(name)
        for policy in policies:
            row = setting_row(policy, preset, refresh_hz=refresh_hz, layers=layers)
            row.update(timeline_fields(row))
            out.append(row)
    return out


def timeline_markdown(
    rows: list[dict[str, object]] | None = None,
    study_rows: Sequence[Mapping[str, Any]] | None = None,
) -> list[str]:
    """The report's timeline section: the headline table (eager vs vma_ref at 144 Hz with
    two planes under each headline preset) and, from ``study_rows``, the GEM_CLOSE waits
    of the study's pageflip rows that close handles every frame."""
    out = ["## Dropped frames at vblank (timeline)", ""]
    try:
        import simpy  # noqa: F401
    except ImportError:
        return [
            *out,
            "Skipped: the timeline needs SimPy (`pip install 'gpuvm-model[timeline]'`); the "
            "rows' timeline fields are empty.",
            "",
        ]
    head = headline_rows() if rows is None else rows
    eager = [r for r in head if r["policy"] == "gpuvm_eager" and r["preset"] == "msm-kms"]
    ref = [r for r in head if r["policy"] == "gpuvm_vma_ref" and r["preset"] == "msm-kms"]
    if eager and ref:
        out += [
            f"Eager teardown at 144 Hz, 2 planes, msm per-page invalidation: "
            f"**{eager[0]['dropped_frames_per_s']} dropped frames/s**; vma_ref: "
            f"**{ref[0]['dropped_frames_per_s']}**.",
            "",
        ]
    out += [
        "1080p swapchain pageflip, 120 commits simulated with SimPy: maps in prepare_fb "
        "before the commit is armed, unmaps and TLB invalidations in cleanup_fb in the "
        "commit tail, one commit worker per CRTC; Weston's 7 ms repaint window, 3 ms render "
        "(see docs/timeline.md).",
        "",
        "| policy | preset | Hz | planes | dropped frames/s | flip latency ms (mean) "
        "| commit tail CPU ms | ioctl CPU ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in head:
        out.append(
            f"| `{r['policy']}` | {r['preset']} | {r['refresh_hz']:g} | {r['layers']} "
            f"| {r['dropped_frames_per_s']} | {r['flip_latency_ms_mean']} "
            f"| {r['commit_tail_cpu_ms']} | {r['ioctl_cpu_ms']} |"
        )
    out.append("")
    return out + _close_waits_markdown(study_rows or [])


def _close_waits_markdown(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One paragraph: per policy, the ioctl path's GEM_CLOSE wait per commit in the study's
    pageflip rows that close handles every frame (first preset and refresh rate)."""
    closing = [
        r
        for r in rows
        if r.get("workload") == "pageflip"
        and r.get("gem_closes_per_flip")
        and r.get("ioctl_blocked_ms") is not None
    ]
    if not closing:
        return []
    first = (closing[0]["preset"], closing[0]["refresh_hz"])
    blocked: dict[str, set[float]] = {}
    for r in closing:
        if (r["preset"], r["refresh_hz"]) == first:
            blocked.setdefault(str(r["policy"]), set()).add(float(r["ioctl_blocked_ms"]))
    parts = [f"`{p}` {' / '.join(f'{v:g}' for v in sorted(vs))} ms" for p, vs in blocked.items()]
    patterns = sorted({str(r["pattern"]) for r in closing})
    return [
        f"GEM_CLOSE waits (`msm_gem_close` waits on the buffer's fences unless the context "
        f"is VM_BIND): in this study's pageflip rows that close handles every frame "
        f"({', '.join(patterns)}; {first[0]}, {first[1]:g} Hz) the compositor's ioctl path "
        f"is blocked per commit: {'; '.join(parts)}. The flips do not move "
        f"(docs/timeline.md).",
        "",
    ]
