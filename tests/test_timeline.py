"""The vblank timeline: the kernel's commit ordering, the hand calculation of
docs/timeline.md, the Chrome trace export and the command line."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from gpuvm.observe.costs import get_preset
from gpuvm.observe.timeline import (
    InvalidationRule,
    TimelineError,
    TimelineParams,
    check_page_size,
    simulate,
    to_trace_events,
)
from gpuvm.study.cli import main
from gpuvm.study.timeline_study import TIMELINE_KEYS, params_of_row, setting_row, timeline_fields

TAIL_1080P_MSM_MS = 5.0855  # 20 us + 2025 x 1.5 ns + 2025 x 2.5 us (msm-kms preset)


def test_no_costs_no_drops_at_any_rate() -> None:
    for hz in (30.0, 60.0, 144.0, 240.0):
        tl = simulate(TimelineParams(refresh_hz=hz, layers=2, frames=40, render_ms=3.0))
        assert tl.missed_vblanks() == 0
        assert [f[4] for f in tl.flips] == list(range(1, 41))


def test_hand_calculation_of_docs_agrees() -> None:
    """docs/timeline.md: eager teardown, 144 Hz, 2 planes, msm per-page invalidation.  The
    serial worker is busy 2 x 5.0855 = 10.171 ms after each flip, more than one period
    (6.944 ms) and less than two, so frame k flips at vblank 2k + 1: N frames miss N - 1
    vblanks over 2N - 1 periods."""
    n, hz = 60, 144.0
    tl = simulate(TimelineParams(refresh_hz=hz, layers=2, frames=n, tail_ms=TAIL_1080P_MSM_MS))
    assert [f[4] for f in tl.flips] == [2 * k + 1 for k in range(n)]
    period = 1000.0 / hz
    hand = (n - 1) / ((2 * n - 1) * period / 1000.0)
    assert tl.dropped_per_s() == pytest.approx(hand)
    assert hand == pytest.approx(71.395, abs=1e-3)
    # steady state: every second vblank missed, hz / 2 = 72 per second
    assert (n - 1) / (2 * n - 1) * hz == pytest.approx(72.0, rel=0.01)


def test_model_priced_headline() -> None:
    eager = setting_row("gpuvm_eager", get_preset("msm-kms"), refresh_hz=144.0, layers=2)
    ref = setting_row("gpuvm_vma_ref", get_preset("msm-kms"), refresh_hz=144.0, layers=2)
    fe, fr = timeline_fields(eager), timeline_fields(ref)
    assert set(fe) == set(TIMELINE_KEYS)
    assert float(fe["dropped_frames_per_s"]) > 70.0  # type: ignore[arg-type]
    assert fr["dropped_frames_per_s"] == 0.0
    assert params_of_row(eager).tail_ms == pytest.approx(
        float(eager["unmap_ms"] + eager["tlb_ms"]) / 2
    )  # type: ignore[operator]


def test_unordered_tails_overlap_but_stall_checks_hold() -> None:
    """With tails on an unbound queue the next commit only waits for hw_done / flip_done,
    and stall_checks makes commit k wait for commit k-2's cleanup_done in the ioctl."""
    p = TimelineParams(
        refresh_hz=144.0, layers=2, frames=30, tail_ms=TAIL_1080P_MSM_MS, serial_worker=False
    )
    tl = simulate(p)
    assert tl.missed_vblanks() == 0
    cleanups = [s for s in tl.spans if s.name.startswith("cleanup")]
    assert any(a.end > b.start for a, b in itertools.pairwise(cleanups))
    # a tail longer than two periods makes stall_checks drop frames even unordered
    slow = simulate(
        TimelineParams(refresh_hz=144.0, layers=2, frames=30, tail_ms=8.0, serial_worker=False)
    )
    assert slow.missed_vblanks() > 0


def test_blocking_commit_runs_tail_in_ioctl() -> None:
    """A blocking commit returns after its tail: the ioctl span ends after the cleanup."""
    tl = simulate(TimelineParams(refresh_hz=60.0, frames=10, tail_ms=1.0, nonblocking=False))
    assert tl.missed_vblanks() == 0
    lat = tl.flip_latencies()
    assert lat[0] == pytest.approx(1000 / 60)
    assert lat[1:] == pytest.approx([7.0] * 9)  # repaint starts one window before vblank
    ioctls = [s for s in tl.spans if s.track == "ioctl0"]
    assert [s.end for s in ioctls] == pytest.approx([f[3] + 1.0 for f in tl.flips])


