"""gpuvm vectors: deterministic conformance vectors agreeing with the documented cases."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gpuvm.core.gem import GemObject
from gpuvm.core.ops import MapRequest
from gpuvm.core.refs import CALLER
from gpuvm.core.vm import GpuVm, GpuVmFlags
from gpuvm.core.vmbo import VmBo
from gpuvm.study.cases import describe_op
from gpuvm.study.cli import main
from gpuvm.study.vectors import to_c, to_jsonl, vectors
from gpuvm.study.vectors_vmbo import FIXED, vm_bo_vectors


def test_seed_1_is_reproducible_byte_for_byte(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["vectors", "--seed", "1", "--out", str(a)]) == 0
    assert main(["vectors", "--seed", "1", "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    c = tmp_path / "c.h"
    assert main(["vectors", "--seed", "1", "--format", "c", "--out", str(c)]) == 0
    assert c.read_text() == to_c(vectors(1), 1)
    assert to_jsonl(vectors(2)) != a.read_text()
    # The vm_bo vectors are part of both outputs, and their random scripts follow the seed.
    assert '"kind":"vm_bo"' in a.read_text() and "gpuvm_vm_bo_vectors[] = {" in c.read_text()
    assert to_jsonl(vm_bo_vectors(1)) == to_jsonl(vm_bo_vectors(1))
    assert to_jsonl(vm_bo_vectors(1)[len(FIXED) :]) != to_jsonl(vm_bo_vectors(2)[len(FIXED) :])
    d = tmp_path / "d.jsonl"
    assert main(["vectors", "--seed", "1", "--vm-bo-scripts", "3", "--out", str(d)]) == 0
    rows = [json.loads(line) for line in d.read_text().splitlines()]
    assert sum(r["kind"] == "vm_bo" for r in rows) == len(FIXED) + 3


def test_documented_case_5_is_exported_as_documented() -> None:
    row = json.loads(to_jsonl(vectors(1)).splitlines()[4])
    assert row["vector"] == "doc-case-5"
    assert row["commands"][-1]["ops"] == ["REMAP(next=a[1,2)@N+1)", "MAP"]
    assert row["commands"][-1]["layout"] == [["b", 0, 1, 0x100], ["a", 1, 2, 0x101]]


def test_random_scripts_replay_to_their_recorded_ops_and_layouts() -> None:
    for v in [v for v in vectors(7, 6) if v["kind"] == "split-merge"][16:]:
        vm = GpuVm(0, v["va_range"])
        objs = {n: GemObject(1 << 12, name=n, bus=vm.bus) for n in "abcd"}
        names = {id(o): n for n, o in objs.items()}
        for c in v["commands"]:
            if c["cmd"] == "map":
                req = MapRequest(c["addr"], c["end"] - c["addr"], objs[c["obj"]], c["offset"])
                ops = vm.sm_map_ops(req)
            else:
                ops = vm.sm_unmap_ops(c["addr"], c["end"] - c["addr"])
            assert [describe_op(op, names) for op in ops] == c["ops"]
            vm.apply(ops)
            assert [[names[id(x.obj)], x.addr, x.end, x.offset] for x in vm.vas] == c["layout"]


class _Replay:
    """Replays a vm_bo vector on a fresh model through the core API, independently of the
    exporter, and describes the state in the JSON shape of docs/vectors.md."""

    def __init__(self, v: dict[str, Any]) -> None:
        flags = GpuVmFlags.NONE
        for f in v["flags"]:
            flags |= GpuVmFlags[f]
        self.vm = GpuVm(0, v["va_range"], flags=flags)
        self.objs = {
            n: GemObject(4096, name=n) if ext else GemObject(4096, name=n, resv=self.vm.resv)
            for n, ext in v["objects"]
        }
        self.bos: list[VmBo] = []

    def name(self, vb: VmBo) -> str:
        n = [b for b in self.bos if b.obj is vb.obj].index(vb) + 1
        return f"{vb.obj.name}{n}"

    def listed(self, obj: str) -> VmBo:
        vb = self.objs[obj].vm_bo_for(self.vm)
        assert vb is not None
        return vb

    def run(self, c: dict[str, Any]) -> Any:
        vm, cmd = self.vm, c["cmd"]
        out: Any = None
        if cmd == "map":
            vm.map(c["addr"], c["end"] - c["addr"], self.objs[c["obj"]], c["offset"])
        elif cmd == "unmap":
            vm.unmap(c["addr"], c["end"] - c["addr"])
        elif cmd in ("obtain", "find"):
            fn = vm.bo_obtain if cmd == "obtain" else vm.bo_find
            got = fn(self.objs[c["obj"]], CALLER)
            out = None if cmd == "obtain" or got is None else got
        elif cmd == "put":
            out = self.listed(c["obj"]).put(CALLER)
        elif cmd == "put_deferred":
            out = self.listed(c["obj"]).put_deferred(CALLER)
        elif cmd == "unlink_defer":
            [va] = [x for x in vm.vas if (x.addr, x.end) == (c["addr"], c["end"])]
            with vm.fence_signalling():
                vm.remove(va)
                vm.unlink_defer(va)
        elif cmd in ("evict", "unevict"):
            self.listed(c["obj"]).evict(cmd == "evict")
        elif cmd == "validate":
            seen: list[VmBo] = []
            assert vm.validate(lambda b: (b.evict(False), seen.append(b))[1]) == 0
            out = seen
        elif cmd == "prepare_objects":
            vm.prepare_objects()
        elif cmd == "cleanup":
            out = vm.bo_deferred_cleanup()
        else:
            assert cmd == "gem_put", cmd
            self.objs[c["obj"]].put()
        self.bos += [b for b in vm.vm_bos if b not in self.bos]
        if isinstance(out, VmBo):
            return self.name(out)
        return [self.name(b) for b in out] if isinstance(out, list) else out

    def state(self) -> dict[str, Any]:
        def state_of(b: VmBo) -> str:
            return "freed" if b.freed else "zombie" if b.zombie else "listed"

        vm = self.vm
        return {
            "vm_bos": [
                {"bo": self.name(b), "kref": b.kref, "vas": len(b.vas), "state": state_of(b)}
                | {"evicted": b.evicted}
                for b in self.bos
            ],
            "extobj": [self.name(b) for b in vm.extobj],
            "evict": [self.name(b) for b in vm.evict],
            "deferred": [self.name(b) for b in vm.bo_defer],
            "gems": [[n, o.refcount, o.freed] for n, o in self.objs.items()],
            "layout": [[x.obj.name, x.addr, x.end, x.offset] for x in vm.vas if x.obj],
        }


@pytest.mark.parametrize("seed", [1, 5])
def test_every_vm_bo_vector_replays_to_its_recorded_results_and_states(seed: int) -> None:
    rows = [json.loads(line) for line in to_jsonl(vectors(seed, 0, 12)).splitlines()]
    vm_bo = [r for r in rows if r["kind"] == "vm_bo"]
    assert len(vm_bo) == len(FIXED) + 12
    for v in vm_bo:
        r = _Replay(v)
        for i, c in enumerate(v["commands"]):
            assert r.run(c) == c["result"], (v["vector"], i, c["cmd"])
            assert r.state() == c["state"], (v["vector"], i, c["cmd"])
            r.vm.check_invariants()


def _fixed(name: str) -> list[dict[str, Any]]:
    [v] = [v for v in vm_bo_vectors(1, 0) if v["vector"] == name]
    cmds: list[dict[str, Any]] = v["commands"]
    return cmds


def test_fixed_vm_bo_vectors_record_the_kernel_behaviour() -> None:
    # A caller's obtain / find references and a VA's link reference count alike.
    cmds = _fixed("vm-bo-obtain-find-put")
    assert [c["result"] for c in cmds[:7]] == [None, None, None, "a1", False, False, True]
    assert cmds[6]["state"]["vm_bos"][0]["state"] == "freed"
    assert cmds[8]["state"]["vm_bos"][1]["bo"] == "a2"  # obtain after the free: a new VmBo
    # A REMAP's two pieces each link: 1 + 2 - 1 = 2 VAs after the hole.
    link = _fixed("vm-bo-link-unlink")
    assert [b["kref"] for b in link[5]["state"]["vm_bos"]] == [4]
    # Only buffers with their own reservation are extobjs, listed in the order mapped;
    # the last VmBo keeps its buffer alive after the handle is gone.
    ext = _fixed("vm-bo-extobj")
    assert [c["state"]["extobj"] for c in ext[:5]] == [
        ["b1"],
        ["b1"],
        ["b1", "c1"],
        ["c1"],
        ["c1", "b2"],
    ]
    assert ext[5]["state"]["gems"][1] == ["b", 1, False]
    assert ext[6]["state"]["gems"][1] == ["b", 0, True]
    # The evict list keeps eviction order; validate walks it in that order and empties it;
    # a destroyed VmBo leaves it.
    ev = _fixed("vm-bo-evict-validate")
    assert ev[5]["state"]["evict"] == ["c1", "a1", "b1"] and ev[6]["state"]["evict"] == ["c1", "b1"]
    assert ev[7]["result"] == ["c1", "b1"] and ev[7]["state"]["evict"] == []
    assert ev[9]["state"]["evict"] == [] and ev[9]["state"]["vm_bos"][1]["state"] == "freed"
    # IMMEDIATE_MODE: the last deferred put makes a zombie, off the extobj / evict lists;
    # cleanup frees the deferred llist newest first.
    de = _fixed("vm-bo-deferred")
    assert de[4]["state"]["vm_bos"][0]["state"] == "zombie" and de[4]["state"]["extobj"] == ["c1"]
    assert de[6]["result"] is True and de[6]["state"]["deferred"] == ["b1", "c1"]
    assert de[8]["result"] == ["c1", "b1"] and de[9]["result"] == []
    # RESV_PROTECTED: an evicted extobj is listed by prepare_objects, zombies stay on the
    # lists (validate skips them) until cleanup.
    rp = _fixed("vm-bo-deferred-resv-protected")
    assert rp[2]["state"]["evict"] == [] and rp[4]["state"]["evict"] == ["a1", "b1"]
    assert rp[6]["state"]["extobj"] == ["b1"] and rp[7]["result"] == []
    assert rp[8]["state"]["evict"] == [] and rp[8]["state"]["extobj"] == []


def test_c_table_has_one_vm_bo_row_per_command_with_fourteen_fields() -> None:
    vecs = vectors(1, 0, 2)
    text = to_c(vecs, 1)
    table = text.split("gpuvm_vm_bo_vectors[] = {\n", 1)[1].split("\n};", 1)[0]
    rows = table.splitlines()
    want = sum(len(v["commands"]) for v in vecs if v["kind"] == "vm_bo")
    assert len(rows) == want
    first = rows[0]
    assert first.startswith('\t{ "vm-bo-obtain-find-put", "0", "find", "a", 0x0, 0x0, 0x0, "-",')
    row = re.compile(r'\t\{ ("[^"\\]*", ){4}(0x[0-9a-f]+, ){3}("[^"\\]*", ){6}"[^"\\]*" \},')
    assert [r for r in rows if not row.fullmatch(r)] == []
    assert '"c1 b1", "b1 kref=0 vas=0 freed evicted; c1 kref=0 vas=0 freed' in table
