"""The ``gpuvm`` command line: study, flip, presets, --json everywhere, one-line errors with
exit status 2 and nothing written, help with examples, the command registration pattern and
the progress bar."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest

from gpuvm.study import cli
from gpuvm.study.cli import COMMANDS, ProgressBar, main, register

FAST = ["--frames", "12", "--policy", "legacy_pre_6_17,gpuvm_eager,gpuvm_vma_ref"]


def test_study_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    assert main(["study", "--out", str(out), "--no-charts", *FAST]) == 0
    text = (out / "report.md").read_text()
    assert "The msm question" in text and "| `gpuvm_eager` | 1 | 1 | 1 |" in text
    doc = json.loads((out / "study.json").read_text())
    rows = doc["rows"]
    assert doc["provenance"]["spec"]["frames"] == [12]
    assert {r["policy"] for r in rows} == {"legacy_pre_6_17", "gpuvm_eager", "gpuvm_vma_ref"}
    assert f"wrote {out / 'report.md'}" in capsys.readouterr().out


def test_study_json_goes_to_stdout_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["study", "--json", "--preset", "msm-thread", *FAST]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["preset"] for r in rows} == {"msm-thread"}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["study", "--preset", "msm-fast"], "unknown cost preset 'msm-fast'"),
        (["study", "--frames", "-3"], "--frames: must be > 0"),
        (["study", "--frames", "two"], "--frames: expected a whole number"),
        (["study", "--resolution", "8k"], "unknown resolution '8k'"),
        (["study", "--policy", "eager"], "unknown policy 'eager'"),
        (["study", "--refresh", "0"], "--refresh: must be > 0"),
        (["study", "--presets-file", "missing.toml"], "does not exist"),
        (["study", "--frames", "3"], "warm-up"),
        (["flip", "--source", "usb"], "unknown source 'usb'"),
        (["flip", "--workload", "reimport", "--consumer", "vulkan"], "unknown consumer"),
        (["flip", "--policy", "nope"], "unknown policy"),
        (["presets", "--presets-file", "missing.toml"], "does not exist"),
    ],
)
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(
    argv: list[str],
    needle: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    extra = ["--out", str(out)] if argv[0] == "study" else []
    with pytest.raises(SystemExit) as info:
        main([*argv, *extra])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and err.startswith("gpuvm")
    assert list(tmp_path.iterdir()) == []


def test_study_out_must_be_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SystemExit) as info:
        main(["study", "--out", str(f), *FAST])
    assert info.value.code == 2 and "not a directory" in capsys.readouterr().err
    assert f.read_text() == "x"


def test_flip_table(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["flip", "--source", "foreign", "--pattern", "wlroots", "--refresh", "60,144"]
    assert main([*argv, *FAST]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pageflip/foreign/wlroots: 1080p")
    lines = {line.split()[0]: line for line in out.splitlines()[3:]}
    assert lines["gpuvm_vma_ref"].split()[1:4] == ["1", "1", "1"]
    assert lines["legacy_pre_6_17"].split()[1:4] == ["0", "0", "0"]
    assert "5.118 ms (30.7 %)" in lines["gpuvm_eager"] and "msm-kms @144Hz" in out


def test_flip_json_and_reimport(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["flip", "--workload", "reimport", "--consumer", "vm_bind", "--json", *FAST]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["policy"] for r in rows} == {"gpuvm_eager", "gpuvm_vma_ref"}  # pre-6.17: no VM_BIND
    assert all(r["case"] == "reimport/same_device/close_each_frame/vm_bind" for r in rows)
    assert all(r["unmaps_per_flip"] == 1 for r in rows)


def test_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("default", "intel-tlb", "msm-kms", "msm-thread", "per-process-flush"):
        assert f"\n{name}  [" in "\n" + out
    assert "source: Commit 3bebfd53af0f" in out
    assert main(["presets", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in data][:3] == ["default", "intel-tlb", "msm-kms"]


def test_user_presets_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "mine.toml"
    f.write_text('[preset.slow-kms]\nextends = "msm-kms"\ntlb_page_us = 5.0\n')
    assert main(["flip", "--presets-file", str(f), "--preset", "slow-kms", "--json", *FAST]) == 0
    rows = json.loads(capsys.readouterr().out)
    eager = next(r for r in rows if r["policy"] == "gpuvm_eager")
    assert eager["tlb_ms"] == pytest.approx(2025 * 5 / 1000)


@pytest.mark.parametrize("command", ["study", "flip", "presets", "cases"])
def test_help_teaches(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--json" in out
    if command != "cases":
        assert "examples:" in out and f"gpuvm {command}" in out


def test_registration_pattern(capsys: pytest.CaptureFixture[str]) -> None:
    def add_hello(sub: Any) -> None:
        p = sub.add_parser("hello", parents=[cli.json_parent()], help="say hello")
        p.add_argument("name")
        p.set_defaults(func=lambda a: print(json.dumps(a.name) if a.json else a.name) or 0)

    register(add_hello)
    try:
        assert main(["hello", "world"]) == 0
        assert main(["hello", "--json", "x"]) == 0
        assert capsys.readouterr().out == 'world\n"x"\n'
        assert "hello" in cli.build_parser().format_help()
    finally:
        COMMANDS.remove(add_hello)
    assert "hello" not in cli.build_parser().format_help()


def test_usage_error_from_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    def add_bad(sub: Any) -> None:
        def run(args: argparse.Namespace) -> int:
            raise cli.UsageError("no trace file 'x'")

        sub.add_parser("bad").set_defaults(func=run)

    register(add_bad)
    try:
        with pytest.raises(SystemExit) as info:
            main(["bad"])
    finally:
        COMMANDS.remove(add_bad)
    assert info.value.code == 2
    assert capsys.readouterr().err == "gpuvm bad: error: no trace file 'x'\n"


def test_progress_bar() -> None:
    s = io.StringIO()
    bar = ProgressBar(s, delay=0.0, force=True)
    bar(1, 4, "a")
    bar(4, 4, "b")
    bar.close()
    text = s.getvalue()
    assert "[#######" in text and "4/4 b" in text and text.endswith("\n")
    quiet = io.StringIO()
    fast = ProgressBar(quiet, delay=60.0, force=True)  # finishes before the delay
    fast(1, 2, "a")
    fast(2, 2, "b")
    fast.close()
    assert quiet.getvalue() == ""
    off = io.StringIO()  # not a terminal: off by default
    bar2 = ProgressBar(off, delay=0.0)
    bar2(1, 1, "x")
    bar2.close()
    assert off.getvalue() == ""
