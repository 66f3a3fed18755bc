"""The design study: every teardown policy x every workload x every cost preset.

:func:`run_study` runs each workload once per policy (the model, with cost counters on the
device's bus), keeps the steady-state :class:`~gpuvm.observe.costs.Counts`, and :meth:`Study.rows`
prices those counts under every preset and refresh rate: swapping a preset or a refresh rate
never reruns the model.  :func:`dumps_rows` writes the rows as deterministic JSON (sorted
keys, floats rounded to :data:`DECIMALS` decimals), so the same inputs give byte-identical
output.  :mod:`gpuvm.study.report` turns a study into Markdown tables and PNG charts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

import attrs

from gpuvm.core.errors import GpuvmError
from gpuvm.drm.policies import POLICIES, UnknownPolicy, make_policy
from gpuvm.observe.costs import (
    CostPreset,
    Counts,
    budget_pct,
    builtin_presets,
    get_preset,
    resolution,
)
from gpuvm.study.timeline_study import TIMELINE_KEYS, timeline_fields
from gpuvm.study.workloads import (
    CONSUMERS,
    PAGEFLIP_PATTERNS,
    REIMPORT_PATTERNS,
    REIMPORT_SOURCES,
    SOURCES,
    Failure,
    WorkloadError,
    WorkloadRun,
    WorkloadSpec,
    check_policy,
    run_spec,
)

__all__ = [
    "DECIMALS",
    "DEFAULT_FRAMES",
    "ROW_KEYS",
    "RunRecord",
    "Study",
    "default_workloads",
    "dumps_rows",
    "price",
    "record",
    "run_study",
]

DECIMALS: Final = 6
"""Floats in study rows are rounded to this many decimals (deterministic JSON)."""

DEFAULT_FRAMES: Final = 120
"""Frames per workload run (warm-up included): enough for a steady state, a few seconds for
the whole default study."""

_MEASURED: Final = (
    "maps_per_flip",
    "unmaps_per_flip",
    "tlb_invalidations_per_flip",
    "pages_mapped_per_flip",
    "pages_unmapped_per_flip",
    "vmas_created_per_flip",
    "vmas_destroyed_per_flip",
    "ioctls_per_flip",
    "gem_closes_per_flip",
    "map_ms",
    "unmap_ms",
    "tlb_ms",
    "ioctl_ms",
    "ms_per_flip",
    "frame_budget_pct",
)
"""The priced keys: None in the row of a run with no steady frame."""

ROW_KEYS: Final = (
    "policy",
    "workload",
    "case",
    "source",
    "pattern",
    "consumer",
    "preset",
    "resolution",
    "refresh_hz",
    "layers",
    "swapchain_depth",
    "page_size",
    "flavour",
    "seed",
    "frames",
    "warmup_frames",
    *_MEASURED,
    "leaked_objects",
    "lifetime_reports",
    "status",
    "failed_at_frame",
    "errno",
    "error",
    "finding",
    "kernel",
    *TIMELINE_KEYS,
)
"""The keys of every study row.  ``*_per_flip`` are steady-state means per frame (a frame
flips every layer once; a re-import frame imports, submits and maybe closes); ``map_ms`` to
``ioctl_ms`` split ``ms_per_flip`` (``vma`` and migration terms are 0 in these workloads and
included in the total); ``frame_budget_pct`` is ``ms_per_flip`` as a share of one frame at
``refresh_hz``; ``frames`` is the steady-state frames measured; ``leaked_objects`` /
``lifetime_reports`` come from tearing everything down after the run.  ``status`` is one of
:data:`~gpuvm.study.workloads.STATUSES`; a run that stopped early has ``failed_at_frame``
(None: during set-up), the ``errno`` name and the ``error`` line, and its counts cover the
steady frames before it (costs are None when there were none); ``finding`` is the lifetime
checker's first finding at teardown ("" when none); ``kernel`` is the kernel-version profile
the run's device ran under (:mod:`gpuvm.drm.kernels`)."""


@attrs.frozen(slots=True)
class RunRecord:
    """One model run: a policy and a workload, its steady-state counts, and what teardown
    found (leak report lines, lifetime reports such as use-after-free)."""

    policy: str
    spec: WorkloadSpec
    steady: Counts
    leaks: int
    reports: int
    status: str = "ok"
    failed_at_frame: int | None = None
    errno: str = ""
    error: str = ""
    finding: str = ""
    kernel: str = ""
    """The device's kernel-version profile (``Device.kernel.name``)."""

    @classmethod
    def of(cls, run: WorkloadRun) -> RunRecord:
        """The record of a finished (torn down) workload run."""
        f = run.failure
        return cls(
            run.policy,
            run.spec,
            run.steady,
            len(run.leaks),
            len(run.reports),
            run.status,
            None if f is None else f.frame,
            "" if f is None else f.errno,
            "" if f is None else f.error,
            run.finding,
            run.device.kernel.name,
        )

    @classmethod
    def refused_setup(cls, policy: str, spec: WorkloadSpec, exc: GpuvmError) -> RunRecord:
        """A run whose set-up (buffers, framebuffers) was already refused."""
        f = Failure.of(exc, None)
        kernel = make_policy(policy).default_kernel
        return cls(policy, spec, Counts(), 0, 0, f.status, None, f.errno, f.error, "", kernel)