def test_vm_bind_job_delays_render() -> None:
    base = simulate(TimelineParams(refresh_hz=144.0, frames=20, render_ms=3.0))
    bound = simulate(TimelineParams(refresh_hz=144.0, frames=20, render_ms=3.0, vm_bind_ms=5.0))
    assert base.missed_vblanks() == 0 and bound.missed_vblanks() > 0
    assert any(s.track == "vm_bind" for s in bound.spans)


@pytest.mark.parametrize(
    "kw",
    [{"refresh_hz": 0.0}, {"render_ms": -1.0}, {"layers": 0}, {"tail_ms": math.nan}, {"frames": 0}],
)
def test_bad_params(kw: dict[str, float]) -> None:
    with pytest.raises(TimelineError):
        TimelineParams(**kw)  # type: ignore[arg-type]


def test_invalidation_rule_granularity() -> None:
    for bad in (0, 5000, 4095, 3 * 4096):
        with pytest.raises(TimelineError):
            check_page_size(bad)
    mib32 = 32 << 20
    per_page = InvalidationRule(kind="per_page", page_us=0.126)
    assert per_page.invalidations(mib32, 4096) == 8192
    assert per_page.cost_us(mib32, 4096) == pytest.approx(1032.2, abs=0.1)  # SM8150: 1033 us
    assert per_page.invalidations(mib32, 2 << 20) == 16
    smmu = InvalidationRule(kind="per_page", page_us=0.126, context_us=2.6, threshold_bytes=4096)
    assert smmu.effective_kind(4096) == "per_page"
    assert smmu.effective_kind(mib32) == "context"
    assert smmu.cost_us(mib32, 4096) == 2.6
    assert InvalidationRule(kind="range").invalidations(mib32, 65536) == 1
    with pytest.raises(TimelineError):
        InvalidationRule(kind="bogus")


def test_perfetto_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "trace.json"
    code = main(
        [
            "timeline",
            "--refresh",
            "144",
            "--layers",
            "2",
            "--frames",
            "12",
            "--vm-bind-ms",
            "0.5",
            "--perfetto",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    events = doc["traceEvents"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"crtc0", "commit_worker0", "gpu_ring", "ioctl0", "vm_bind"} <= names
    tid = {e["args"]["name"]: e["tid"] for e in events if e.get("name") == "thread_name"}
    row = setting_row("gpuvm_eager", get_preset("msm-kms"), refresh_hz=144.0, layers=2)
    tl = simulate(params_of_row(row, frames=12, vm_bind_ms=0.5))
    flips = [e for e in events if e["ph"] == "i" and e["name"].startswith("scanout")]
    assert [e["ts"] for e in flips] == [round(f[3] * 1000, 3) for f in tl.flips]
    assert all(e["tid"] == tid["crtc0"] for e in flips)
    vblanks = [e for e in events if e["ph"] == "i" and e["name"].startswith("vblank")]
    assert vblanks[0]["ts"] == pytest.approx(1e6 / 144, abs=1e-3)
    dropped = [e for e in events if e["name"] == "dropped"]
    assert len(dropped) == tl.missed_vblanks() > 0
    spans = [e for e in events if e["ph"] == "X"]
    assert all(e["dur"] > 0 for e in spans)
    assert doc["otherData"]["metrics"] == tl.metrics()
    assert to_trace_events(tl)["traceEvents"] == events


@pytest.mark.parametrize(
    "argv",
    [
        ["--refresh", "0"],
        ["--render-ms", "-1"],
        ["--page-size", "5000"],
        ["--preset", "nope"],
        ["--layers", "0"],
    ],
)
def test_cli_bad_parameters_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["timeline", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err


def test_cli_json_and_charts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "timeline",
                "--policy",
                "gpuvm_vma_ref",
                "--refresh",
                "144",
                "--layers",
                "2",
                "--json",
                "--chart",
                str(tmp_path / "t.png"),
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"]["dropped_frames_per_s"] == 0.0
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_study_without_simpy_skips_the_timeline_and_says_how_to_install(tmp_path: Path) -> None:
    """The design study is the main job of a plain install: without SimPy it still writes
    its report, with the timeline section saying what to install and empty timeline fields."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['simpy'] = None\n"
        "from gpuvm.study.cli import main\n"
        f"sys.exit(main(['study', '--frames', '8', '--no-charts', '--out', {str(tmp_path)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    report = (tmp_path / "report.md").read_text()
    assert "pip install 'gpuvm-model[timeline]'" in report
    rows = json.loads((tmp_path / "study.json").read_text())["rows"]
    assert rows and all(r["dropped_frames_per_s"] is None for r in rows)
