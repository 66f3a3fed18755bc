"""Reading ftrace text: one :class:`TraceLine` per event line of ``trace-cmd report`` or of
the raw ``trace_pipe`` / ``trace`` files.

Both print, per event, the task name and pid, optionally the tgid in parentheses, the CPU in
brackets, optionally the latency flags (irqs-off, need-resched, hardirq/softirq,
preempt-depth, migrate-disable: four or five characters), the timestamp in seconds, the
event name and its payload (the event's ``TP_printk`` output).  The header lines of either
tool (``# tracer: nop``, ``cpus=8``, ``version = 6``, ``CPU 3 is empty``) are skipped; any
other line that is not an event is reported with its line number.  A payload that the
kernel printed with an embedded newline (``amdgpu_vm_update_ptes`` prints its PTE array on
the next line) continues on lines of its own, which the reader joins to the event.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import attrs

__all__ = ["LineProblem", "TraceLine", "read_lines"]

_EVENT = re.compile(
    r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+"
    r"(?:\(\s*(?P<tgid>\d+|-+)\s*\)\s+)?"
    r"\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[A-Za-z0-9.]{4,5})\s+)?"
    r"(?P<ts>\d+\.\d+):\s+"
    r"(?:(?P<system>[A-Za-z0-9_]+):)?(?P<event>[A-Za-z0-9_]+):"
    r"(?P<payload>.*)$"
)
_HEADER = re.compile(r"^\s*(?:#.*|cpus=\d+|version\s*=\s*\S+|CPU\s*\d+ is empty|)\s*$")
_CONTINUATION = re.compile(r"^\s*\{[0-9a-fA-Fx,\s]*\}\s*$")


@attrs.frozen(slots=True)
class TraceLine:
    """One event: where it came from (``line``, 1-based), who ran it, when, and the event
    name with its payload text (leading and trailing blanks stripped)."""

    line: int
    task: str
    pid: int
    tgid: int | None
    cpu: int
    flags: str
    timestamp: float
    event: str
    payload: str


@attrs.frozen(slots=True)
class LineProblem:
    """A line that is neither an event nor a header: its number and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def _clip(text: str, n: int = 60) -> str:
    text = text.strip()
    return text if len(text) <= n else text[: n - 3] + "..."


def read_lines(text: str | Iterable[str]) -> Iterator[TraceLine | LineProblem]:
    """The events of an ftrace text dump, in order, and a :class:`LineProblem` for each
    line that is not one.  Continuation lines (see the module doc) are appended to the
    payload of the event before them, separated by a newline."""
    lines = text.splitlines() if isinstance(text, str) else (s.rstrip("\n") for s in text)
    pending: TraceLine | None = None
    for n, raw in enumerate(lines, 1):
        m = _EVENT.match(raw)
        if m is None:
            if pending is not None and _CONTINUATION.match(raw):
                pending = attrs.evolve(pending, payload=pending.payload + "\n" + raw.strip())
                continue
            if _HEADER.match(raw):
                continue
            if pending is not None:
                yield pending
                pending = None
            yield LineProblem(n, f"not a trace event line: {_clip(raw)!r}")
            continue
        if pending is not None:
            yield pending
        tgid = m["tgid"]
        pending = TraceLine(
            line=n,
            task=m["task"].strip(),
            pid=int(m["pid"]),
            tgid=int(tgid) if tgid is not None and tgid.isdigit() else None,
            cpu=int(m["cpu"]),
            flags=m["flags"] or "",
            timestamp=float(m["ts"]),
            event=m["event"],
            payload=m["payload"].strip(),
        )
    if pending is not None:
        yield pending
