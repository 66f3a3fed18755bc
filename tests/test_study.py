"""The design study: the acceptance numbers of issue 4 for a 1080p single-layer compositor
at 60 Hz, one model run per (policy, workload) priced under every preset, deterministic
JSON, and the report with and without matplotlib."""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import Any

import pytest

import gpuvm.study.runner as study_mod
from gpuvm.observe.costs import UnknownPreset, get_preset
from gpuvm.study.report import write_report
from gpuvm.study.runner import ROW_KEYS, Study, default_workloads, dumps_rows, run_study
from gpuvm.study.workloads import UnknownPolicy, WorkloadError, run_spec

FRAMES = 16
POLICIES = ("legacy_pre_6_17", "gpuvm_eager", "gpuvm_vma_ref")
REQUIRED = (
    "policy",
    "workload",
    "source",
    "pattern",
    "preset",
    "resolution",
    "refresh_hz",
    "layers",
    "maps_per_flip",
    "unmaps_per_flip",
    "tlb_invalidations_per_flip",
    "ms_per_flip",
    "frame_budget_pct",
)


@pytest.fixture(scope="module")
def study() -> Study:
    return run_study(policies=POLICIES, frames=FRAMES, refresh_rates=(60, 144))


def _row(study: Study, policy: str, case: str, preset: str, hz: float = 60) -> dict[str, Any]:
    (row,) = [
        r
        for r in study.rows()
        if (r["policy"], r["case"], r["preset"], r["refresh_hz"]) == (policy, case, preset, hz)
    ]
    return row


SWAP = "pageflip/swapchain/own"


def test_rows_have_the_required_keys(study: Study) -> None:
    rows = study.rows()
    assert set(REQUIRED) <= set(ROW_KEYS)
    assert all(tuple(r) == ROW_KEYS for r in rows)
    assert {r["resolution"] for r in rows} == {"1080p"} and {r["layers"] for r in rows} == {1}


def test_rows_record_the_kernel_profile(study: Study) -> None:
    """Every row names the kernel-version profile its device ran under: the pre-6.17 policy
    runs as msm before the VM_BIND series, gpuvm_eager as the series before 3bebfd53af0f
    (msm-pre-vma-ref), the others as mainline."""
    defaults = {"legacy_pre_6_17": "msm-pre-6.17", "gpuvm_eager": "msm-pre-vma-ref"}
    kernels = {(r["policy"], r["kernel"]) for r in study.rows()}
    for policy, kernel in kernels:
        assert kernel == defaults.get(policy, "mainline")
    assert {p for p, _ in kernels} == set(POLICIES)


def test_acceptance_legacy_pre_6_17(study: Study) -> None:
    r = _row(study, "legacy_pre_6_17", SWAP, "msm-thread")
    assert (r["maps_per_flip"], r["unmaps_per_flip"], r["tlb_invalidations_per_flip"]) == (0, 0, 0)
    assert r["map_ms"] == r["unmap_ms"] == r["tlb_ms"] == 0


def test_acceptance_gpuvm_eager_msm_thread(study: Study) -> None:
    r = _row(study, "gpuvm_eager", SWAP, "msm-thread")
    assert (r["maps_per_flip"], r["unmaps_per_flip"], r["tlb_invalidations_per_flip"]) == (1, 1, 1)
    assert r["map_ms"] + r["unmap_ms"] == pytest.approx(0.5)  # 0.2 map + 0.3 unmap ...
    assert r["tlb_ms"] == pytest.approx(0.03)  # ... plus one invalidation
    assert r["ms_per_flip"] == pytest.approx(0.532)  # and the ATOMIC ioctl (2 us)
    assert r["frame_budget_pct"] == pytest.approx(3.19, abs=0.01)


def test_acceptance_gpuvm_eager_msm_kms(study: Study) -> None:
    r = _row(study, "gpuvm_eager", SWAP, "msm-kms")
    assert r["unmap_ms"] + r["tlb_ms"] == pytest.approx(5.0855375)  # the unmap: about 5 ms
    assert r["frame_budget_pct"] == pytest.approx(30.7, abs=0.1)  # 30 % of a 60 Hz frame
    fast = _row(study, "gpuvm_eager", SWAP, "msm-kms", hz=144)
    assert fast["ms_per_flip"] == r["ms_per_flip"]
    assert fast["frame_budget_pct"] == pytest.approx(73.7, abs=0.1)


