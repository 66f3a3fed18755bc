"""The optional compiled core (``GPUVM_COMPILE=1``, docs/compiled.md): ``gpuvm.compiled()``
tells the build apart, ``GpuVm``'s methods are exactly its section modules' functions in
both builds, and interpreted subclasses and patches of ``GpuVm`` behave as documented.
The same file runs under both builds (``.ci/run`` runs it against the compiled one)."""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
from pathlib import Path
from types import FunctionType
from typing import Any

import pytest

import gpuvm
from gpuvm import EventBus, EventLog, GemObject, GpuVm
from gpuvm.core import compiled as build
from gpuvm.core import vm as vm_module
from gpuvm.core.events import VaInserted, VaRemoved
from gpuvm.core.va import Va
from gpuvm.testing.mutants import patched

CORE = Path(vm_module.__file__ or "").parent


def _source(module: str) -> ast.Module:
    return ast.parse((CORE / (module.rsplit(".", 1)[1] + ".py")).read_text())


def test_compiled_reports_how_the_core_was_built() -> None:
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    native = [
        m for m in build.MODULES if (importlib.import_module(m).__file__ or "").endswith(suffixes)
    ]
    assert build.compiled_modules() == tuple(native)
    assert gpuvm.compiled() is (len(native) == len(build.MODULES))
    assert build.core_build() in ("compiled", "pure")  # no supported build is partial
    assert build.core_build() == ("compiled" if gpuvm.compiled() else "pure")


def _sections() -> dict[str, tuple[str, ...]]:
    return {mod.__name__: names for mod, names in vm_module._SECTIONS}


def test_every_section_function_taking_the_vm_is_a_method() -> None:
    sections = _sections()
    assert set(sections) == {f"gpuvm.core.{p.stem}" for p in CORE.glob("vm_*.py")}, (
        "a section module without methods, or a method table naming a missing module"
    )
    for module, names in sections.items():
        takes_vm = [
            f.name
            for f in _source(module).body
            if isinstance(f, ast.FunctionDef) and f.args.args and f.args.args[0].arg == "vm"
        ]
        assert sorted(takes_vm) == sorted(names), module


def _param_view(args: ast.arguments, skip: int) -> list[tuple[str, str, str | None, str]]:
    """(kind, name, annotation, default) of every parameter after the first ``skip``."""
    out: list[tuple[str, str, str | None, str]] = []
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for a, d in list(zip(positional, defaults, strict=True))[skip:]:
        ann = ast.unparse(a.annotation) if a.annotation else None
        out.append(("pos", a.arg, ann, ast.unparse(d) if d else ""))
    for a, kd in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        ann = ast.unparse(a.annotation) if a.annotation else None
        out.append(("kw", a.arg, ann, ast.unparse(kd) if kd else ""))
    return out


def test_methods_have_their_bodies_signatures_and_pass_every_argument() -> None:
    cls = next(
        n
        for n in _source("gpuvm.core.vm").body
        if isinstance(n, ast.ClassDef) and n.name == "GpuVm"
    )
    methods = {f.name: f for f in cls.body if isinstance(f, ast.FunctionDef)}
    for module, names in _sections().items():
        bodies = {f.name: f for f in _source(module).body if isinstance(f, ast.FunctionDef)}
        short = module.rsplit(".", 1)[1]
        for name in names:
            method, body = methods[name], bodies[name]
            # The signature: the body's, ``self`` for ``vm``, "GpuVm" in the annotations.
            want = _param_view(body.args, 1)
            got = _param_view(method.args, 1)
            assert [(k, n, d) for k, n, _, d in got] == [(k, n, d) for k, n, _, d in want], name
            assert [a for *_, a, _ in got] == [
                a.replace("Step", f"{short}.Step") if a == "Step" else a for *_, a, _ in want
            ], name
            (stmt,) = [s for s in method.body if not isinstance(s, ast.Expr)]
            assert isinstance(stmt, ast.Return) and isinstance(stmt.value, ast.Call), name
            call = stmt.value
            assert ast.unparse(call.func) == f"{short}.{name}", name
            passed = [ast.unparse(a) for a in call.args]
            passed += [f"{k.arg}={ast.unparse(k.value)}" for k in call.keywords]
            expect = ["self"] + [n if k == "pos" else f"{n}={n}" for k, n, _, _ in want]
            assert passed == expect, name