@attrs.frozen(slots=True)
class Study:
    """The recorded runs, the presets and refresh rates to price them under, and the
    (policy, case, reason) combinations that were not applicable."""

    runs: tuple[RunRecord, ...]
    presets: tuple[CostPreset, ...]
    refresh_rates: tuple[float, ...]
    skipped: tuple[tuple[str, str, str], ...] = ()

    def rows(self) -> list[dict[str, object]]:
        """Every run priced under every preset at every refresh rate, in run order, then
        preset order, then refresh order."""
        return [
            price(run, preset, hz)
            for run in self.runs
            for preset in self.presets
            for hz in self.refresh_rates
        ]

    @property
    def policies(self) -> list[str]:
        return list(dict.fromkeys(r.policy for r in self.runs))

    @property
    def cases(self) -> list[str]:
        return list(dict.fromkeys(r.spec.case for r in self.runs))


def _r(x: float) -> float:
    v = round(float(x), DECIMALS)
    return 0.0 if v == 0 else v  # no -0.0


def price(run: RunRecord, preset: CostPreset, refresh_hz: float) -> dict[str, object]:
    """One study row: ``run``'s steady-state counts per flip, priced by ``preset``, as a
    share of a frame at ``refresh_hz``."""
    steady = run.steady
    spec = run.spec
    if steady.frames == 0:
        return _unmeasured(run, preset, refresh_hz)
    per = steady.per_frame()
    cost = preset.breakdown(steady).per_frame(steady.frames)
    row: dict[str, object] = {
        **_identity(run, preset, refresh_hz),
        "frames": steady.frames,
        "warmup_frames": spec.warmup,
        "maps_per_flip": _r(per["map_ops"]),
        "unmaps_per_flip": _r(per["unmap_ops"]),
        "tlb_invalidations_per_flip": _r(per["tlb_invalidations"]),
        "pages_mapped_per_flip": _r(per["pages_mapped"]),
        "pages_unmapped_per_flip": _r(per["pages_unmapped"]),
        "vmas_created_per_flip": _r(per["vmas_created"]),
        "vmas_destroyed_per_flip": _r(per["vmas_destroyed"]),
        "ioctls_per_flip": _r(per["ioctls"]),
        "gem_closes_per_flip": _r(dict(steady.ioctls_by_name).get("GEM_CLOSE", 0) / steady.frames),
        "map_ms": _r(cost.map_ms),
        "unmap_ms": _r(cost.unmap_ms),
        "tlb_ms": _r(cost.tlb_ms),
        "ioctl_ms": _r(cost.ioctl_ms),
        "ms_per_flip": _r(cost.total_ms),
        "frame_budget_pct": _r(budget_pct(cost.total_ms, refresh_hz)),
        **_outcome(run),
    }
    if spec.workload == "pageflip":
        row.update(timeline_fields(row))
    else:
        row.update(dict.fromkeys(TIMELINE_KEYS))
    return row


def _identity(run: RunRecord, preset: CostPreset, refresh_hz: float) -> dict[str, object]:
    """The keys that say which point of the sweep a row is."""
    spec = run.spec
    return {
        "policy": run.policy,
        "workload": spec.workload,
        "case": spec.case,
        "source": spec.source,
        "pattern": spec.pattern,
        "consumer": spec.consumer,
        "preset": preset.name,
        "resolution": spec.resolution,
        "refresh_hz": _r(refresh_hz),
        "layers": spec.layers,
        "swapchain_depth": spec.swapchain_depth,
        "page_size": spec.page_size,
        "flavour": spec.flavour,
        "seed": spec.seed,
    }


def _outcome(run: RunRecord) -> dict[str, object]:
    """How the run ended: teardown findings, status, failure, kernel profile."""
    return {
        "leaked_objects": run.leaks,
        "lifetime_reports": run.reports,
        "status": run.status,
        "failed_at_frame": run.failed_at_frame,
        "errno": run.errno,
        "error": run.error,
        "finding": run.finding,
        "kernel": run.kernel,
    }


def _unmeasured(run: RunRecord, preset: CostPreset, refresh_hz: float) -> dict[str, object]:
    """The row of a run that stopped before a single steady frame: nothing to price."""
    spec = run.spec
    row: dict[str, object] = {
        **_identity(run, preset, refresh_hz),
        "frames": 0,
        "warmup_frames": spec.warmup,
        **dict.fromkeys(_MEASURED),
        **_outcome(run),
        **dict.fromkeys(TIMELINE_KEYS),
    }
    return {k: row[k] for k in ROW_KEYS}


