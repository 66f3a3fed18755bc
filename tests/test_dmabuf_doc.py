"""The runnable examples of docs/dmabuf.md run and their printed numbers hold."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "dmabuf.md"


def test_dmabuf_doc_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 4, "docs/dmabuf.md lost its python examples"
    for code in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(DOC), "exec"), {})
        printed = [line.removeprefix("# ") for line in code.splitlines() if line.startswith("# ")]
        lines = out.getvalue().splitlines()
        assert lines, "example printed nothing"
        for line in lines:
            assert line in printed, f"doc output {line!r} is not shown in the example"
