"""An ingested log's result: the model trace and the report ``gpuvm ingest`` prints."""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs

from gpuvm.observe.costs import CostCounters
from gpuvm.observe.trace import Session
from gpuvm.study.ingest.parsed import ParsedLog

__all__ = ["Reconstruction"]


@attrs.define(slots=True)
class Reconstruction:
    """An ingested log: the model trace (``session.dumps()``), what was parsed, and what
    could not be reconstructed (``notes``: one line each, with counts)."""

    session: Session
    log: ParsedLog
    policy: str
    devices: dict[str, str]
    """Model device id -> the log's name for it."""
    vms: dict[str, str]
    """Model file id -> the log's name for its VM."""
    frames: int
    flips: int
    notes: list[str]
    counters: CostCounters
    tlb_sent: int = 0
    tlb_received: int = 0
    moves: list[dict[str, Any]] = attrs.field(factory=list)

    @property
    def text(self) -> str:
        return self.session.dumps()

    @property
    def refused(self) -> int:
        return sum(1 for r in self.session.lines if "error" in r)

    def summary(self) -> dict[str, Any]:
        """Everything the ``gpuvm ingest`` report prints, as plain data."""
        ops = Counter(str(r["op"]) for r in self.session.lines)
        total = self.counters.total()
        return {
            "policy": self.policy,
            "lines": self.log.lines,
            "events": dict(sorted(self.log.counts().items())),
            "unknown_events": dict(sorted(self.log.unknown.items())),
            "devices": self.devices,
            "vms": self.vms,
            "ops": dict(sorted(ops.items())),
            "refused_ops": self.refused,
            "frames": self.frames,
            "flips": self.flips,
            "tlb_fences": {"sent": self.tlb_sent, "received": self.tlb_received},
            "model": {
                "map_ops": total.map_ops,
                "unmap_ops": total.unmap_ops,
                "tlb_invalidations": total.tlb_invalidations,
            },
            "moves": self.moves,
            "not_reconstructed": self.notes,
        }
