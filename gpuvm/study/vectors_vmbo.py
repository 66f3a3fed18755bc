"""Conformance vectors for VmBo lifetimes: ``drm_gpuvm_bo_obtain`` / ``_find`` / ``_put``,
``drm_gpuva_link`` / ``_unlink`` (through map / unmap), the extobj list
(``drm_gpuvm_bo_extobj_add``), the evict list (``drm_gpuvm_bo_evict``,
``drm_gpuvm_validate``, ``drm_gpuvm_prepare_objects``) and IMMEDIATE_MODE deferred puts
(``drm_gpuvm_bo_put_deferred``, ``drm_gpuva_unlink_defer``,
``drm_gpuvm_bo_deferred_cleanup``) of ``drivers/gpu/drm/drm_gpuvm.c`` (``docs/vectors.md``).

A vector is a script on one VM: buffers ``a`` (VM-private: it shares the VM's
reservation) and ``b``, ``c`` (external: their own reservation), then commands, each with
its ``result`` and the observable state after it (every VmBo's reference count, VA count,
list state and evicted flag, the extobj, evict and deferred lists in order, the buffers'
reference counts and freed flags, the VA layout).  VmBos are named by buffer and creation
number (``b1``, then ``b2`` once ``b1`` is gone).  A few fixed sequences come first, then
seeded random scripts, so a seed gives the same bytes.
"""

from __future__ import annotations

import random
from typing import Any

from gpuvm.core.gem import GemObject
from gpuvm.core.refs import CALLER
from gpuvm.core.vm import GpuVm, GpuVmFlags
from gpuvm.core.vmbo import VmBo

__all__ = ["FIXED", "VM_BO_VA_RANGE", "VmBoScript", "random_vm_bo_script", "vm_bo_vectors"]

VM_BO_VA_RANGE = 32
"""VM-BO scripts use addresses in ``[0, VM_BO_VA_RANGE)`` (abstract units)."""
_OBJS = (("a", False), ("b", True), ("c", True))
_FLAG_NAMES = (
    ("IMMEDIATE_MODE", GpuVmFlags.IMMEDIATE_MODE),
    ("RESV_PROTECTED", GpuVmFlags.RESV_PROTECTED),
)


def _flags(names: list[str]) -> GpuVmFlags:
    out = GpuVmFlags.NONE
    for n, f in _FLAG_NAMES:
        if n in names:
            out |= f
    return out


