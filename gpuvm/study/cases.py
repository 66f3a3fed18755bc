"""The 15 split/merge cases documented in ``drm_gpuvm.c`` (and the multi-VA example), as
data: the CLI replays them and the test suite checks the model against them.

Layouts are written ``(object, start, end, offset)``; objects are named ``a``, ``b``, ...
and offsets are ``N`` or ``M`` plus a small delta, as in the kernel's diagrams.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from gpuvm.core.gem import GemObject
from gpuvm.core.ops import MapOp, MapRequest, Op, RemapOp, UnmapOp
from gpuvm.core.vm import GpuVm

N = 0x100
M = 0x400

Span = tuple[str, int, int, int]


@attrs.frozen(slots=True)
class Case:
    """One documented case: old layout, request, expected ops (as text) and result."""

    number: int
    old: tuple[Span, ...]
    request: Span
    ops: tuple[str, ...]
    result: tuple[Span, ...]


CASES: tuple[Case, ...] = (
    Case(1, (("a", 0, 1, N),), ("a", 0, 1, N), ("UNMAP(a, keep)", "MAP"), (("a", 0, 1, N),)),
    Case(2, (("a", 0, 1, N),), ("a", 0, 1, M), ("UNMAP(a)", "MAP"), (("a", 0, 1, M),)),
    Case(3, (("a", 0, 1, N),), ("b", 0, 1, N), ("UNMAP(a)", "MAP"), (("b", 0, 1, N),)),
    Case(4, (("a", 0, 1, N),), ("a", 0, 2, N), ("UNMAP(a, keep)", "MAP"), (("a", 0, 2, N),)),
    Case(
        5,
        (("a", 0, 2, N),),
        ("b", 0, 1, N),
        ("REMAP(next=a[1,2)@N+1)", "MAP"),
        (("b", 0, 1, N), ("a", 1, 2, N + 1)),
    ),
    Case(
        6,
        (("a", 0, 2, N),),
        ("a", 0, 1, N),
        ("REMAP(next=a[1,2)@N+1, keep)", "MAP"),
        (("a", 0, 1, N), ("a", 1, 2, N + 1)),
    ),
    Case(
        7,
        (("a", 0, 2, N),),
        ("b", 1, 2, M),
        ("REMAP(prev=a[0,1)@N)", "MAP"),
        (("a", 0, 1, N), ("b", 1, 2, M)),
    ),
    Case(
        8,
        (("a", 0, 2, N),),
        ("a", 1, 2, N + 1),
        ("REMAP(prev=a[0,1)@N, keep)", "MAP"),
        (("a", 0, 1, N), ("a", 1, 2, N + 1)),
    ),
    Case(
        9,
        (("a", 0, 2, N),),
        ("b", 1, 3, M),
        ("REMAP(prev=a[0,1)@N)", "MAP"),
        (("a", 0, 1, N), ("b", 1, 3, M)),
    ),
    Case(
        10,
        (("a", 0, 2, N),),
        ("a", 1, 3, N + 1),
        ("REMAP(prev=a[0,1)@N, keep)", "MAP"),
        (("a", 0, 1, N), ("a", 1, 3, N + 1)),
    ),
    Case(
        11,
        (("a", 0, 3, N),),
        ("b", 1, 2, M),
        ("REMAP(prev=a[0,1)@N, next=a[2,3)@N+2)", "MAP"),
        (("a", 0, 1, N), ("b", 1, 2, M), ("a", 2, 3, N + 2)),
    ),
    Case(
        12,
        (("a", 0, 3, N),),
        ("a", 1, 2, N + 1),
        ("REMAP(prev=a[0,1)@N, next=a[2,3)@N+2, keep)", "MAP"),
        (("a", 0, 1, N), ("a", 1, 2, N + 1), ("a", 2, 3, N + 2)),
    ),
    Case(13, (("a", 1, 2, N + 1),), ("a", 0, 2, N), ("UNMAP(a, keep)", "MAP"), (("a", 0, 2, N),)),
    Case(14, (("a", 1, 2, N + 1),), ("a", 0, 3, N), ("UNMAP(a, keep)", "MAP"), (("a", 0, 3, N),)),
    Case(
        15,
        (("a", 1, 3, N),),
        ("b", 0, 2, M),
        ("REMAP(next=a[2,3)@N+1)", "MAP"),
        (("b", 0, 2, M), ("a", 2, 3, N + 1)),
    ),
)

MULTI_VA = Case(
    16,
    (("A", 0, 2, 0), ("B", 2, 4, 0), ("C", 4, 6, 0)),
    ("X", 1, 5, 0),
    ("REMAP(prev=A[0,1)@0)", "UNMAP(B)", "REMAP(next=C[5,6)@1)", "MAP"),
    (("A", 0, 1, 0), ("X", 1, 5, 0), ("C", 5, 6, 1)),
)
"""The kernel documentation's multi-VA example (numbered 16 here)."""


def _offset_name(off: int) -> str:
    if off < N:
        return str(off)
    base, name = (M, "M") if off >= M else (N, "N")
    d = off - base
    return name if d == 0 else f"{name}+{d}"


def describe_op(op: Op, names: dict[int, str]) -> str:
    """An op in the notation of the case table, e.g. ``REMAP(next=a[1,2)@N+1, keep)``."""

    def piece(p: object) -> str:
        return f"{names[id(p.obj)]}[{p.addr},{p.end})@{_offset_name(p.offset)}"  # type: ignore[attr-defined]

    if isinstance(op, UnmapOp):
        return f"UNMAP({names[id(op.va.obj)]}" + (", keep)" if op.keep else ")")
    if isinstance(op, RemapOp):
        parts = []
        if op.prev is not None:
            parts.append("prev=" + piece(op.prev))
        if op.next is not None:
            parts.append("next=" + piece(op.next))
        if op.unmap.keep:
            parts.append("keep")
        return "REMAP(" + ", ".join(parts) + ")"
    if isinstance(op, MapOp):
        return "MAP"
    return repr(op)


@attrs.frozen(slots=True)
class CaseRun:
    """The outcome of replaying one case on a fresh VM."""

    case: Case
    ops: tuple[str, ...]
    result: tuple[Span, ...]
    raw_ops: tuple[Op, ...]

    @property
    def ok(self) -> bool:
        return self.ops == self.case.ops and self.result == self.case.result


def run_case(case: Case, vm_factory: Callable[[], GpuVm] | None = None) -> CaseRun:
    """Replay ``case``: map the old layout, compute and apply the request's ops."""
    vm = vm_factory() if vm_factory is not None else GpuVm(0, 1 << 16, name=f"case{case.number}")
    objs: dict[str, GemObject] = {}
    spans = [*case.old, case.request]
    for name, *_ in spans:
        objs.setdefault(name, GemObject(1 << 12, name=name, bus=vm.bus))
    names = {id(o): n for n, o in objs.items()}
    for name, s, e, off in case.old:
        vm.map(s, e - s, objs[name], off)
    name, s, e, off = case.request
    ops = vm.sm_map_ops(MapRequest(s, e - s, objs[name], off))
    text = tuple(describe_op(op, names) for op in ops)
    vm.apply(ops)
    vm.check_invariants()
    result = tuple((names[id(va.obj)], va.addr, va.end, va.offset) for va in vm.vas)
    return CaseRun(case, text, result, tuple(ops))


def format_span(span: Span) -> str:
    name, s, e, off = span
    return f"{name}[{s},{e})@{_offset_name(off)}"