def test_acceptance_gpuvm_vma_ref(study: Study) -> None:
    for case in study.cases:
        if not case.startswith("pageflip/"):
            continue
        r = _row(study, "gpuvm_vma_ref", case, "msm-thread")
        expect = (
            (1, 1) if case in ("pageflip/foreign/wlroots", "pageflip/foreign/recreate") else (0, 0)
        )
        assert (r["maps_per_flip"], r["unmaps_per_flip"]) == expect, case
    wl = _row(study, "gpuvm_vma_ref", "pageflip/foreign/wlroots", "msm-kms")
    assert wl["frame_budget_pct"] == pytest.approx(30.7, abs=0.1)


def test_context_vm_unmaps_are_not_priced_as_display_unmaps(study: Study) -> None:
    r = _row(study, "gpuvm_vma_ref", "reimport/same_device/close_each_frame/legacy", "msm-kms")
    assert r["unmaps_per_flip"] == 1 and r["tlb_ms"] == pytest.approx(0.03)


def test_each_policy_and_workload_runs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real = run_spec

    def counting(spec: Any, policy: str, **kw: Any) -> Any:
        calls.append((policy, spec.case))
        return real(spec, policy, **kw)

    monkeypatch.setattr(study_mod, "run_spec", counting)
    s = run_study(policies=["gpuvm_eager", "legacy_pre_6_17"], frames=8)
    n_specs = len(default_workloads(8))
    assert len(calls) == len(set(calls)) == 2 * n_specs - 4  # pre-6.17 has no VM_BIND
    assert len(s.skipped) == 4 and all(p == "legacy_pre_6_17" for p, _, _ in s.skipped)
    assert len(s.rows()) == len(calls) * len(s.presets)
    # pricing again never reruns the model
    s.rows()
    assert len(calls) == 2 * n_specs - 4


def test_json_is_deterministic(study: Study) -> None:
    again = run_study(policies=POLICIES, frames=FRAMES, refresh_rates=(60, 144))
    text = dumps_rows(study.rows())
    assert text == dumps_rows(again.rows())
    rows = json.loads(text)
    assert rows[0] == dict(sorted(study.rows()[0].items()))


def test_bad_study_arguments() -> None:
    with pytest.raises(UnknownPolicy):
        run_study(policies=["nope"], frames=8)
    with pytest.raises(UnknownPreset):
        run_study(presets=["msm-fast"], frames=8)
    with pytest.raises(WorkloadError):
        run_study(frames=-5)
    with pytest.raises(WorkloadError):
        run_study(refresh_rates=(0,), frames=8)


def test_report_without_charts(study: Study, tmp_path: Path) -> None:
    files = write_report(study, tmp_path / "out", charts=False)
    text = files.markdown.read_text()
    assert "The msm question" in text and "| `gpuvm_eager` | 1 | 1 | 1 |" in text
    assert files.json.read_text() == dumps_rows(study.rows()) and files.charts == ()


def test_report_says_when_matplotlib_is_missing(
    study: Study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_mpl(name: str, *args: Any, **kw: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    files = write_report(study, tmp_path)
    assert files.charts == () and files.charts_skipped is not None
    assert "matplotlib" in files.charts_skipped
    assert "Charts skipped" in files.markdown.read_text()


def test_report_charts(study: Study, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    small = Study(study.runs, (get_preset("msm-thread"), get_preset("msm-kms")), (60.0,))
    files = write_report(small, tmp_path)
    names = sorted(p.name for p in files.charts)
    assert names == ["headline.png", "heatmap_msm-kms.png", "heatmap_msm-thread.png"]
    for p in files.charts:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({p.name})" in files.markdown.read_text()


def test_every_builtin_preset_has_its_own_chart_colour() -> None:
    from gpuvm.observe.costs import builtin_presets
    from gpuvm.study.report import colour_of

    names = sorted(builtin_presets())
    assert len({colour_of(n) for n in names}) == len(names)


def test_a_run_refused_at_set_up_is_a_row_with_every_key() -> None:
    """A run whose set-up was refused has no steady frame to price: its row still has every
    key (the kernel profile included), the failure's status and errno, and no costs."""
    from gpuvm.core.errors import NoSpace
    from gpuvm.study.runner import RunRecord, price

    spec = default_workloads(frames=8)[0]
    rec = RunRecord.refused_setup("gpuvm_eager", spec, NoSpace("no hole in gpu0.kms"))
    row = price(rec, get_preset("msm-kms"), 60.0)
    assert list(row) == list(ROW_KEYS)
    assert row["status"] == "exhausted" and row["errno"] == "ENOSPC"
    assert row["frames"] == 0 and row["ms_per_flip"] is None
    assert row["kernel"] == "msm-pre-vma-ref"  # gpuvm_eager's default profile
