"""The layer contract (``[tool.importlinter]`` in pyproject.toml) holds, and would catch a
wrong-way import: the check runs inside the test command so CI fails on one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("importlinter")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports())"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def test_the_layer_contract_is_kept() -> None:
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 kept, 0 broken" in out.stdout


@pytest.mark.parametrize(
    ("module", "wrong_way"),
    [
        ("gpuvm/core/u64.py", "from gpuvm.drm import device"),
        ("gpuvm/drm/modes.py", "from gpuvm.observe import checker"),
        ("legacy/vma.py", "from gpuvm.drm import driver"),
        ("gpuvm/observe/checker/lifetime.py", "from gpuvm.study import runner"),
        ("gpuvm/testing/mutants.py", "from gpuvm.study import workloads"),
    ],
)
def test_a_wrong_way_import_breaks_the_contract(
    tmp_path: Path, module: str, wrong_way: str
) -> None:
    for name in ("gpuvm", "legacy"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{wrong_way}  # wrong way\n")
    out = lint(tmp_path)
    assert out.returncode != 0
    assert "BROKEN" in out.stdout
    assert module.removesuffix(".py").replace("/", ".") in out.stdout


def test_type_checking_imports_count_too(tmp_path: Path) -> None:
    for name in ("gpuvm", "legacy"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "gpuvm/core/gem.py"
    target.write_text(
        target.read_text()
        + "\nif TYPE_CHECKING:\n    from gpuvm.drm.driver import Bo  # wrong way\n"
    )
    out = lint(tmp_path)
    assert out.returncode != 0, out.stdout
