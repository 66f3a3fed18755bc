"""Conformance vectors: the model's split/merge behaviour (``drm_gpuvm_sm_map_ops_create`` /
``drm_gpuvm_sm_unmap_ops_create`` in drm_gpuvm.c) exported as data a C or Rust driver test
can check itself against (``docs/vectors.md``).

A vector is a script: commands on one VM of objects ``a``..``d``, each with the ops the
model generates for it (in the case-table notation of :func:`gpuvm.study.cases.describe_op`)
and the layout after the ops are applied.  The documented cases come first, then seeded
random scripts (:class:`random.Random` with the given seed), so a seed gives the same bytes.
"""

from __future__ import annotations

import json
import random
from typing import Any

from gpuvm.core.gem import GemObject
from gpuvm.core.ops import MapRequest
from gpuvm.core.vm import GpuVm
from gpuvm.study.cases import CASES, MULTI_VA, describe_op, run_case
from gpuvm.study.vectors_vmbo import c_rows, vm_bo_vectors

__all__ = ["VA_RANGE", "random_script", "to_c", "to_jsonl", "vectors"]

VA_RANGE = 64
"""Random scripts use addresses in ``[0, VA_RANGE)``, in abstract units like the documented
cases (a driver test multiplies addresses and offsets by its page size)."""
_OBJS = ("a", "b", "c", "d")


def _layout(vm: GpuVm, names: dict[int, str]) -> list[list[Any]]:
    return [[names[id(va.obj)], va.addr, va.end, va.offset] for va in vm.vas]


def random_script(seed: int, index: int, commands: int = 8) -> dict[str, Any]:
    """One random script: ``commands`` maps (of an object at an offset) and unmaps."""
    rng = random.Random(f"{seed}:{index}")
    vm = GpuVm(0, VA_RANGE, name=f"rand{index}")
    objs = {n: GemObject(1 << 12, name=n, bus=vm.bus) for n in _OBJS}
    names = {id(o): n for n, o in objs.items()}
    cmds: list[dict[str, Any]] = []
    for _ in range(commands):
        start = rng.randrange(0, VA_RANGE - 1)
        end = rng.randrange(start + 1, min(VA_RANGE, start + 16) + 1)
        if rng.random() < 0.7:
            name = rng.choice(_OBJS)
            offset = rng.randrange(0, 32)
            ops = vm.sm_map_ops(MapRequest(start, end - start, objs[name], offset))
            cmd: dict[str, Any] = {"cmd": "map", "obj": name, "addr": start, "end": end}
            cmd["offset"] = offset
        else:
            ops = vm.sm_unmap_ops(start, end - start)
            cmd = {"cmd": "unmap", "addr": start, "end": end}
        cmd["ops"] = [describe_op(op, names) for op in ops]
        vm.apply(ops)
        vm.check_invariants()
        cmd["layout"] = _layout(vm, names)
        cmds.append(cmd)
    return {
        "vector": f"random-{seed}-{index}",
        "kind": "split-merge",
        "va_range": VA_RANGE,
        "commands": cmds,
    }


def _case_vector(number: int | str, case: Any) -> dict[str, Any]:
    run = run_case(case)
    cmds: list[dict[str, Any]] = [
        {"cmd": "map", "obj": n, "addr": s, "end": e, "offset": o, "ops": ["MAP"]}
        for n, s, e, o in case.old
    ]
    name, s, e, off = case.request
    cmds.append(
        {
            "cmd": "map",
            "obj": name,
            "addr": s,
            "end": e,
            "offset": off,
            "ops": list(run.ops),
            "layout": [list(x) for x in run.result],
        }
    )
    return {
        "vector": f"doc-case-{number}",
        "kind": "split-merge",
        "va_range": 1 << 16,
        "commands": cmds,
    }


def vectors(seed: int, random_scripts: int = 16, vm_bo_scripts: int = 8) -> list[dict[str, Any]]:
    """The documented cases (and the multi-VA example), ``random_scripts`` split/merge
    scripts, then the VmBo sequences and ``vm_bo_scripts`` random VmBo scripts
    (:mod:`gpuvm.study.vectors_vmbo`).  Each vector's ``kind`` says which."""
    out = [_case_vector(c.number, c) for c in CASES]
    out.append(_case_vector("multi-va", MULTI_VA))
    out += [random_script(seed, i) for i in range(random_scripts)]
    out += vm_bo_vectors(seed, vm_bo_scripts)
    return out


def to_jsonl(vecs: list[dict[str, Any]]) -> str:
    """One vector a line, keys sorted."""
    return "".join(json.dumps(v, sort_keys=True, separators=(",", ":")) + "\n" for v in vecs)


def _c_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_c(vecs: list[dict[str, Any]], seed: int) -> str:
    """A C header a KUnit test includes: ``gpuvm_vectors[]`` (``struct gpuvm_vector_cmd``
    rows: each split/merge command with its expected ops and layout as strings in the
    case-table notation), then ``gpuvm_vm_bo_vectors[]`` (``struct gpuvm_vm_bo_vector_cmd``
    rows: each VmBo command with its result and the state after it)."""
    lines = [
        f"/* gpuvm-model conformance vectors, seed {seed}: generated, do not edit. */",
        "/* struct gpuvm_vector_cmd { const char *vector; const char *cmd; const char *obj;",
        " *     u64 addr, end, offset; const char *ops; const char *layout; }; */",
        "static const struct gpuvm_vector_cmd gpuvm_vectors[] = {",
    ]
    for v in vecs:
        if v.get("kind", "split-merge") != "split-merge":
            continue
        for c in v["commands"]:
            layout = " ".join(f"{n}[{s},{e})@{o}" for n, s, e, o in c.get("layout", []))
            lines.append(
                f"\t{{ {_c_str(v['vector'])}, {_c_str(c['cmd'])}, {_c_str(c.get('obj', ''))}, "
                f"{c['addr']:#x}, {c['end']:#x}, {c.get('offset', 0):#x}, "
                f"{_c_str('; '.join(c['ops']))}, "
                f"{_c_str(layout) if 'layout' in c else 'NULL'} }},"
            )
    lines.append("};")
    lines += [
        "",
        "/* struct gpuvm_vm_bo_vector_cmd { const char *vector; const char *flags;",
        " *     const char *cmd; const char *obj; u64 addr, end, offset; const char *result;",
        " *     const char *vm_bos; const char *extobj; const char *evict;",
        " *     const char *deferred; const char *gems; const char *layout; }; */",
        "static const struct gpuvm_vm_bo_vector_cmd gpuvm_vm_bo_vectors[] = {",
    ]
    lines += c_rows([v for v in vecs if v.get("kind") == "vm_bo"], _c_str)
    lines.append("};")
    return "\n".join(lines) + "\n"
