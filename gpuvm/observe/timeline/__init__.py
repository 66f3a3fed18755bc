"""The vblank timeline observer: atomic commits, fences and vblanks simulated with SimPy on
top of the model's priced counts (the model itself stays clock-free).  Needs the optional
``timeline`` extra (``pip install 'gpuvm-model[timeline]'``)."""

from __future__ import annotations

from gpuvm.observe.timeline.params import ASSUMPTIONS, TimelineError, TimelineParams
from gpuvm.observe.timeline.perfetto import dumps_perfetto, to_trace_events
from gpuvm.observe.timeline.sim import Span, Timeline, simulate
from gpuvm.observe.timeline.tlb import INVALIDATION_KINDS, InvalidationRule, check_page_size

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
