"""Parsing a whole log: the supported events of an ftrace dump with their fields
(:mod:`gpuvm.study.ingest.formats`), the unsupported event names counted, and the
malformed lines collected with their numbers (:mod:`gpuvm.study.ingest.lines`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs

from gpuvm.core.errors import GpuvmError
from gpuvm.study.ingest.formats import PayloadError, parse_payload
from gpuvm.study.ingest.lines import LineProblem, TraceLine, read_lines

__all__ = ["IngestError", "ParsedEvent", "ParsedLog", "parse_log"]


class IngestError(GpuvmError):
    """A log that cannot be ingested (``-EINVAL``): every problem, one per line."""

    def __init__(self, problems: list[LineProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems

    __str__ = Exception.__str__


@attrs.frozen(slots=True)
class ParsedEvent:
    """A supported event with its fields."""

    line: TraceLine
    fields: dict[str, Any]

    @property
    def name(self) -> str:
        return self.line.event


@attrs.define(slots=True)
class ParsedLog:
    """The supported events of a log in time order, the count of each unsupported event
    name (skipped) and the problems (malformed lines)."""

    events: list[ParsedEvent]
    unknown: Counter[str]
    problems: list[LineProblem]
    lines: int = 0

    def counts(self) -> Counter[str]:
        return Counter(e.name for e in self.events)


def parse_log(text: str) -> ParsedLog:
    """Read and parse a whole log; malformed lines are collected, not raised."""
    events: list[ParsedEvent] = []
    unknown: Counter[str] = Counter()
    problems: list[LineProblem] = []
    for item in read_lines(text):
        if isinstance(item, LineProblem):
            problems.append(item)
            continue
        try:
            fields = parse_payload(item.event, item.payload)
        except PayloadError as e:
            problems.append(LineProblem(item.line, str(e)))
            continue
        if fields is None:
            unknown[item.event] += 1
            continue
        events.append(ParsedEvent(item, fields))
    events.sort(key=lambda e: (e.line.timestamp, e.line.line))
    return ParsedLog(events, unknown, problems, len(text.splitlines()))
