"""The runnable example of docs/placement.md runs and its printed numbers hold."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "placement.md"


def test_placement_doc_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/placement.md has no python example"
    for code in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(DOC), "exec"), {})
        printed = [line.removeprefix("# ") for line in code.splitlines() if line.startswith("# ")]
        for line in out.getvalue().splitlines():
            assert line in printed, f"doc output {line!r} is not shown in the example"
