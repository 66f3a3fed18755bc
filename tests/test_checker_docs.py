"""docs/lifetimes.md stays true: every Python example runs and prints what the text says."""

from __future__ import annotations

from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "lifetimes.md"


def _python_blocks() -> list[str]:
    parts = DOC.read_text(encoding="utf-8").split("```")
    return [p[len("python\n") :] for p in parts[1::2] if p.startswith("python\n")]


def test_docs_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = _python_blocks()
    assert len(blocks) == 5
    scope: dict[str, object] = {}
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), scope)
    out = capsys.readouterr().out
    for expected in (
        "GEM scanout <-[handles]- handles of GEM scanout <-[handle]- handle 1 of DrmFile(gpu0.file",
        "scanout mapped pin 1) <-[owns]- FB",
        "(scanout) <-[plane]- plane state of plane0(gpu0) <-[of]- plane0(gpu0)",
        "GEM scanout <-[framebuffer]- FB",
        "<-[plane]- plane state of plane0(gpu0)",
        "GEM scanout <-[vm_bo]- VmBo(gpu0.kms, scanout) <-[va link]- VMA(gpu0.kms",
        "ok: no lifetime violation",
        "GEM scanout kept alive by cycle GEM scanout -> VMA(gpu0.kms 0x1000+0x100000 scanout "
        "mapped) -> VmBo(gpu0.kms, scanout) -> GEM scanout",
        '{"op": "vm_bind", "file": "f0", "ops": [["map", 4294967296, 16384, 1, 0], '
        '["unmap", 4294971392, 4096]]}',
        "True ok: no lifetime violation",
        "FAIL refcount: vma_ref of GEM d0.bo",
        "): the handle is closed",
        "replayable trace (policy forgets_handle_close; save and run `gpuvm replay TRACE`):",
    ):
        assert expected in out, (expected, out)
    # the three-line file defines runnable TestCases
    import unittest

    for name in ("TestVmBind", "TestLegacy", "TestPrime"):
        assert issubclass(scope[name], unittest.TestCase)  # type: ignore[arg-type]
