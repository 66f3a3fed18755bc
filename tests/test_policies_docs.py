"""docs/policies.md stays true: every Python example runs and prints what the text says."""

from __future__ import annotations

from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "policies.md"


def _python_blocks() -> list[str]:
    parts = DOC.read_text(encoding="utf-8").split("```")
    return [p[len("python\n") :] for p in parts[1::2] if p.startswith("python\n")]


def test_docs_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = _python_blocks()
    assert len(blocks) == 8
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {})
    out = capsys.readouterr().out
    for expected in (
        "swapchain, vma_ref: 0 map / 0 unmap per flip",
        "legacy: unmaps before free: 0",
        "legacy: unmaps after free: 1",
        "eager: 4 maps, 4 unmaps in 4 flips",
        "vma_ref: wlroots 4 unmaps / 4 flips, weston 0",
        "use-after-free",
        "next submit: EFAULT",
        "AddressSpace True\nAddressSpace True\nDriverVm False",
        "cycle GEM scanout -> VMA(gpu0.kms",
        "-> VmBo(gpu0.kms, scanout) -> GEM scanout",
        "custom: 3 unmaps in 4 flips",
    ):
        assert expected in out, expected
