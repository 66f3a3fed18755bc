"""The timeline in the Chrome Trace Event format (JSON object form), which Perfetto's UI and
``chrome://tracing`` open as they are: one thread track per CRTC, per commit worker, per
ioctl thread and per GPU ring; complete events (``ph: X``) for spans, thread-scoped instant
events (``ph: i``) for vblanks, scanouts and dropped frames.  Timestamps are microseconds."""

from __future__ import annotations

import json
from typing import Any

from gpuvm.observe.timeline.sim import Timeline

__all__ = ["dumps_perfetto", "to_trace_events"]

PID = 1


def _tracks(timeline: Timeline) -> list[str]:
    order = {"crtc": 0, "ioctl": 1, "commit_worker": 2, "gpu_ring": 3, "vm_bind": 4}

    def key(track: str) -> tuple[int, str]:
        base = track.rstrip("0123456789")
        return order.get(base, 9), track

    return sorted({s.track for s in timeline.spans}, key=key)


def to_trace_events(timeline: Timeline) -> dict[str, Any]:
    """The trace as a JSON-able dict (``traceEvents`` plus ``displayTimeUnit``)."""
    tracks = _tracks(timeline)
    tid = {t: i + 1 for i, t in enumerate(tracks)}
    events: list[dict[str, Any]] = [
        {"ph": "M", "pid": PID, "name": "process_name", "args": {"name": "gpuvm timeline"}}
    ]
    for t in tracks:
        events.append(
            {"ph": "M", "pid": PID, "tid": tid[t], "name": "thread_name", "args": {"name": t}}
        )
    for s in timeline.spans:
        ev: dict[str, Any] = {
            "name": s.name,
            "pid": PID,
            "tid": tid[s.track],
            "ts": round(s.start * 1000.0, 3),
            "cat": s.track.rstrip("0123456789"),
            "args": {"frame": s.frame, "crtc": s.crtc},
        }
        if s.end > s.start:
            ev["ph"] = "X"
            ev["dur"] = round((s.end - s.start) * 1000.0, 3)
        else:
            ev["ph"] = "i"
            ev["s"] = "t"
        events.append(ev)
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"metrics": timeline.metrics()},
    }


def dumps_perfetto(timeline: Timeline) -> str:
    """:func:`to_trace_events` as JSON text."""
    return json.dumps(to_trace_events(timeline), indent=1) + "\n"
