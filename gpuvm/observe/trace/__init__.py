"""Record and replay: every public operation of the driver layer and of the core VM_BIND
path as one JSON line, replayed deterministically.

A :class:`Session` performs operations by name on objects named by stable ids (``d0`` a
device, ``f0`` a file, ``p0`` a process fd table, ``fb0`` a framebuffer, ``j0`` a job,
``v0`` a core VM, ``g0`` a core buffer) and records each as a line of the trace (format in
``docs/trace-format.md``): its arguments, its result (a handle, an fd, an iova) and, for a
refused call, the errno name.  :func:`replay` validates a whole trace first (JSON, version,
known ops, field types, ids defined before use), then replays it into a fresh model,
checking that each refusal and each result repeats; any mismatch rejects the trace with its
line number and the reason, and the half-built model is discarded.  A session can run a
:class:`~gpuvm.observe.checker.LifetimeChecker` after every operation.

The package has one module per concept: :mod:`~gpuvm.observe.trace.schema` (the format and
its validation), :mod:`~gpuvm.observe.trace.session` (recording) and
:mod:`~gpuvm.observe.trace.replayer` (replay).  Every public name is importable from
``gpuvm.observe.trace``.
"""

from gpuvm.observe.trace.replayer import ReplayResult, replay
from gpuvm.observe.trace.replayer import events_of as events_of
from gpuvm.observe.trace.schema import (
    CAPS_PRESETS,
    FORMAT,
    OPS,
    TRACE_VERSION,
    TraceError,
    load,
    validate,
)
from gpuvm.observe.trace.schema import OPTIONAL as OPTIONAL
from gpuvm.observe.trace.session import Session
from gpuvm.observe.trace.session import event_fields as event_fields
from gpuvm.observe.trace.session import format_event as format_event

__all__ = [
    "CAPS_PRESETS",
    "FORMAT",
    "OPS",
    "TRACE_VERSION",
    "ReplayResult",
    "Session",
    "TraceError",
    "load",
    "replay",
    "validate",
]
