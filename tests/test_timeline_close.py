"""GEM_CLOSE waits where the driver waits: ``msm_gem_close`` (msm_gem.c, 6.17 on) waits on
every fence of the buffer (``dma_resv_wait_timeout``, ``DMA_RESV_USAGE_BOOKKEEP``) once the
file's context VM exists and is not VM_BIND.  The timeline blocks the compositor's ioctl
path there, and ``ioctl_blocked_ms`` shows it."""

from __future__ import annotations

import json

import attrs
import pytest

pytest.importorskip("simpy")

from gpuvm.observe.costs import get_preset
from gpuvm.observe.timeline import TimelineError, TimelineParams, simulate
from gpuvm.study.cli import main
from gpuvm.study.timeline_study import close_waits, params_of_row, setting_row

BASE = TimelineParams(refresh_hz=60.0, layers=2, frames=20, render_ms=3.0, gem_closes=2)


def test_close_blocks_until_the_render_fence() -> None:
    """The compositor submits the frame's render job, then closes the handles of the buffers
    it flips: the first GEM_CLOSE waits for that job (3 ms on an idle GPU), the rest find
    the fence signalled."""
    tl = simulate(BASE)
    assert tl.blocked == (3.0,) * 20
    assert tl.metrics()["ioctl_blocked_ms"] == 3.0
    waits = [s for s in tl.spans if s.name.startswith("GEM_CLOSE wait")]
    assert len(waits) == 20
    renders = {s.frame: s for s in tl.spans if s.track == "gpu_ring"}
    for w in waits:
        assert w.track == "ioctl0"
        assert w.end == pytest.approx(renders[w.frame].end)  # unblocked by the fence


@pytest.mark.parametrize(
    "change",
    [
        {"close_waits": False},  # the policy does not wait (legacy, pre-6.17 msm)
        {"gem_closes": 0},  # the workload closes nothing per frame
        {"vm_bind_ms": 0.5},  # a VM_BIND context: msm_gem_close returns before the wait
    ],
)
def test_no_wait(change: dict[str, object]) -> None:
    p = attrs.evolve(BASE, **change)
    assert not p.close_blocks
    tl = simulate(p)
    assert set(tl.blocked) == {0.0}
    assert tl.metrics()["ioctl_blocked_ms"] == 0.0
    assert not [s for s in tl.spans if s.name.startswith("GEM_CLOSE wait")]


def test_close_waits_for_a_job_queued_behind_another_crtc() -> None:
    """Two CRTCs share one GPU ring: at the first repaint CRTC 1's render job queues behind
    CRTC 0's, so its GEM_CLOSE blocks for both jobs (6 ms), CRTC 0's for one (3 ms)."""
    tl = simulate(attrs.evolve(BASE, crtcs=2, frames=1))
    assert sorted(tl.blocked) == [3.0, 6.0]


def test_wait_moves_the_commit_not_the_flip() -> None:
    """The commit tail waits for the render fence anyway (wait_for_fences), so blocking in
    GEM_CLOSE delays the commit ioctl but not the flip: same vblanks, same latency."""
    on = simulate(BASE)
    off = simulate(attrs.evolve(BASE, close_waits=False))
    assert on.flips == off.flips
    commits_on = [s for s in on.spans if s.name.startswith("commit f")]
    commits_off = [s for s in off.spans if s.name.startswith("commit f")]
    assert len(commits_on) == len(commits_off) == 20
    for a, b in zip(commits_on, commits_off, strict=True):
        # The commit ioctl starts when GEM_CLOSE returns and lasts as long as before.
        assert a.start - b.start == pytest.approx(3.0)
        assert a.end - a.start == pytest.approx(b.end - b.start)


def test_bad_close_params() -> None:
    with pytest.raises(TimelineError):
        TimelineParams(gem_closes=-1)
    with pytest.raises(TimelineError):
        TimelineParams(close_waits=1)  # type: ignore[arg-type]


def test_close_waits_is_asked_of_the_model() -> None:
    assert close_waits("gpuvm_eager") and close_waits("gpuvm_vma_ref")
    assert not close_waits("legacy_pre_6_17")


def test_recreate_rows_block_under_waiting_policies() -> None:
    """The study's ``recreate`` pattern (import, ADDFB2, GEM_CLOSE every frame): each commit
    closes one handle per plane; under a 6.17 policy the ioctl path blocks for the render."""
    preset = get_preset("msm-kms")
    for policy, blocked in (("gpuvm_vma_ref", 3.0), ("legacy_pre_6_17", 0.0)):
        row = setting_row(policy, preset, layers=2, source="client", pattern="recreate")
        assert row["gem_closes_per_flip"] == 2.0
        assert params_of_row(row).gem_closes == 2
        assert row["ioctl_blocked_ms"] == blocked, policy
    own = setting_row("gpuvm_vma_ref", preset, layers=2)
    assert own["gem_closes_per_flip"] == 0.0 and own["ioctl_blocked_ms"] == 0.0


def test_cli_source_pattern(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["timeline", "--frames", "10", "--source", "client", "--pattern", "recreate"]
    assert main([*args, "--policy", "gpuvm_vma_ref", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"]["gem_closes"] == 1 and out["params"]["close_waits"] is True
    assert out["metrics"]["ioctl_blocked_ms"] == 3.0
    for bad, needle in (
        (["--source", "client", "--pattern", "own"], "does not fit"),
        (["--source", "bogus"], "unknown source"),
    ):
        with pytest.raises(SystemExit) as info:
            main(["timeline", *bad])
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0]


def test_report_paragraph_comes_from_the_study_rows() -> None:
    from gpuvm.study.timeline_study import _close_waits_markdown

    def row(policy: str, pattern: str, closes: float, blocked: float) -> dict[str, object]:
        return {
            "workload": "pageflip",
            "pattern": pattern,
            "preset": "msm-kms",
            "refresh_hz": 60.0,
            "policy": policy,
            "gem_closes_per_flip": closes,
            "ioctl_blocked_ms": blocked,
        }

    rows = [
        row("gpuvm_vma_ref", "recreate", 2.0, 3.0),
        row("legacy_pre_6_17", "recreate", 2.0, 0.0),
        row("gpuvm_eager", "own", 0.0, 0.0),
    ]
    (text, blank) = _close_waits_markdown(rows)
    assert "`gpuvm_vma_ref` 3 ms" in text and "`legacy_pre_6_17` 0 ms" in text
    assert "gpuvm_eager" not in text and "(recreate; msm-kms, 60 Hz)" in text
    assert blank == "" and _close_waits_markdown(rows[2:]) == []
