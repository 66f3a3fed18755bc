"""What a user expects of the package: ``python -m gpuvm``, ``--version``, help without a
command, and a LICENSE that matches the declared license."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import gpuvm

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpuvm", *args], capture_output=True, text=True)


def test_python_dash_m_gpuvm_prints_the_version() -> None:
    out = run("--version")
    assert out.returncode == 0, out.stderr
    build = "compiled" if gpuvm.compiled() else "pure"
    assert out.stdout.strip() == f"gpuvm-model {gpuvm.__version__} (core: {build})"


def test_plain_gpuvm_prints_help_and_runs_nothing() -> None:
    out = run()
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: gpuvm")
    assert "COMMAND" in out.stdout and "study" in out.stdout
    assert "case 1" not in out.stdout.lower()  # did not replay the cases


def test_license_file_matches_the_declared_license() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == {"text": "MIT"}
    assert "License :: OSI Approved :: MIT License" in meta["classifiers"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert meta["urls"]


def test_output_into_a_closed_pipe_ends_without_a_traceback() -> None:
    """``gpuvm dmabuf | head -1``: the reader goes away early; the command stops quietly."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuvm", "dmabuf"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err
    assert "BrokenPipeError" not in err
