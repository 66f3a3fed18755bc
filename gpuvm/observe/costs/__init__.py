"""Cost observers and cost presets: from model events to milliseconds per frame.

* :class:`CostCounters` subscribes to a device's :class:`~gpuvm.core.events.EventBus` and counts
  map and unmap calls, page-table entries, TLB invalidations (per-page range or whole-context
  flush), VMAs, migrations and ioctls, per VM, per device and per frame.
* :class:`Counts` is the frozen record of one scope; :class:`CostPreset` prices it in
  milliseconds (:meth:`CostPreset.cost`, :meth:`CostPreset.breakdown`).
* :func:`get_preset` / :func:`builtin_presets` / :func:`load_presets` find presets (built-in
  ones ship as TOML in ``gpuvm/presets/``).
* :func:`frame_ms`, :func:`budget_pct` and :data:`RESOLUTIONS` give frame budgets and
  scanout buffer sizes.

See ``docs/costs.md``.
"""

from gpuvm.observe.costs.budget import (
    REFRESH_RATES,
    RESOLUTIONS,
    Resolution,
    budget_pct,
    frame_ms,
    resolution,
)
from gpuvm.observe.costs.counters import CostCounters, FrameScope
from gpuvm.observe.costs.counts import DEFAULT_PAGE_SIZE, TLB_KINDS, Counts, TlbKind, pages_touched
from gpuvm.observe.costs.errors import (
    FrameScopeError,
    PresetError,
    PresetFormatError,
    UnknownPreset,
    UnknownResolution,
)
from gpuvm.observe.costs.presets import (
    PRESET_TLB_KINDS,
    CostBreakdown,
    CostPreset,
    all_presets,
    builtin_presets,
    dumps_presets,
    get_preset,
    ioctl_key,
    load_presets,
    loads_presets,
)

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "PRESET_TLB_KINDS",
    "REFRESH_RATES",
    "RESOLUTIONS",
    "TLB_KINDS",
    "CostBreakdown",
    "CostCounters",
    "CostPreset",
    "Counts",
    "FrameScope",
    "FrameScopeError",
    "PresetError",
    "PresetFormatError",
    "Resolution",
    "TlbKind",
    "UnknownPreset",
    "UnknownResolution",
    "all_presets",
    "budget_pct",
    "builtin_presets",
    "dumps_presets",
    "frame_ms",
    "get_preset",
    "ioctl_key",
    "load_presets",
    "loads_presets",
    "pages_touched",
    "resolution",
]
