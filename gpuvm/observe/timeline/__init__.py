"""The vblank timeline observer: atomic commits, fences and vblanks simulated with SimPy on
top of the model's priced counts (the model itself stays clock-free).  Needs the optional
``timeline`` extra (``pip install 'gpuvm-model[timeline]'``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpuvm.observe.timeline.params import ASSUMPTIONS, TimelineError, TimelineParams
from gpuvm.observe.timeline.tlb import INVALIDATION_KINDS, InvalidationRule, check_page_size

if TYPE_CHECKING:
    from gpuvm.observe.timeline.perfetto import dumps_perfetto, to_trace_events
    from gpuvm.observe.timeline.sim import Span, Timeline, simulate

_NEED_SIMPY = {
    "Span": "sim",
    "Timeline": "sim",
    "simulate": "sim",
    "dumps_perfetto": "perfetto",
    "to_trace_events": "perfetto",
}
"""Names whose modules import SimPy: loaded on first use, so the parameters and the
invalidation rules (and the study rows that use them) work without the extra."""


def __getattr__(name: str) -> Any:
    module = _NEED_SIMPY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "ASSUMPTIONS",
    "INVALIDATION_KINDS",
    "InvalidationRule",
    "Span",
    "Timeline",
    "TimelineError",
    "TimelineParams",
    "check_page_size",
    "dumps_perfetto",
    "simulate",
    "to_trace_events",
]
