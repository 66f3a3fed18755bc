"""The docs stand alone: no file users can read points at notes they do not have.

README, CHANGELOG, ``docs/``, the package (code, docstrings, comments, preset TOML),
``legacy/``, ``benchmarks/`` and ``tests/`` must state a fact and cite its primary source (a
kernel file and function, a commit, a mailing-list mail) instead of "spec section N", a
section sign, or the names of the outside notes.  ``docs/dmabuf.md`` is this project's own
doc and may be named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()
SCANNED = ("README.md", "CHANGELOG.md", "docs", "gpuvm", "legacy", "benchmarks", "tests")
SUFFIXES = {".md", ".py", ".toml", ".sh", ".txt", ".cfg", ".ini", ".json", ".jsonl"}

FORBIDDEN = re.compile(
    "|".join(
        (
            r"\bspec(ification)?\s+sections?\b",  # "spec section 4"
            r"\bspec\s+\d",  # "spec 3.6"
            r"\bspec'?s\s+(table|invariants?|rates|class|row|buffers?)\b",  # "the spec's table"
            r"\b(dmabuf|costs|gpuvm|legacy|project)[ -]spec\b",  # "costs spec", "dmabuf spec"
            r"\bspec\s+row\b",
            "\u00a7",  # the section sign
            r"\blegacy\.md\b",
            r"costs-and-workloads",
            r"(?<!docs/)(?<!/ \")\bdmabuf\.md\b",  # the outside note, not docs/dmabuf.md
            r"(?<![\w/])gpuvm\.md\b",
            r"\bshared/spec\b",
            r"\bDESIGN\.md\b",
        )
    ),
    re.IGNORECASE,
)


def offending(text: str) -> list[tuple[int, str]]:
    """The (line number, line) pairs of ``text`` that cite a file users do not have."""
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if FORBIDDEN.search(line)]


def scanned_files() -> list[Path]:
    out: list[Path] = []
    for name in SCANNED:
        path = ROOT / name
        if path.is_file():
            out.append(path)
            continue
        for f in sorted(path.rglob("*")):
            if not f.is_file() or "__pycache__" in f.parts or f.resolve() == THIS:
                continue
            if f.suffix in SUFFIXES:
                out.append(f)
    return out


def test_the_scan_covers_docs_code_presets_and_tests() -> None:
    files = {f.relative_to(ROOT).as_posix() for f in scanned_files()}
    for must in (
        "README.md",
        "CHANGELOG.md",
        "docs/architecture.md",
        "docs/dmabuf.md",
        "gpuvm/core/vm.py",
        "gpuvm/presets/default.toml",
        "legacy/path.py",
        "tests/test_kms.py",
    ):
        assert must in files, must
    assert any(f.startswith("benchmarks/") for f in files)


@pytest.mark.parametrize(
    "line",
    [
        "the table of spec section 5",
        "costs-and-workloads.md section 9",
        "Sources: ``legacy.md`` section 7",
        "dmabuf spec 2.3-2.6",
        "(spec 5): VRAM needs a p2p attachment",
        "`drm_gpuvm_madvise_ops_create` (spec 3.6)",
        "the spec's buffer table",
        "the costs spec's budget table (section 4)",
        'description = "Costs-spec default"',
        "1080p: 0.053 ms (spec row: about 0.05 ms, E)",
        "obeys \u00a73.2",
        "Reference edges (``dmabuf.md`` section 1)",
    ],
)
def test_the_patterns_catch_each_known_phrasing(line: str) -> None:
    assert offending(line), line


@pytest.mark.parametrize(
    "line",
    [
        "see docs/dmabuf.md for the scenarios",
        'DOC = ROOT / "docs" / "dmabuf.md"',
        "def _as_places(spec: PlaceSpec) -> tuple[Place, ...]:",
        "run = run_spec(spec, name, teardown=True)",
        "spec = WorkloadSpec(",
        "assert c.frames == 40 - run.spec.warmup",
        "PlaceSpec = Domain | Place | Iterable[Domain | Place]",
        "for field, kind in spec.items():",
        "The outcome of one workload under one policy: the spec, the device",
        "Every spec is validated.",
    ],
)
def test_the_patterns_leave_the_code_alone(line: str) -> None:
    assert not offending(line), line


def test_no_file_cites_notes_users_do_not_have() -> None:
    hits = [
        f"{f.relative_to(ROOT)}:{n}: {line.strip()}"
        for f in scanned_files()
        for n, line in offending(f.read_text(encoding="utf-8", errors="replace"))
    ]
    assert not hits, "state the fact and its primary source instead:\n" + "\n".join(hits)
