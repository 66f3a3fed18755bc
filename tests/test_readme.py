"""The README's Python examples run as written (so the front page cannot rot)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_opens_with_the_two_commands() -> None:
    first = re.search(r"```sh\n(.*?)```", README.read_text(), re.S)
    assert first is not None
    lines = [line for line in first.group(1).splitlines() if line.strip()]
    assert len(lines) == 2
    assert lines[0].startswith("pip install") and "gpuvm" in lines[0]
    assert lines[1].startswith('pip install ".[test]"') and "pytest" in lines[1]


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {})
    out = capsys.readouterr().out
    if index == 0:
        assert "keep=True" in out and "GEM bo <- owner" in out
    if index == 1:
        assert "gpuvm_eager 1.0 1.0" in out and "legacy_pre_6_17 0.0 0.0" in out
