"""Every example in every ``--help`` runs: the epilogs' ``gpuvm ...`` lines are parsed and run
through :func:`gpuvm.study.cli.main` in a scratch directory holding the files they name
(``study.toml`` and ``trace.jsonl`` from the docs, a preset file, the user's policy module).
``--frames`` is lowered to keep the suite fast; everything else runs as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gpuvm.study.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
FAST_FRAMES = "8"


def _block(doc: str, fence: str, after: str) -> str:
    """The first ``fence`` code block of ``docs/doc`` holding or following ``after``."""
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    at = text.index(after)
    opening = f"```{fence}\n"
    before = text.rfind(opening, 0, at)
    inside = before != -1 and "```" not in text[before + len(opening) : at]
    start = before if inside else text.index(opening, at)
    body = text[start + len(opening) :]
    return body[: body.index("```")]


def _examples() -> list[str]:
    parser = build_parser()
    texts = [parser.epilog or ""]
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for sub in action.choices.values():  # type: ignore[union-attr]
            texts.append(sub.epilog or "")
    out = []
    for t in texts:
        for line in t.splitlines():
            m = re.match(r"\s+(gpuvm\s.*?)\s*(#.*)?$", line)
            if m and "COMMAND" not in m.group(1):
                out.append(m.group(1))
    return list(dict.fromkeys(out))


EXAMPLES = _examples()


def test_examples_found() -> None:
    assert len(EXAMPLES) >= 15
    assert any("--spec study.toml" in e for e in EXAMPLES)


def _argv(example: str, tmp: Path) -> list[str]:
    words = shlex.split(example)[1:]
    if ">" in words:
        words = words[: words.index(">")]
    cmd = words[0]
    if cmd in ("study", "flip"):
        if "--frames" in words:
            words[words.index("--frames") + 1] = FAST_FRAMES
        else:
            words += ["--frames", FAST_FRAMES]
    if cmd == "study":
        if "--out" in words:
            words[words.index("--out") + 1] = str(tmp / "out")
        if "--no-charts" not in words and "--json" not in words:
            words += ["--no-charts"]
    return words


@pytest.mark.parametrize("example", EXAMPLES)
def test_help_example_runs(
    example: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if "--workers" in example:
        pytest.importorskip("dask.distributed")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "study.toml").write_text(_block("study-spec.md", "toml", "# Study specs"))
    (tmp_path / "trace.jsonl").write_text(_block("trace-format.md", "json", "## Example"))
    (tmp_path / "mine.toml").write_text(_block("costs.md", "toml", "# my-presets.toml"))
    (tmp_path / "mypolicies.py").write_text((ROOT / "tests/data/mypolicies.py").read_text())
    code = main(_argv(example, tmp_path))
    assert code in (0, 1), capsys.readouterr().err  # replay exits 1 on a lifetime finding
