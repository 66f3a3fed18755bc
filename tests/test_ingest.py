"""gpuvm ingest: tracepoint logs parsed by their TP_printk formats and rebuilt as traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuvm.observe.trace import replay
from gpuvm.study.cli import main
from gpuvm.study.ingest import IngestError, parse_log, reconstruct
from gpuvm.study.ingest.formats import parse_payload

DATA = Path(__file__).parent / "data"
LOGS = ["amdgpu.trace-cmd", "msm_dmabuf.trace_pipe", "xe_flips.trace_pipe"]


@pytest.mark.parametrize("name", LOGS)
def test_reconstructed_trace_is_exactly_the_expected_one(name: str) -> None:
    got = reconstruct((DATA / name).read_text()).text
    assert got == (DATA / "expected" / f"{name}.jsonl").read_text()


@pytest.mark.parametrize("name", LOGS)
def test_reconstructed_trace_replays_without_lifetime_violation(name: str) -> None:
    result = replay(reconstruct((DATA / name).read_text()).text)
    assert result.checker.ok, result.checker.verdict()


def test_payloads_parse_per_their_formats() -> None:
    assert parse_payload("drm_vblank_event", "crtc=0, seq=10") == {"crtc": 0, "seq": 10}
    assert parse_payload("drm_vblank_event_delivered", "pid=700, crtc=1, seq=11") == {
        "pid": 700,
        "crtc": 1,
        "seq": 11,
    }
    f = parse_payload(
        "amdgpu_vm_bo_map", "bo=00000000ab000001, start=100, last=10f, offset=0, flags=70"
    )
    assert f == {
        "bo": "00000000ab000001",
        "start": 0x100,
        "last": 0x10F,
        "offset": 0,
        "flags": 0x70,
    }
    assert parse_payload("not_an_event", "x") is None


def test_unknown_events_are_counted_and_skipped() -> None:
    log = parse_log((DATA / "xe_flips.trace_pipe").read_text())
    assert dict(log.unknown) == {"xe_exec_queue_submit": 1}
    assert not log.problems


def test_xe_log_summary() -> None:
    r = reconstruct((DATA / "xe_flips.trace_pipe").read_text())
    s = r.summary()
    assert (s["frames"], s["flips"], s["tlb_fences"]) == (4, 4, {"sent": 3, "received": 2})
    assert s["ops"]["vm_bind"] == 5 and s["ops"]["evict"] == 1 and s["refused_ops"] == 0


def test_malformed_lines_raise_with_line_numbers() -> None:
    with pytest.raises(IngestError) as e:
        reconstruct((DATA / "malformed.trace_pipe").read_text())
    assert [p.line for p in e.value.problems] == [3, 4, 5]


def test_cli_malformed_log_one_line_per_problem_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["ingest", str(DATA / "malformed.trace_pipe")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3
    assert [e.split(":")[1] for e in err] == ["3", "4", "5"]
    assert "Traceback" not in "".join(err)


def test_cli_ingest_then_replay_with_preset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "t.jsonl"
    assert main(["ingest", str(DATA / "msm_dmabuf.trace_pipe"), "--out", str(out)]) == 0
    assert out.read_text() == (DATA / "expected" / "msm_dmabuf.trace_pipe.jsonl").read_text()
    capsys.readouterr()
    assert main(["replay", str(out), "--preset", "msm-kms"]) == 0
    text = capsys.readouterr().out
    assert "-- costs under preset msm-kms" in text
    assert "frame 0: " in text and "frame 1: " in text and "frame 2: " not in text
    assert main(["replay", str(out), "--preset", "msm-kms", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert all(isinstance(e, dict) and "kind" in e for e in doc["events"])
    assert len(doc["costs"]["frames"]) == 2
    total = doc["costs"]["total"]["total_ms"]
    parts = sum(f["total_ms"] for f in doc["costs"]["frames"])
    parts += doc["costs"]["after_last_frame"]["total_ms"]
    assert total == pytest.approx(parts)


def test_cli_what_if_says_when_not_meaningful(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", str(DATA / "amdgpu.trace-cmd"), "--what-if", "gpuvm_eager"]) == 0
    assert "not meaningful for this log" in capsys.readouterr().out
    assert main(["ingest", str(DATA / "xe_flips.trace_pipe"), "--what-if", "legacy_pre_6_17"]) == 0
    assert "what-if legacy_pre_6_17: 33 trace ops (5 refused)" in capsys.readouterr().out


def test_cli_unknown_preset_is_a_usage_error(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    out.write_text(reconstruct((DATA / "amdgpu.trace-cmd").read_text()).text)
    with pytest.raises(SystemExit) as e:
        main(["replay", str(out), "--preset", "no-such"])
    assert e.value.code == 2
