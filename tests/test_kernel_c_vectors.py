"""The model's op lists against the kernel's own ``drm_gpuvm.c``, request by request.

``tests/data/kernel/drm_gpuvm_ops.txt`` holds seeded random scenarios (an initial layout,
then 20-60 ``sm_map`` / ``sm_unmap`` / ``madvise`` requests mixing every split/merge case
of the ``DOC: Split and Merge`` comment, keep and non-keep, NULL-object VAs, offsets that
wrap at 2^64, requests that touch edges and holes) with the ops the kernel's
``drm_gpuvm_sm_map_ops_create`` / ``drm_gpuvm_sm_unmap_ops_create`` /
``drm_gpuvm_madvise_ops_create`` returned for each, built and run in userspace (the file's
header names the commits).  Each scenario is replayed on the model: the same ops in the
same order (kind, pieces, the VA each names, keep flags), the same refusals with the same
errno, and the same layout at the end.

One deliberate difference: a zero-range request, which the kernel does not refuse (it
splits a VA around ``addr`` and maps or unmaps nothing), the model refuses with
``ZeroRange`` (``EINVAL``); the kernel's output for those is in the file but not applied
(on either side).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuvm import GemObject, GpuVm, MapRequest
from gpuvm.core.errors import GpuvmError, ZeroRange
from gpuvm.core.ops import MapOp, Piece, RemapOp, UnmapOp
from gpuvm.core.va import Va

DATA = Path(__file__).parent / "data" / "kernel" / "drm_gpuvm_ops.txt"

Scenario = tuple[str, list[str]]


def _scenarios() -> list[Scenario]:
    out: list[Scenario] = []
    block: list[str] = []
    for line in DATA.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        block.append(line)
        if line == "E":
            out.append((block[0], block))
            block = []
    return out


SCENARIOS = _scenarios()


class _Names:
    def __init__(self, objs: list[GemObject]) -> None:
        self.objs = objs
        self.index = {id(o): i for i, o in enumerate(objs)}

    def obj(self, i: int) -> GemObject | None:
        return None if i < 0 else self.objs[i]

    def name(self, o: GemObject | None) -> str:
        return "-" if o is None else str(self.index[id(o)])

    def piece(self, p: Piece | None) -> str:
        return "(none)" if p is None else f"({p.addr} {p.range} {self.name(p.obj)} {p.offset})"

    def va(self, va: Va) -> str:
        return f"[{va.addr} {va.range} {self.name(va.obj)} {va.offset}]"

    def op(self, op: object) -> str:
        if isinstance(op, MapOp):
            return f"MAP ({op.addr} {op.range} {self.name(op.obj)} {op.offset})"
        if isinstance(op, RemapOp):
            return (
                f"REMAP prev {self.piece(op.prev)} next {self.piece(op.next)} "
                f"unmap {self.va(op.unmap.va)} keep={int(op.unmap.keep)}"
            )
        assert isinstance(op, UnmapOp)
        return f"UNMAP {self.va(op.va)} keep={int(op.keep)}"

    def layout(self, vm: GpuVm) -> str:
        parts = [
            "K" if va.kernel_node else f"{va.addr}:{va.range}:{self.name(va.obj)}:{va.offset}"
            for va in vm
        ]
        return " ".join(["L", *parts])


def _requests(block: list[str]) -> Iterator[tuple[str, list[str]]]:
    """(request line, the kernel's op lines) for each request of a scenario."""
    i = 1
    while block[i].startswith("V "):
        i += 1
    while not block[i].startswith(("L", "E")):
        req, i = block[i], i + 1
        expected = []
        while block[i].startswith("  "):
            expected.append(block[i].strip())
            i += 1
        yield req, expected


@pytest.mark.parametrize(("header", "block"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_model_ops_are_the_kernels(header: str, block: list[str]) -> None:
    _, _, start, range_, rstart, rrange = header.split()
    vm = GpuVm(int(start), int(range_), int(rstart), int(rrange))
    names = _Names([GemObject(1 << 30, name=f"g{i}") for i in range(4)])
    for line in block[1:]:
        if not line.startswith("V "):
            break
        a, r, o, off = (int(x) for x in line.split()[1:])
        vm.map(a, r, names.obj(o), off)
    for req, expected in _requests(block):
        kind, *args = req.split()
        nums = [int(x) for x in args]
        if nums[1] == 0:  # the deliberate difference: the model refuses a zero range
            before = vm.layout()
            with pytest.raises(ZeroRange):
                if kind == "U":
                    vm.sm_unmap_ops(nums[0], 0)
                else:
                    vm.sm_map_ops(MapRequest(nums[0], 0, names.obj(nums[2]), nums[3]))
            assert vm.layout() == before
            continue
        try:
            if kind == "U":
                ops = vm.sm_unmap_ops(nums[0], nums[1])
            else:
                request = MapRequest(nums[0], nums[1], names.obj(nums[2]), nums[3])
                ops = vm.sm_map_ops(request) if kind == "M" else vm.madvise_ops(request)
        except GpuvmError as e:
            assert [f"ERR {e.errno}"] == expected, f"{header}: {req}"
            continue
        assert [names.op(op) for op in ops] == expected, f"{header}: {req}"
        vm.apply(ops)
    final = next(line for line in block if line.startswith("L"))
    assert names.layout(vm) == final, header
    vm.check_invariants()


def test_the_vectors_cover_every_kind_of_op() -> None:
    """The file is what its header says: all three request kinds, keep and non-keep
    UNMAP and REMAP, REMAPs with one piece and with two, refusals."""
    text = DATA.read_text()
    for needle in (
        "\nM ",
        "\nU ",
        "\nA ",
        "  UNMAP [",
        "keep=1",
        "keep=0",
        "next (none)",
        "prev (none)",
        "  ERR 22",
        " - ",
    ):
        assert needle in text, needle
    assert len(SCENARIOS) >= 80
    assert sum(1 for line in text.splitlines() if line[:2] in ("M ", "U ", "A ")) >= 3000
