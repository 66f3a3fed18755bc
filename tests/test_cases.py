"""The 15 split/merge cases documented in drm_gpuvm.c and the multi-VA example.

Two independent checks: the case table in ``gpuvm.study.cases`` replayed on the model, and for
several cases expected op objects written out here by hand (from the case comments of
``drm_gpuvm.c``; case 15 follows the code, which gives ``n+1`` where the comment says
``n+2``), compared field by field: op kind, ``keep``, and each piece's addr, range, object
and offset.  Also: the ``gpuvm cases`` CLI exits 0, in text and JSON form.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gpuvm import GemObject, GpuVm, MapOp, MapRequest, Piece, RemapOp, UnmapOp
from gpuvm.study.cases import CASES, MULTI_VA, Case, M, N, run_case
from gpuvm.study.cli import main


@pytest.mark.parametrize("case", [*CASES, MULTI_VA], ids=lambda c: f"case{c.number}")
def test_documented_case_table(case: Case) -> None:
    run = run_case(case)
    assert run.ops == case.ops
    assert run.result == case.result
    assert run.ok
    # the MAP is always last and there is exactly one
    assert isinstance(run.raw_ops[-1], MapOp)
    assert sum(isinstance(op, MapOp) for op in run.raw_ops) == 1


def test_table_covers_the_fifteen_cases() -> None:
    assert [c.number for c in CASES] == list(range(1, 16))
    # case 15: the code's n+1, not the diagram's n+2
    assert CASES[14].result[-1] == ("a", 2, 3, N + 1)


# --- hand-written expectations -----------------------------------------------------------


class Scene:
    """A fresh VM with objects ``a`` and ``b`` and helpers to lay out and request."""

    def __init__(self) -> None:
        self.vm = GpuVm(start=0, range=1 << 16)
        self.a = GemObject(size=1 << 12, name="a")
        self.b = GemObject(size=1 << 12, name="b")

    def old(self, obj: GemObject, start: int, end: int, off: int) -> Any:
        (va,) = self.vm.map(start, end - start, obj, off)
        return va

    def ops(self, obj: GemObject | None, start: int, end: int, off: int) -> list[Any]:
        return list(self.vm.sm_map_ops(MapRequest(start, end - start, obj, off)))


def test_case1_identical_remap_keeps() -> None:
    s = Scene()
    va = s.old(s.a, 0, 1, N)
    assert s.ops(s.a, 0, 1, N) == [UnmapOp(va, keep=True), MapOp(0, 1, s.a, N)]


def test_case2_and_3_other_offset_or_object_do_not_keep() -> None:
    s = Scene()
    va = s.old(s.a, 0, 1, N)
    assert s.ops(s.a, 0, 1, M) == [UnmapOp(va, keep=False), MapOp(0, 1, s.a, M)]
    assert s.ops(s.b, 0, 1, N) == [UnmapOp(va, keep=False), MapOp(0, 1, s.b, N)]
    # object-less on either side never keeps (sparse / NULL mappings)
    assert s.ops(None, 0, 1, N) == [UnmapOp(va, keep=False), MapOp(0, 1, None, N)]


def test_case4_growing_keeps() -> None:
    s = Scene()
    va = s.old(s.a, 0, 1, N)
    assert s.ops(s.a, 0, 2, N) == [UnmapOp(va, True), MapOp(0, 2, s.a, N)]
    assert s.ops(s.b, 0, 2, N) == [UnmapOp(va, False), MapOp(0, 2, s.b, N)]


def test_case5_and_6_next_piece() -> None:
    s = Scene()
    va = s.old(s.a, 0, 2, N)
    nxt = Piece(addr=1, range=1, obj=s.a, offset=N + 1)
    assert s.ops(s.b, 0, 1, N) == [RemapOp(None, nxt, UnmapOp(va, False)), MapOp(0, 1, s.b, N)]
    ops = s.ops(s.a, 0, 1, N)
    assert ops == [RemapOp(None, nxt, UnmapOp(va, True)), MapOp(0, 1, s.a, N)]
    remap = ops[0]
    assert remap.prev is None
    assert (remap.next.addr, remap.next.range, remap.next.obj, remap.next.offset) == (
        1,
        1,
        s.a,
        N + 1,
    )
    assert remap.hole() == (0, 1)


def test_case8_and_10_prev_piece_keeps() -> None:
    s = Scene()
    va = s.old(s.a, 0, 2, N)
    prev = Piece(0, 1, s.a, N)
    assert s.ops(s.a, 1, 2, N + 1) == [
        RemapOp(prev, None, UnmapOp(va, True)),
        MapOp(1, 1, s.a, N + 1),
    ]
    assert s.ops(s.a, 1, 3, N + 1) == [
        RemapOp(prev, None, UnmapOp(va, True)),
        MapOp(1, 2, s.a, N + 1),
    ]
    # one unit off the line: not kept
    assert s.ops(s.a, 1, 3, N + 2)[0] == RemapOp(prev, None, UnmapOp(va, False))


def test_case11_and_12_both_pieces() -> None:
    s = Scene()
    va = s.old(s.a, 0, 3, N)
    prev, nxt = Piece(0, 1, s.a, N), Piece(2, 1, s.a, N + 2)
    ops = s.ops(s.b, 1, 2, M)
    assert ops == [RemapOp(prev, nxt, UnmapOp(va, False)), MapOp(1, 1, s.b, M)]
    ops = s.ops(s.a, 1, 2, N + 1)
    assert ops == [RemapOp(prev, nxt, UnmapOp(va, True)), MapOp(1, 1, s.a, N + 1)]
    s.vm.apply(s.vm.sm_map_ops(MapRequest(1, 1, s.a, N + 1)))
    assert s.vm.layout() == [(0, 1, s.a, N), (1, 1, s.a, N + 1), (2, 1, s.a, N + 2)]


def test_case13_and_14_request_starts_before() -> None:
    s = Scene()
    va = s.old(s.a, 1, 2, N + 1)
    assert s.ops(s.a, 0, 2, N) == [UnmapOp(va, True), MapOp(0, 2, s.a, N)]
    assert s.ops(s.a, 0, 3, N) == [UnmapOp(va, True), MapOp(0, 3, s.a, N)]


def test_case15_next_offset_is_n_plus_1() -> None:
    s = Scene()
    va = s.old(s.a, 1, 3, N)
    ops = s.ops(s.b, 0, 2, M)
    assert ops == [RemapOp(None, Piece(2, 1, s.a, N + 1), UnmapOp(va, False)), MapOp(0, 2, s.b, M)]
    s.vm.apply(s.vm.sm_map_ops(MapRequest(0, 2, s.b, M)))
    assert s.vm.layout() == [(0, 2, s.b, M), (2, 1, s.a, N + 1)]


def test_multi_va_example() -> None:
    vm = GpuVm(0, 64)
    objs = {n: GemObject(64, name=n) for n in "ABCX"}
    a = vm.map(0, 2, objs["A"], 0)[0]
    b = vm.map(2, 2, objs["B"], 0)[0]
    c = vm.map(4, 2, objs["C"], 0)[0]
    ops = list(vm.sm_map_ops(MapRequest(1, 4, objs["X"], 0)))
    assert ops == [
        RemapOp(Piece(0, 1, objs["A"], 0), None, UnmapOp(a, False)),
        UnmapOp(b, False),
        RemapOp(None, Piece(5, 1, objs["C"], 1), UnmapOp(c, False)),
        MapOp(1, 4, objs["X"], 0),
    ]
    created = vm.apply(vm.sm_map_ops(MapRequest(1, 4, objs["X"], 0)))
    assert [va.layout() for va in created] == [
        (0, 1, objs["A"], 0),
        (5, 1, objs["C"], 1),
        (1, 4, objs["X"], 0),
    ]
    assert vm.layout() == [(0, 1, objs["A"], 0), (1, 4, objs["X"], 0), (5, 1, objs["C"], 1)]
    # B's only mapping is gone, so its VmBo is gone and it holds no GEM reference
    assert objs["B"].vm_bos == [] and objs["B"].refcount == 1
    vm.check_invariants()


def test_pieces_copy_flags_and_map_sparse_iff_objectless() -> None:
    """Pieces carry no flags (``drm_gpuva_op_map`` has none); the canonical driver copies
    them from the split VA, as msm does.  A MAP with no object creates a sparse VA."""
    vm = GpuVm(0, 64)
    bo = GemObject(64)
    (va,) = vm.map(0, 8, bo, 0)
    va.invalidate()
    va.user_flags = 0b100
    (sparse,) = vm.map(16, 8, None, 0)
    assert sparse.sparse and not va.sparse
    created = vm.map(2, 2, bo, 40)
    prev, nxt, new = created
    for piece in (prev, nxt):
        assert piece.invalidated and piece.user_flags == 0b100 and not piece.sparse
    assert not new.invalidated and new.user_flags == 0 and not new.sparse
    p2, n2, _ = vm.map(18, 2, bo, 0)
    assert p2.sparse and n2.sparse and p2.obj is None


# --- the CLI -----------------------------------------------------------------------------


def test_cli_cases_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cases"]) == 0
    out = capsys.readouterr().out
    assert "MISMATCH" not in out
    assert out.count("[ok]") == 16
    assert "case 15" in out and "a[2,3)@N+1" in out
    assert "multi-VA" in out


def test_cli_cases_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cases", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["case"] for r in rows] == list(range(1, 17))
    assert all(r["matches_kernel_doc"] for r in rows)
    assert rows[5]["ops"] == ["REMAP(next=a[1,2)@N+1, keep)", "MAP"]
    assert rows[15]["result"] == ["A[0,1)@0", "X[1,5)@0", "C[5,6)@1"]


def test_cli_bad_argument_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["cases", "--bogus"])
    assert ei.value.code == 2
