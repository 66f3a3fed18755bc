"""docs/tutorial.md stays true: its Python blocks run in order in one namespace (they
carry their own assertions)."""

from __future__ import annotations

from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks of ``text``, in order."""
    parts = text.split("```")
    return [p[len("python\n") :] for p in parts[1::2] if p.startswith("python\n")]


def test_tutorial_blocks_run_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 6
    namespace: dict[str, object] = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC}:block{i + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "1.0 1.0 1.0" in out  # section 1 prints the eager per-flip counts
    assert "msm-kms    5.118 ms per flip = 30.7 % of 60 Hz" in out


def test_block_extraction_sees_only_python() -> None:
    text = "a\n```python\nx = 1\n```\n```sh\nls\n```\n```python\ny = 2\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = 2\n"]