def dumps_rows(rows: Sequence[Mapping[str, object]]) -> str:
    """Deterministic JSON for study rows: sorted keys, two-space indent, a final newline."""
    return json.dumps(list(rows), sort_keys=True, indent=2, allow_nan=False) + "\n"


def default_workloads(
    frames: int = DEFAULT_FRAMES,
    *,
    resolutions: Iterable[str] = ("1080p",),
    layers: int = 1,
    swapchain_depth: int = 3,
) -> list[WorkloadSpec]:
    """The study's workloads for each resolution: the pageflip of every source with every
    import pattern (weston, wlroots, Android's slot cache, no cache) and the re-import of
    every source, pattern and consumer.  Every spec is validated."""
    out: list[WorkloadSpec] = []
    for res in resolutions:
        name = resolution(res).name
        warm = swapchain_depth + 1
        for source in SOURCES:
            patterns = (
                ["own"] if source == "swapchain" else [p for p in PAGEFLIP_PATTERNS if p != "own"]
            )
            for pattern in patterns:
                out.append(
                    WorkloadSpec(
                        "pageflip",
                        source,
                        pattern,
                        "kms",
                        name,
                        60.0,
                        layers,
                        swapchain_depth,
                        frames,
                        warm,
                    )
                )
        for source in REIMPORT_SOURCES:
            for pattern in REIMPORT_PATTERNS:
                for consumer in CONSUMERS:
                    out.append(
                        WorkloadSpec(
                            "reimport", source, pattern, consumer, name, 60.0, 1, 1, frames, 2
                        )
                    )
    for spec in out:
        spec.validate()
    return out


Progress = Callable[[int, int, str], None]


def run_study(
    *,
    policies: Iterable[str] | None = None,
    presets: Iterable[str | CostPreset] | Mapping[str, CostPreset] | None = None,
    workloads: Sequence[WorkloadSpec] | None = None,
    refresh_rates: Iterable[float] = (60,),
    frames: int = DEFAULT_FRAMES,
    progress: Progress | None = None,
) -> Study:
    """Run every workload under every policy once and return the :class:`Study` (price it
    with :meth:`Study.rows`).  Defaults: every built-in policy, every built-in preset,
    :func:`default_workloads` with ``frames``, 60 Hz.  Everything is validated before the
    first run (:class:`~gpuvm.study.workloads.WorkloadError`, ``UnknownPreset``,
    ``UnknownResolution``).  A VM_BIND consumer under a policy without VM_BIND is skipped
    and listed in :attr:`Study.skipped`.  ``progress(done, total, label)`` is called after
    each run."""
    names = [check_policy(p) for p in (POLICIES if policies is None else policies)]
    names = list(dict.fromkeys(names))
    if not names:
        raise WorkloadError("no policies to study")
    chosen = _presets(presets)
    rates = tuple(float(hz) for hz in refresh_rates)
    for hz in rates:
        if not hz > 0 or hz == float("inf"):
            raise WorkloadError(f"refresh rate must be a number > 0, got {hz!r}")
    if not rates:
        raise WorkloadError("no refresh rates")
    specs = list(default_workloads(frames) if workloads is None else workloads)
    for spec in specs:
        spec.validate()
    plan: list[tuple[str, WorkloadSpec]] = []
    skipped: list[tuple[str, str, str]] = []
    for name in names:
        policy = make_policy(name)
        for spec in specs:
            if spec.consumer == "vm_bind" and not policy.supports_vm_bind:
                skipped.append((name, spec.case, "policy has no VM_BIND"))
            else:
                plan.append((name, spec))
    runs: list[RunRecord] = []
    for i, (name, spec) in enumerate(plan):
        runs.append(record(name, spec))
        if progress is not None:
            progress(i + 1, len(plan), f"{name} {spec.case}")
    return Study(tuple(runs), chosen, rates, tuple(skipped))


def record(policy: str, spec: WorkloadSpec) -> RunRecord:
    """Run ``spec`` under ``policy`` to the end or to its first refused frame, tear it down
    and keep the outcome: a failure is a result (its status, frame, errno and finding)."""
    try:
        run = run_spec(spec, policy, teardown=True, tolerate=True)
    except WorkloadError:
        raise
    except GpuvmError as exc:
        if isinstance(exc, UnknownPolicy):
            raise
        return RunRecord.refused_setup(policy, spec, exc)
    return RunRecord.of(run)


def _presets(
    presets: Iterable[str | CostPreset] | Mapping[str, CostPreset] | None,
) -> tuple[CostPreset, ...]:
    if presets is None:
        return tuple(builtin_presets().values())
    if isinstance(presets, Mapping):
        out = tuple(presets.values())
    else:
        out = tuple(p if isinstance(p, CostPreset) else get_preset(p) for p in presets)
    if not out:
        raise WorkloadError("no cost presets to price with")
    return out