def test_interpreted_methods_are_the_section_functions_themselves() -> None:
    for module, names in vm_module._SECTIONS:
        for name in names:
            method, body = vars(GpuVm)[name], getattr(module, name)
            if gpuvm.compiled():
                assert not isinstance(method, FunctionType), name  # native methods
            else:
                assert method is body, name  # one Python call, no wrapper


class Counting(GpuVm):
    """An interpreted subclass overriding methods the compiled bodies call through the VM."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def _insert(self, va: Va) -> None:
        self.calls.append(f"insert {va.addr:#x}")
        super()._insert(va)

    def _remove(self, va: Va) -> None:
        self.calls.append(f"remove {va.addr:#x}")
        super()._remove(va)


def test_an_interpreted_subclass_override_runs_from_the_core() -> None:
    bus = EventBus()
    log = EventLog()
    bus.subscribe(log, [VaInserted, VaRemoved])
    vm = Counting(0, 1 << 20, name="c", bus=bus)
    obj = GemObject(1 << 16, bus=bus)
    vm.map(0x1000, 0x3000, obj, 0)
    vm.map(0x2000, 0x1000, obj, 0x8000)  # a split: remove, two pieces, the new VA
    vm.unmap(0x1000, 0x3000)
    assert vm.calls == [
        "insert 0x1000",
        "remove 0x1000",
        "insert 0x1000",
        "insert 0x3000",
        "insert 0x2000",
        "remove 0x1000",
        "remove 0x2000",
        "remove 0x3000",
    ]
    assert [type(e).__name__ for e in log.events] == [
        ("VaInserted" if c.startswith("insert") else "VaRemoved") for c in vm.calls
    ]
    vm.check_invariants()


def test_a_patched_gpuvm_method_reaches_interpreted_subclasses_in_both_builds() -> None:
    """An interpreted subclass of ``GpuVm`` (a user's own VM class) sees a patch of a
    ``GpuVm`` method in both builds.  A plain ``GpuVm`` and the driver layer's VMs
    (``DriverVm``, native classes in the compiled build) see it only when interpreted:
    compiled code calls native methods directly, which is why the mutants that patch
    ``GpuVm`` are pure-only (``gpuvm.testing.mutants``)."""
    from gpuvm.drm.driver import DriverVm

    seen: list[str] = []
    orig = GpuVm._remove

    def _remove(self: GpuVm, va: Va) -> None:
        seen.append(self.name)
        orig(self, va)

    plain, sub = GpuVm(0, 1 << 20, name="plain"), Counting(0, 1 << 20, name="sub")
    drv = DriverVm(0, 1 << 20, name="driver", bus=EventBus())
    with patched(GpuVm, "_remove", _remove):
        for vm in (plain, sub, drv):
            vm.map(0x1000, 0x1000)
            vm.unmap(0x1000, 0x1000)
    assert vm_module.GpuVm._remove is orig
    assert seen == (["sub"] if gpuvm.compiled() else ["plain", "sub", "driver"])


def test_holder_hash_is_cached_and_behaves_as_the_value_hash() -> None:
    """``Holder`` hashes once at construction (it is a dict key on every get and put):
    equal holders hash equal, the hash is the value hash it always was, the derived slot
    does not make it writable, and an unhashable ``who`` still fails when hashed, not when
    the holder is made."""
    from attrs.exceptions import FrozenInstanceError

    from gpuvm.core.refcount import Holder

    who = object()
    a, b = Holder("bind", who), Holder("bind", who)
    assert a == b and hash(a) == hash(b) == hash(("Holder", "bind", who))
    with pytest.raises(FrozenInstanceError):
        a._hash = 1  # type: ignore[misc]
    bad = Holder("bind", who=[1])
    with pytest.raises(TypeError):
        hash(bad)
    assert {a: 1}[b] == 1


def test_telling_the_build_imports_nothing() -> None:
    """``gpuvm.core.compiled`` answers from files, importing none of the modules it names
    (two of which are above the core: the driver VMs and the counters' handlers), and uses
    the standard library only, as the build needs."""
    import subprocess
    import sys

    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('c', {str(CORE / 'compiled.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(m.core_build())\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('gpuvm', 'legacy', 'attrs')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == build.core_build()
    assert out[1] == "[]"
