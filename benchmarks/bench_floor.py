"""The floor: how fast *any* Python model of a pageflip can run on this machine.

``python benchmarks/bench_floor.py`` runs the state changes one steady-state flip of
``bench_flips.py`` makes (one 1080p layer, a 3-buffer swapchain) written as flat Python:
no validation, no holder names, no event objects, no layers, just the dict, list and
``SortedList`` updates and the counter increments.  It is a calibration, not a model: a
faithful model does all of this plus its checks, so its flips/s is below this floor, and the
ratio ``model / floor`` says how much of the interpreter's speed the model's structure
costs, independently of how fast the machine is.

Per flip, ``gpuvm_eager``: one ioctl counted; the new framebuffer's buffer gets a VA (first
fit over the index), a VmBo (created, listed on the buffer, counted on VM and buffer), a
link, a map (counted per VM and device); the old one is unmapped (unmap and TLB counted),
removed, unlinked and its VmBo destroyed; framebuffer references move between planes; a
per-frame record is closed.  ``legacy_pre_6_17``: the same with VMAs that stay (pin counts
only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from sortedcontainers import SortedList

PAGE = 4096
FB_SIZE = 1920 * 1080 * 4  # one 1080p XRGB8888 buffer
WINDOW = (0x100000, 1 << 32)
NFIELDS = 12


class Buffer:
    __slots__ = ("holders", "size", "vm_bos")

    def __init__(self, size: int) -> None:
        self.size = size
        self.vm_bos: list[VmBo] = []
        self.holders: dict[object, int] = {"owner": 1}


class Va:
    __slots__ = ("addr", "mapped", "obj", "pins", "range", "vm_bo")

    def __init__(self, addr: int, size: int, obj: Buffer) -> None:
        self.addr = addr
        self.range = size
        self.obj = obj
        self.vm_bo: VmBo | None = None
        self.mapped = False
        self.pins = 0


class VmBo:
    __slots__ = ("holders", "obj", "vas", "vm")

    def __init__(self, vm: Vm, obj: Buffer) -> None:
        self.vm = vm
        self.obj = obj
        self.vas: dict[Va, None] = {}
        self.holders: dict[object, int] = {}


class Framebuffer:
    __slots__ = ("bo", "holders", "prepared")

    def __init__(self, bo: Buffer) -> None:
        self.bo = bo
        self.prepared = 0
        self.holders: dict[object, int] = {"file": 1}


class Vm:
    __slots__ = ("holders", "keys", "nodes")

    def __init__(self) -> None:
        self.keys: SortedList = SortedList()
        self.nodes: dict[int, Va] = {}
        self.holders: dict[object, int] = {"owner": 1}


class Floor:
    """One display VM, one plane, counters for the VM and the device, frame records."""

    def __init__(self, eager: bool) -> None:
        self.eager = eager
        self.vm = Vm()
        self.plane_fb: Framebuffer | None = None
        self.dev = [0] * NFIELDS
        self.acc = [0] * NFIELDS
        self.mark = list(self.dev)
        self.frames: list[tuple[int, ...]] = []

    def first_fit(self, size: int) -> int:
        vm = self.vm
        cand = WINDOW[0]
        for key in vm.keys:
            if cand + size <= key:
                return cand
            cand = max(cand, key + vm.nodes[key].range)
        return cand

    def count(self, a: int, b: int, c: int, addr: int, size: int) -> None:
        n = (addr + size + PAGE - 1) // PAGE - addr // PAGE
        acc, dev = self.acc, self.dev
        acc[a] += 1
        acc[b] += n
        acc[c] += size
        dev[a] += 1
        dev[b] += n
        dev[c] += size

    def vma_of(self, obj: Buffer) -> Va | None:
        for vm_bo in obj.vm_bos:
            if vm_bo.vm is self.vm:
                for va in vm_bo.vas:
                    return va
        return None

    def pin(self, obj: Buffer) -> None:
        vm = self.vm
        va = self.vma_of(obj)
        if va is None:
            size = -(-obj.size // PAGE) * PAGE
            va = Va(self.first_fit(size), size, obj)
            vm.keys.add(va.addr)
            vm.nodes[va.addr] = va
            vm.holders[va] = 1
            vm_bo = VmBo(vm, obj)
            vm_bo.holders["new"] = 1
            vm.holders[vm_bo] = 1
            obj.holders[vm_bo] = 1
            obj.vm_bos.append(vm_bo)
            vm_bo.holders[va] = 1
            va.vm_bo = vm_bo
            vm_bo.vas[va] = None
            del vm_bo.holders["new"]
            self.acc[9] += 1
            self.dev[9] += 1
        if not va.mapped:
            va.mapped = True
            self.count(0, 1, 2, va.addr, va.range)
        va.pins += 1

    def unpin(self, obj: Buffer) -> None:
        va = self.vma_of(obj)
        assert va is not None
        va.pins -= 1
        if not self.eager or va.pins:
            return
        vm = self.vm
        va.mapped = False
        self.count(3, 4, 5, va.addr, va.range)
        self.count(6, 7, 8, va.addr, va.range)
        self.acc[10] += 1
        self.dev[10] += 1
        vm.keys.remove(va.addr)
        del vm.nodes[va.addr]
        del vm.holders[va]
        vm_bo = va.vm_bo
        assert vm_bo is not None
        del vm_bo.vas[va]
        va.vm_bo = None
        del vm_bo.holders[va]
        if not vm_bo.holders:
            obj.vm_bos.remove(vm_bo)
            del vm.holders[vm_bo]
            del obj.holders[vm_bo]

    def flip(self, fb: Framebuffer) -> None:
        self.dev[11] += 1  # the ATOMIC ioctl
        if fb.prepared == 0:
            self.pin(fb.bo)
        fb.holders["plane"] = fb.holders.get("plane", 0) + 1
        fb.prepared += 1
        old, self.plane_fb = self.plane_fb, fb
        if old is not None:
            old.prepared -= 1
            if old.prepared == 0:
                self.unpin(old.bo)
            n = old.holders["plane"] - 1
            if n:
                old.holders["plane"] = n
            else:
                del old.holders["plane"]

    def frame_end(self) -> None:
        cur = list(self.dev)
        self.frames.append(tuple(x - y for x, y in zip(cur, self.mark, strict=True)))
        self.mark = cur


def floor_flips_per_s(policy: str, frames: int, repeat: int = 3) -> float:
    """Best flips/s of the floor loop for ``policy`` (eager or legacy behaviour)."""
    eager = policy != "legacy_pre_6_17"
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        floor = Floor(eager)
        fbs = [Framebuffer(Buffer(FB_SIZE)) for _ in range(3)]
        for i in range(frames):
            floor.flip(fbs[i % 3])
            floor.frame_end()
        best = min(best, time.perf_counter() - t0)
        steady = floor.frames[-1]
        assert (steady[0], steady[3]) == ((1, 1) if eager else (0, 0)), steady
    return frames / best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.frames <= 10 or args.repeat <= 0:
        ap.error("--frames must be > 10 and --repeat > 0")
    out = {
        p: round(floor_flips_per_s(p, args.frames, args.repeat))
        for p in ("gpuvm_eager", "legacy_pre_6_17")
    }
    if args.json:
        print(json.dumps(out))
    else:
        for p, v in out.items():
            print(f"floor {p:18} {v:>9,} flips/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
