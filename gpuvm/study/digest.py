"""What the study report keeps of a sweep: bounded aggregates, filled one row at a time.

A sweep of 10^5 points streams its rows to ``study.json`` / ``study.csv``
(:class:`~gpuvm.study.sweep.RowSink`); the report is drawn from a :class:`ReportDigest`,
which holds a bounded amount whatever the number of rows:

* the detailed tables of the first :attr:`~ReportDigest.max_groups` settings (resolution,
  layers, refresh rate), one cell per workload x policy x preset (at most
  :attr:`~ReportDigest.max_cells` cells in all); later settings are counted, not kept;
* per policy x preset summaries (points, failures, min / mean / max cost) and the
  :attr:`~ReportDigest.top_n` most expensive points;
* the failed runs and the runs with lifetime problems (first preset, first refresh rate),
  the first :attr:`~ReportDigest.max_listed` of each with a count of the rest;
* the running maximum of the heatmap presets' costs (one colour scale for the family).

Feeding it the rows of a small study gives exactly the tables the whole row list gave.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

from gpuvm.observe.costs import CostPreset
from gpuvm.study.runner import RunRecord, Study

__all__ = ["HEATMAP_PRESETS", "CellKey", "GroupKey", "PolicySummary", "ReportDigest", "group_key"]

Row = Mapping[str, Any]
GroupKey = tuple[str, int, float]
CellKey = tuple[str, str, str]

HEATMAP_PRESETS: Final = ("msm-thread", "msm-kms")
"""Presets that get a heatmap (when the study priced them); else the first preset."""

MAX_GROUPS: Final = 24
MAX_CELLS: Final = 20_000
MAX_LISTED: Final = 50
TOP_N: Final = 10


def group_key(row: Row) -> GroupKey:
    """The setting a row belongs to in the report: resolution, layers, refresh rate."""
    return (str(row["resolution"]), int(row["layers"]), float(row["refresh_hz"]))


@attrs.define(slots=True)
class PolicySummary:
    """One policy under one preset over the whole sweep: how many points, how many failed,
    and the cost (ms per flip, % of the frame) of the ones that finished."""

    points: int = 0
    failed: int = 0
    ms_sum: float = 0.0
    ms_min: float = float("inf")
    ms_max: float = 0.0
    pct_max: float = 0.0

    @property
    def measured(self) -> int:
        return self.points - self.failed

    def add(self, row: Row) -> None:
        self.points += 1
        if row["status"] != "ok" or row["ms_per_flip"] is None:
            self.failed += 1
            return
        ms = float(row["ms_per_flip"])
        self.ms_sum += ms
        self.ms_min = min(self.ms_min, ms)
        self.ms_max = max(self.ms_max, ms)
        self.pct_max = max(self.pct_max, float(row["frame_budget_pct"]))


@attrs.define(slots=True)
class ReportDigest:
    """Bounded aggregates of a sweep's rows and runs for :mod:`gpuvm.study.report`.  Feed it
    with :meth:`add_runs` (the run records, in sweep order), :meth:`add_skipped` and
    :meth:`add` (each row); nothing it holds grows with the number of rows past the caps."""

    presets: tuple[CostPreset, ...]
    refresh_rates: tuple[float, ...]
    max_groups: int = MAX_GROUPS
    max_cells: int = MAX_CELLS
    max_listed: int = MAX_LISTED
    top_n: int = TOP_N
    rows_seen: int = 0
    runs_seen: int = 0
    first_run: RunRecord | None = None
    groups: dict[GroupKey, dict[CellKey, Row]] = attrs.field(factory=dict)
    """The detailed settings: (case, policy, preset) -> row (the last row of the cell)."""
    cells: int = 0
    rows_not_detailed: int = 0
    heat_vmax: float = 10.0
    summaries: dict[tuple[str, str], PolicySummary] = attrs.field(factory=dict)
    failures: list[Row] = attrs.field(factory=list)
    failures_total: int = 0
    failure_counts: dict[str, int] = attrs.field(factory=dict)
    lifetime: list[Row] = attrs.field(factory=list)
    lifetime_total: int = 0
    run_failures: list[RunRecord] = attrs.field(factory=list)
    run_failure_counts: dict[str, int] = attrs.field(factory=dict)
    close_rows: list[Row] = attrs.field(factory=list)
    """Pageflip rows that close handles every frame, enough of them for the report's
    GEM_CLOSE paragraph: the first, each policy's distinct ioctl wait at the first one's
    preset and rate, and each pattern's first (capped at ``4 * max_listed``)."""
    _close_seen: set[tuple[str, ...]] = attrs.field(factory=set)
    _policies: dict[str, None] = attrs.field(factory=dict)
    _cases: dict[str, None] = attrs.field(factory=dict)
    _skipped: dict[tuple[str, str, str], None] = attrs.field(factory=dict)
    _top: list[tuple[float, int, Row]] = attrs.field(factory=list)
    _heat: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        names = [p.name for p in self.presets]
        self._heat = tuple(p for p in HEATMAP_PRESETS if p in names) or tuple(names[:1])

    @classmethod
    def of_study(cls, study: Study, rows: Iterable[Row] | None = None) -> ReportDigest:
        """The digest of a study held in memory (the Python API): its runs, skipped list and
        rows (``study.rows()`` unless given)."""
        d = cls(study.presets, study.refresh_rates)
        d.add_runs(study.runs)
        d.add_skipped(study.skipped)
        for row in study.rows() if rows is None else rows:
            d.add(row)
        return d

    # --- feeding --------------------------------------------------------------------------

    def add_runs(self, runs: Iterable[RunRecord]) -> None:
        """Run records in sweep order: the policy and workload order of the tables, the first
        run's frames for the header, the runs that stopped early (capped)."""
        for r in runs:
            self.runs_seen += 1
            if self.first_run is None:
                self.first_run = r
            self._policies.setdefault(r.policy)
            self._cases.setdefault(r.spec.case)
            if r.status != "ok":
                self.run_failure_counts[r.status] = self.run_failure_counts.get(r.status, 0) + 1
                if (
                    r.status in ("exhausted", "refused")
                    and len(self.run_failures) < self.max_listed
                ):
                    self.run_failures.append(r)

    def add_skipped(self, skipped: Iterable[tuple[str, str, str]]) -> None:
        """(policy, case, reason) combinations not applicable (each listed once)."""
        for s in skipped:
            self._skipped.setdefault(s)

    def add(self, row: Row) -> None:
        """One row of the sweep."""
        self.rows_seen += 1
        key = group_key(row)
        cell = (str(row["case"]), str(row["policy"]), str(row["preset"]))
        grp = self.groups.get(key)
        if grp is None and len(self.groups) < self.max_groups and self.cells < self.max_cells:
            grp = self.groups[key] = {}
        if grp is not None and (cell in grp or self.cells < self.max_cells):
            if cell not in grp:
                self.cells += 1
            grp[cell] = row
        else:
            self.rows_not_detailed += 1
        ok = row["status"] == "ok" and row["frame_budget_pct"] is not None
        if ok and row["preset"] in self._heat:
            self.heat_vmax = max(self.heat_vmax, float(row["frame_budget_pct"]))
        self.summaries.setdefault((cell[1], cell[2]), PolicySummary()).add(row)
        if ok:
            item = (float(row["frame_budget_pct"]), -self.rows_seen, row)
            if len(self._top) < self.top_n:
                heapq.heappush(self._top, item)
            elif item > self._top[0]:
                heapq.heapreplace(self._top, item)
        self._add_close(row)
        if row["preset"] != self.presets[0].name or row["refresh_hz"] != self.refresh_rates[0]:
            return
        if row["status"] != "ok":
            self.failures_total += 1
            st = str(row["status"])
            self.failure_counts[st] = self.failure_counts.get(st, 0) + 1
            if len(self.failures) < self.max_listed:
                self.failures.append(row)
        if row["leaked_objects"] or row["lifetime_reports"]:
            self.lifetime_total += 1
            if len(self.lifetime) < self.max_listed:
                self.lifetime.append(row)

    def _add_close(self, row: Row) -> None:
        closing = (
            row.get("workload") == "pageflip"
            and row.get("gem_closes_per_flip")
            and row.get("ioctl_blocked_ms") is not None
        )
        if not closing or len(self.close_rows) >= 4 * self.max_listed:
            return
        first = self.close_rows[0] if self.close_rows else row
        keys: list[tuple[str, ...]] = [("pattern", str(row["pattern"]))]
        if (row["preset"], row["refresh_hz"]) == (first["preset"], first["refresh_hz"]):
            keys.append(("wait", str(row["policy"]), repr(float(row["ioctl_blocked_ms"]))))
        new = [k for k in keys if k not in self._close_seen]
        if new or not self.close_rows:
            self._close_seen.update(new)
            self.close_rows.append(row)

    # --- reading --------------------------------------------------------------------------

    @property
    def policies(self) -> list[str]:
        return list(self._policies)

    @property
    def cases(self) -> list[str]:
        return list(self._cases)

    @property
    def skipped(self) -> list[tuple[str, str, str]]:
        return list(self._skipped)

    @property
    def heat_presets(self) -> tuple[str, ...]:
        return self._heat

    @property
    def multi(self) -> bool:
        """More than one setting in the sweep (detailed or not)."""
        return len(self.groups) > 1 or self.rows_not_detailed > 0

    def top(self) -> list[Row]:
        """The most expensive finished points, most expensive first (ties: sweep order)."""
        return [r for _, _, r in sorted(self._top, reverse=True)]

    def held_rows(self) -> int:
        """How many rows the digest holds (detail cells, failure and lifetime lists, top-N):
        bounded by the caps, whatever the number of rows fed."""
        return (
            self.cells
            + len(self.failures)
            + len(self.lifetime)
            + len(self._top)
            + len(self.close_rows)
        )


def summary_table(d: ReportDigest) -> tuple[list[str], list[list[str]]]:
    """The per policy x preset summary as a Markdown table's header and body."""
    header = ["policy", "preset", "points", "failed", "min ms", "mean ms", "max ms", "max %"]
    body: list[list[str]] = []
    for p, s in itertools.product(d.policies, [x.name for x in d.presets]):
        sm = d.summaries.get((p, s))
        if sm is None:
            continue
        if sm.measured:
            nums = [
                f"{sm.ms_min:.3f}",
                f"{sm.ms_sum / sm.measured:.3f}",
                f"{sm.ms_max:.3f}",
                f"{sm.pct_max:.1f}",
            ]
        else:
            nums = ["-"] * 4
        body.append([f"`{p}`", f"`{s}`", str(sm.points), str(sm.failed), *nums])
    return header, body


def listed(total: int, shown: Sequence[object]) -> str:
    """The note under a capped list ("" when nothing was left out)."""
    rest = total - len(shown)
    return f"... and {rest} more (every row is in `study.json` and `study.csv`)." if rest else ""