class VmBoScript:
    """One VM and its buffers, run command by command (a dict as in the JSON lines), each
    recorded with its result and the state after it."""

    def __init__(self, flags: list[str]) -> None:
        self.vm = GpuVm(0, VM_BO_VA_RANGE, name="vm", flags=_flags(flags))
        self.objs: dict[str, GemObject] = {}
        for name, ext in _OBJS:
            kw: dict[str, Any] = {} if ext else {"resv": self.vm.resv}
            self.objs[name] = GemObject(1 << 12, name=name, bus=self.vm.bus, **kw)
        self.names = {id(o): n for n, o in self.objs.items()}
        self.seen: list[VmBo] = []
        self.labels: dict[int, str] = {}

    def _label_new(self) -> None:
        for vb in self.vm.vm_bos:
            if id(vb) not in self.labels:
                obj = self.names[id(vb.obj)]
                n = 1 + sum(1 for s in self.seen if s.obj is vb.obj)
                self.labels[id(vb)] = f"{obj}{n}"
                self.seen.append(vb)

    def _bo(self, obj: str) -> VmBo:
        vb = self.objs[obj].vm_bo_for(self.vm)
        if vb is None:
            raise ValueError(f"{obj} has no listed VmBo")
        return vb

    def _lab(self, vbs: Any) -> list[str]:
        return [self.labels[id(vb)] for vb in vbs]

    def step(self, cmd: dict[str, Any]) -> Any:
        """Run one command; its result (``None`` when it has none)."""
        vm, c = self.vm, cmd["cmd"]
        result: Any = None
        if c == "obtain":
            vm.bo_obtain(self.objs[cmd["obj"]], CALLER)
        elif c == "find":
            found = vm.bo_find(self.objs[cmd["obj"]], CALLER)
            result = None if found is None else self.labels[id(found)]
        elif c == "put":
            result = self._bo(cmd["obj"]).put(CALLER)
        elif c == "put_deferred":
            result = self._bo(cmd["obj"]).put_deferred(CALLER)
        elif c == "map":
            vm.map(cmd["addr"], cmd["end"] - cmd["addr"], self.objs[cmd["obj"]], cmd["offset"])
        elif c == "unmap":
            vm.unmap(cmd["addr"], cmd["end"] - cmd["addr"])
        elif c == "unlink_defer":
            va = vm.find(cmd["addr"], cmd["end"] - cmd["addr"])
            if va is None:
                raise ValueError(f"no VA at [{cmd['addr']}, {cmd['end']})")
            with vm.fence_signalling():
                vm.remove(va)
                vm.unlink_defer(va)
            vm.free_va(va)
        elif c in ("evict", "unevict"):
            vm.bo_evict(self._bo(cmd["obj"]), c == "evict")
        elif c == "validate":
            done: list[VmBo] = []

            def back(vb: VmBo) -> int:
                vb.evict(False)
                done.append(vb)
                return 0

            result = self._lab(done) if vm.validate(back) == 0 else None
        elif c == "prepare_objects":
            vm.prepare_objects()
        elif c == "cleanup":
            result = self._lab(vm.bo_deferred_cleanup())
        elif c == "gem_put":
            self.objs[cmd["obj"]].put()
        else:
            raise ValueError(f"unknown vm_bo command {c!r}")
        vm.check_invariants()
        self._label_new()
        return result

    def state(self) -> dict[str, Any]:
        """The observable state: VmBos in creation order, lists, buffers, layout."""
        bos = []
        for vb in self.seen:
            st = (
                "freed"
                if vb.freed
                else "zombie"
                if vb.zombie
                else "listed"
                if vb.listed
                else "unlisted"
            )
            bos.append(
                {
                    "bo": self.labels[id(vb)],
                    "kref": vb.kref,
                    "vas": len(vb.vas),
                    "state": st,
                    "evicted": vb.evicted,
                }
            )
        vm = self.vm
        return {
            "vm_bos": bos,
            "extobj": self._lab(vm.extobj),
            "evict": self._lab(vm.evict),
            "deferred": self._lab(vm.bo_defer),
            "gems": [[n, o.refcount, o.freed] for n, o in self.objs.items()],
            "layout": [[self.names[id(va.obj)], va.addr, va.end, va.offset] for va in vm.vas],
        }

    def record(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """``cmd`` run, with ``result`` and ``state``."""
        out = dict(cmd)
        out["result"] = self.step(cmd)
        out["state"] = self.state()
        return out


def _m(obj: str, addr: int, end: int, offset: int = 0) -> dict[str, Any]:
    return {"cmd": "map", "obj": obj, "addr": addr, "end": end, "offset": offset}


def _r(c: str, addr: int, end: int) -> dict[str, Any]:
    return {"cmd": c, "addr": addr, "end": end}


def _c(c: str) -> dict[str, Any]:
    return {"cmd": c}


def _o(c: str, obj: str) -> dict[str, Any]:
    return {"cmd": c, "obj": obj}


FIXED: list[tuple[str, list[str], list[dict[str, Any]]]] = [
    (
        "vm-bo-obtain-find-put",
        [],
        [
            _o("find", "a"),
            _o("obtain", "a"),
            _o("obtain", "a"),
            _o("find", "a"),
            *[_o("put", "a")] * 3,
            _o("find", "a"),
            _o("obtain", "a"),
            _o("put", "a"),
        ],
    ),
    (
        "vm-bo-link-unlink",
        [],
        [
            _m("a", 0, 4),
            _m("a", 8, 12, 8),
            _o("obtain", "a"),
            _r("unmap", 0, 4),
            _m("a", 16, 24),
            _r("unmap", 18, 20),
            _r("unmap", 8, 24),
            _o("put", "a"),
        ],
    ),
    (
        "vm-bo-extobj",
        [],
        [
            _m("b", 0, 4),
            _m("a", 4, 8),
            _m("c", 8, 12),
            _r("unmap", 0, 4),
            _m("b", 12, 16),
            _o("gem_put", "b"),
            _r("unmap", 12, 16),
            _r("unmap", 0, 12),
        ],
    ),
    (
        "vm-bo-evict-validate",
        [],
        [
            _m("a", 0, 4),
            _m("b", 4, 8),
            _m("c", 8, 12),
            _o("evict", "c"),
            _o("evict", "a"),
            _o("evict", "b"),
            _o("unevict", "a"),
            _c("validate"),
            _o("evict", "b"),
            _r("unmap", 4, 8),
            _c("validate"),
        ],
    ),
    (
        "vm-bo-deferred",
        ["IMMEDIATE_MODE"],
        [
            _m("b", 0, 4),
            _m("c", 8, 12),
            _o("evict", "b"),
            _o("obtain", "c"),
            _r("unlink_defer", 0, 4),
            _r("unlink_defer", 8, 12),
            _o("put_deferred", "c"),
            _m("b", 16, 20),
            _c("cleanup"),
            _c("cleanup"),
        ],
    ),
    (
        "vm-bo-deferred-resv-protected",
        ["IMMEDIATE_MODE", "RESV_PROTECTED"],
        [
            _m("a", 0, 4),
            _m("b", 4, 8),
            _o("evict", "b"),
            _o("evict", "a"),
            _c("prepare_objects"),
            _r("unlink_defer", 4, 8),
            _r("unlink_defer", 0, 4),
            _c("validate"),
            _c("cleanup"),
        ],
    ),
]
"""The fixed sequences: ``(name, VM flags, commands)``."""


def _vector(name: str, flags: list[str], cmds: list[dict[str, Any]]) -> dict[str, Any]:
    s = VmBoScript(flags)
    return {
        "vector": name,
        "kind": "vm_bo",
        "flags": flags,
        "objects": [[n, ext] for n, ext in _OBJS],
        "va_range": VM_BO_VA_RANGE,
        "commands": [s.record(c) for c in cmds],
    }


def random_vm_bo_script(seed: int, index: int, commands: int = 12) -> dict[str, Any]:
    """One random script: commands drawn among those valid in the current state."""
    rng = random.Random(f"vm_bo:{seed}:{index}")
    flags = rng.choice([[], ["IMMEDIATE_MODE"], ["IMMEDIATE_MODE", "RESV_PROTECTED"]])
    s = VmBoScript(flags)
    imm = "IMMEDIATE_MODE" in flags
    out: list[dict[str, Any]] = []
    for _ in range(commands):
        objs = [n for n, _ext in _OBJS if not s.objs[n].freed]
        listed = [n for n in objs if s.objs[n].vm_bo_for(s.vm) is not None]
        held = [n for n in listed if s._bo(n).refs.holders.get(CALLER, 0) > 0]
        choices: list[str] = ["map", "map", "unmap"] if objs else ["unmap"]
        choices += ["obtain", "find"] if objs else []
        choices += ["evict", "unevict"] if listed else []
        choices += ["put"] * 2 if held else []
        choices += ["validate"]
        if imm:
            choices += ["unlink_defer"] * 2 if s.vm.vas else []
            choices += ["put_deferred"] * 2 if held else []
            choices += ["cleanup"]
        if "RESV_PROTECTED" in flags:
            choices += ["prepare_objects"]
        c = rng.choice(choices)
        if c == "map":
            start = rng.randrange(0, VM_BO_VA_RANGE - 1)
            end = rng.randrange(start + 1, min(VM_BO_VA_RANGE, start + 8) + 1)
            cmd = _m(rng.choice(objs), start, end, rng.randrange(0, 16))
        elif c == "unmap":
            start = rng.randrange(0, VM_BO_VA_RANGE - 1)
            cmd = _r("unmap", start, rng.randrange(start + 1, min(VM_BO_VA_RANGE, start + 8) + 1))
        elif c == "unlink_defer":
            va = rng.choice(s.vm.vas)
            cmd = _r("unlink_defer", va.addr, va.end)
        elif c in ("obtain", "find"):
            cmd = _o(c, rng.choice(objs))
        elif c in ("evict", "unevict"):
            cmd = _o(c, rng.choice(listed))
        elif c in ("put", "put_deferred"):
            cmd = _o(c, rng.choice(held))
        else:
            cmd = _c(c)
        out.append(s.record(cmd))
    return {
        "vector": f"vm-bo-random-{seed}-{index}",
        "kind": "vm_bo",
        "flags": flags,
        "objects": [[n, ext] for n, ext in _OBJS],
        "va_range": VM_BO_VA_RANGE,
        "commands": out,
    }


def vm_bo_vectors(seed: int, random_scripts: int = 8) -> list[dict[str, Any]]:
    """The fixed sequences then ``random_scripts`` seeded random scripts."""
    out = [_vector(n, f, c) for n, f, c in FIXED]
    out += [random_vm_bo_script(seed, i) for i in range(random_scripts)]
    return out


def _c_state(st: dict[str, Any]) -> list[str]:
    bos = "; ".join(
        f"{b['bo']} kref={b['kref']} vas={b['vas']} {b['state']}"
        + (" evicted" if b["evicted"] else "")
        for b in st["vm_bos"]
    )
    gems = "; ".join(f"{n} refs={r}" + (" freed" if f else "") for n, r, f in st["gems"])
    layout = " ".join(f"{n}[{s},{e})@{o}" for n, s, e, o in st["layout"])
    lists = [" ".join(st[k]) for k in ("extobj", "evict", "deferred")]
    return [bos, *lists, gems, layout]


def c_result(result: Any) -> str:
    """A command's result in the C table: ``-`` (none), ``true`` / ``false`` (whether a put
    destroyed the VmBo or made it a zombie), a VmBo name, or VmBo names space-separated
    (``validate``, ``cleanup``: in the order they were handled)."""
    if result is None:
        return "-"
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, list):
        return " ".join(result)
    return str(result)


def c_rows(vecs: list[dict[str, Any]], c_str: Any) -> list[str]:
    """The rows of ``gpuvm_vm_bo_vectors[]`` for the vm_bo vectors of ``vecs``."""
    lines = []
    for v in vecs:
        flags = "|".join(v["flags"]) or "0"
        for c in v["commands"]:
            cells = [v["vector"], flags, c["cmd"], c.get("obj", ""), c_result(c["result"])]
            cells += _c_state(c["state"])
            strs = [c_str(x) for x in cells]
            nums = f"{c.get('addr', 0):#x}, {c.get('end', 0):#x}, {c.get('offset', 0):#x}"
            lines.append(f"\t{{ {', '.join(strs[:4])}, {nums}, {', '.join(strs[4:])} }},")
    return lines
