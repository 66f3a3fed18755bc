"""The report's bounded digest of a streamed sweep: a synthetic stream of many rows leaves it
holding a number of rows set by its caps, not by the stream; capped lists say how many were
left out; the digest of a small study renders the same report as the study itself; the
streamed ``--json`` writer gives the bytes of :func:`dumps_rows`."""

from __future__ import annotations

import io
import itertools
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from gpuvm.study.digest import ReportDigest
from gpuvm.study.report import render_markdown
from gpuvm.study.runner import Study, dumps_rows, run_study
from gpuvm.study.sweep import JsonRowsWriter
from gpuvm.study.timeline_study import timeline_markdown


@pytest.fixture(scope="module")
def study() -> Study:
    return run_study(
        policies=("gpuvm_eager", "gpuvm_legacy_trigger"),
        presets=("msm-kms", "msm-thread"),
        frames=12,
        refresh_rates=(60, 144),
    )


def stream(base: list[dict[str, Any]], n: int, *, fail_every: int = 0) -> Iterator[dict[str, Any]]:
    """``n`` rows cycling over ``base``, each in a setting of its own (a new resolution every
    ``len(base)`` rows), every ``fail_every``-th one exhausted."""
    for i, row in zip(range(n), itertools.cycle(base), strict=False):
        out = {**row, "resolution": f"{1000 + i // len(base)}x720", "seed": i}
        if fail_every and i % fail_every == 0:
            out.update(status="exhausted", failed_at_frame=i, errno="ENOSPC", ms_per_flip=None)
        yield out


def test_digest_holds_a_bounded_number_of_rows(study: Study) -> None:
    base = study.rows()
    held = []
    for n in (1_000, 10_000, 40_000):
        d = ReportDigest(study.presets, study.refresh_rates)
        d.add_runs(study.runs)
        for row in stream(base, n, fail_every=7):
            d.add(row)
        assert d.rows_seen == n
        held.append(d.held_rows())
    caps = d.max_cells + 6 * d.max_listed + d.top_n
    assert held[1] == held[2] <= caps  # flat once the caps are reached
    assert len(d.groups) == d.max_groups and d.rows_not_detailed == 40_000 - d.cells
    assert len(d.failures) == d.max_listed < d.failures_total
    assert sum(s.points for s in d.summaries.values()) == 40_000


def test_digest_memory_is_flat_in_the_stream_length(study: Study) -> None:
    """tracemalloc's peak while streaming 4x more rows stays within a few percent: the rows
    pass through, only the aggregates stay."""
    base = study.rows()
    peaks = []
    for n in (10_000, 40_000):
        d = ReportDigest(study.presets, study.refresh_rates)
        tracemalloc.start()
        for row in stream(base, n, fail_every=7):
            d.add(row)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < peaks[0] * 1.1


def test_capped_sections_count_the_rest(study: Study) -> None:
    base: list[dict[str, Any]] = study.rows()
    d = ReportDigest(study.presets, study.refresh_rates, max_listed=5, max_groups=2)
    d.add_runs(study.runs)
    for row in stream(base, 3_000, fail_every=3):
        d.add(row)
    md = render_markdown(d, None, {})
    assert d.multi and "## Summary over every setting" in md
    rest = d.failures_total - 5
    assert f"... and {rest} more (every row is in `study.json` and `study.csv`); " in md
    assert f"{d.rows_not_detailed} more points are only in this summary" in md
    titles = [t for t in md.splitlines() if t.startswith("## ") and "x720" in t]
    assert len(titles) == 2  # two detailed settings
    top = d.top()
    pcts = [float(r["frame_budget_pct"]) for r in top]
    assert len(top) == d.top_n and pcts == sorted(pcts, reverse=True)
    everything = [float(r["frame_budget_pct"]) for r in base if r["status"] == "ok"]
    assert pcts[0] == max(everything)


def test_digest_renders_what_the_study_renders(study: Study) -> None:
    rows = study.rows()
    d = ReportDigest(study.presets, study.refresh_rates)
    d.add_runs(study.runs)
    d.add_skipped(study.skipped)
    for row in rows:
        d.add(row)
    md = render_markdown(d, None, {})
    assert md == render_markdown(study, rows, {})
    assert d.multi and "## Summary over every setting" in md  # 60 and 144 Hz
    # The GEM_CLOSE paragraph from the digest's few kept rows is the one all rows give.
    full = timeline_markdown(rows=[], study_rows=rows)
    assert any("GEM_CLOSE waits" in line for line in full)
    assert timeline_markdown(rows=[], study_rows=d.close_rows) == full
    assert len(d.close_rows) < len(rows) / 4
    one = Study(study.runs, study.presets, (60.0,))
    assert "## Summary over every setting" not in render_markdown(one, None, {})


@pytest.mark.parametrize("n", [0, 1, 5])
def test_streamed_json_is_dumps_rows_byte_for_byte(study: Study, n: int) -> None:
    rows = study.rows()[:n]
    buf = io.StringIO()
    w = JsonRowsWriter(buf)
    for r in rows:
        w.write(r)
    w.close()
    assert buf.getvalue() == dumps_rows(rows)
    assert json.loads(buf.getvalue()) == rows
