"""Throughput of the GPUVM core's hot paths, against a naive split/merge on ``intervaltree``.

Run ``python benchmarks/bench_vm.py`` (``--quick`` for a smoke run; ``--compare`` for the
gpuvm rows under the pure and the compiled build side by side, see ``builds.py``).  For
each size N of the existing layout (1e3, 1e4, 1e5 VAs) it measures, in operations per
second:

* ``sm_map+apply``: ``vm.sm_map_ops(MapRequest)`` then ``vm.apply(ops)``, with requests
  that overlap 0 to 2 existing VAs (the layout is VAs of 16 units every 32 units; a
  request starts anywhere and spans 4..40 units);
* ``sm_unmap+apply``: ``vm.sm_unmap_ops`` then ``vm.apply`` over the same kind of ranges;
* ``find_first``: ``vm.find_first(addr, range)`` lookups (range 1..32);

and the same three on the peer baseline: an ``intervaltree.IntervalTree`` holding
``(obj, offset)`` data, where a map computes the same op list (unmaps, remaps with
pieces and offsets, keep flags, the map) from ``tree.overlap`` and applies it with
``remove``/``add``, and a lookup is the lowest-starting interval of ``tree.overlap``.

Every measurement replays the same seeded request sequence on both implementations; a
round is at most N/4 requests (so the layout stays close to N VAs) and the layout is
rebuilt, untimed, between rounds.  The best of ``--repeat`` runs is reported.  Timing
uses ``time.perf_counter``; no observers are subscribed, so the core emits no events.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from intervaltree import Interval, IntervalTree

from gpuvm import GemObject, GpuVm, MapRequest

SLOT = 32
VA_RANGE = 16
N_OBJS = 8
SIZES = (1_000, 10_000, 100_000)
OPS_PER_MEASUREMENT = 4_000

Request = tuple[int, int, int, int]  # addr, range, object index, offset


def requests(n_vas: int, count: int, seed: int) -> list[Request]:
    """Requests over the layout's span: start anywhere, 4..40 units long, so each meets
    0, 1 or 2 of the initial VAs."""
    rng = random.Random(seed)
    span = n_vas * SLOT
    out = []
    for _ in range(count):
        addr = rng.randrange(0, span - 48)
        out.append((addr, rng.randint(4, 40), rng.randrange(N_OBJS), rng.randrange(1 << 20)))
    return out


def lookups(n_vas: int, count: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    span = n_vas * SLOT
    return [(rng.randrange(0, span), rng.randint(1, 32)) for _ in range(count)]


# --- the model ------------------------------------------------------------------------


class CoreBench:
    """The GPUVM core: a VM with N linked VAs of ``N_OBJS`` buffers."""

    name = "gpuvm"

    def __init__(self, n_vas: int) -> None:
        self.vm = GpuVm(0, 1 << 48)
        self.objs = [GemObject(1 << 40, name=f"bo{i}") for i in range(N_OBJS)]
        for i in range(n_vas):
            self.vm.map(i * SLOT, VA_RANGE, self.objs[i % N_OBJS], i * SLOT)

    def map(self, reqs: list[Request]) -> None:
        vm, objs = self.vm, self.objs
        sm_map_ops, apply = vm.sm_map_ops, vm.apply
        for addr, rng, o, off in reqs:
            apply(sm_map_ops(MapRequest(addr, rng, objs[o], off)))

    def unmap(self, reqs: list[Request]) -> None:
        vm = self.vm
        sm_unmap_ops, apply = vm.sm_unmap_ops, vm.apply
        for addr, rng, _o, _off in reqs:
            apply(sm_unmap_ops(addr, rng))

    def find(self, queries: list[tuple[int, int]]) -> int:
        find_first = self.vm.find_first
        hits = 0
        for addr, rng in queries:
            if find_first(addr, rng) is not None:
                hits += 1
        return hits

    def count(self) -> int:
        return len(self.vm.index)


# --- the peer baseline ------------------------------------------------------------------


class TreeBench:
    """Naive split/merge on ``intervaltree``: the same ops, computed from ``overlap`` and
    applied with ``remove``/``add``; data is ``(obj, offset)``."""

    name = "intervaltree"

    def __init__(self, n_vas: int) -> None:
        self.objs = [object() for _ in range(N_OBJS)]
        self.tree = IntervalTree(
            Interval(i * SLOT, i * SLOT + VA_RANGE, (self.objs[i % N_OBJS], i * SLOT))
            for i in range(n_vas)
        )

    def _ops(self, addr: int, end: int, obj: Any, off: int | None) -> list[tuple[Any, ...]]:
        ops: list[tuple[Any, ...]] = []
        for iv in sorted(self.tree.overlap(addr, end)):
            o, f = iv.data
            keep = off is not None and o is obj and (f - iv.begin) == (off - addr)
            prev = Interval(iv.begin, addr, (o, f)) if iv.begin < addr else None
            nxt = Interval(end, iv.end, (o, f + end - iv.begin)) if iv.end > end else None
            if prev is None and nxt is None:
                ops.append(("UNMAP", iv, keep))
            else:
                ops.append(("REMAP", prev, nxt, iv, keep))
        if off is not None:
            ops.append(("MAP", Interval(addr, end, (obj, off))))
        return ops

    def _apply(self, ops: list[tuple[Any, ...]]) -> None:
        tree = self.tree
        for op in ops:
            if op[0] == "UNMAP":
                tree.remove(op[1])
            elif op[0] == "REMAP":
                tree.remove(op[3])
                if op[1] is not None:
                    tree.add(op[1])
                if op[2] is not None:
                    tree.add(op[2])
            else:
                tree.add(op[1])

    def map(self, reqs: list[Request]) -> None:
        objs = self.objs
        for addr, rng, o, off in reqs:
            self._apply(self._ops(addr, addr + rng, objs[o], off))

    def unmap(self, reqs: list[Request]) -> None:
        for addr, rng, _o, _off in reqs:
            self._apply(self._ops(addr, addr + rng, None, None))

    def find(self, queries: list[tuple[int, int]]) -> int:
        overlap = self.tree.overlap
        hits = 0
        for addr, rng in queries:
            found = overlap(addr, addr + rng)
            if found and min(found) is not None:
                hits += 1
        return hits

    def count(self) -> int:
        return len(self.tree)


# --- measurement -------------------------------------------------------------------------

Impl = Callable[[int], Any]


def measure(make: Impl, n: int, workload: str, total: int, seed: int) -> float:
    """Operations per second of ``workload`` on a layout of ``n`` VAs."""
    per_round = max(1, min(total, n // 4))
    done = 0
    elapsed = 0.0
    rnd = 0
    while done < total:
        batch = min(per_round, total - done)
        impl = make(n)
        if workload == "find_first":
            qs = lookups(n, batch, seed + rnd)
            t0 = time.perf_counter()
            impl.find(qs)
            elapsed += time.perf_counter() - t0
        else:
            reqs = requests(n, batch, seed + rnd)
            fn = impl.map if workload == "sm_map+apply" else impl.unmap
            t0 = time.perf_counter()
            fn(reqs)
            elapsed += time.perf_counter() - t0
        done += batch
        rnd += 1
    return done / elapsed


def check_same_result(n: int, seed: int) -> None:
    """Both implementations must end with the same layout after the same requests."""
    core, tree = CoreBench(n), TreeBench(n)
    reqs = requests(n, min(200, n // 4), seed)
    core.map(reqs)
    tree.map(reqs)
    core.unmap(reqs[::2])
    tree.unmap(reqs[::2])
    names = {id(o): i for i, o in enumerate(core.objs)}
    tnames = {id(o): i for i, o in enumerate(tree.objs)}
    a = [(v.addr, v.range, names[id(v.obj)], v.offset) for v in core.vm.vas]
    b = [
        (iv.begin, iv.end - iv.begin, tnames[id(iv.data[0])], iv.data[1])
        for iv in sorted(tree.tree)
    ]
    if a != b:
        raise SystemExit("bench: gpuvm and intervaltree layouts differ; the baseline is wrong")
    core.vm.check_invariants()


def _gpuvm_only(args: argparse.Namespace) -> dict[str, float]:
    """The gpuvm rows alone (a ``--compare`` child): ``"workload|N" -> ops/s``, best of
    ``--repeat``."""
    out: dict[str, float] = {}
    for n in args.sizes:
        for w in WORKLOADS:
            out[f"{w}|{n}"] = max(
                measure(CoreBench, n, w, args.ops, args.seed) for _ in range(args.repeat)
            )
    return out


def compare(args: argparse.Namespace, argv: list[str]) -> int:
    """Pure and compiled builds side by side, each in its own interpreter, runs
    interleaved (pure, compiled, pure, ...; best of ``--repeat`` each), plus the ratio of
    the compiled sm_map+apply to the C figure."""
    from builds import C_REFERENCE, compiled_site, run_child

    compiled_site()  # build first, outside the timed runs
    child = ["--sizes", *map(str, args.sizes), "--ops", str(args.ops), "--seed", str(args.seed)]
    best: dict[str, dict[str, float]] = {"pure": {}, "compiled": {}}
    load0 = os.getloadavg()[0]
    for _ in range(args.repeat):
        for build in best:
            for key, ops in run_child("bench_vm.py", build, [*child, "--repeat", "1"]).items():
                best[build][key] = max(best[build].get(key, 0.0), ops)
    load1 = os.getloadavg()[0]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"Command: `python benchmarks/bench_vm.py {' '.join(argv)}`".rstrip())
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; {now}; 1-min load average {load0:.1f} at start, "
        f"{load1:.1f} at end; best of {args.repeat} interleaved runs per build"
    )
    print()
    print(
        "| workload | existing VAs | pure ops/s | compiled ops/s | compiled / pure "
        "| C ops/s | C / pure | C / compiled |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for w in WORKLOADS:
        for n in args.sizes:
            key = f"{w}|{n}"
            a, b = best["pure"][key], best["compiled"][key]
            c = C_REFERENCE.get(key)
            vs_c = f"{c:,} | {c / a:.1f}x | {c / b:.1f}x" if c else "- | - | -"
            print(f"| {w} | {n:,} | {a:,.0f} | {b:,.0f} | {b / a:.2f}x | {vs_c} |")
    hi = max(args.sizes)
    if hi == 100_000:
        c = C_REFERENCE[f"sm_map+apply|{hi}"]
        got = best["compiled"][f"sm_map+apply|{hi}"]
        print()
        print(
            f"- issue 18's goal: compiled sm_map+apply at 100,000 VAs within 4x of the C "
            f"drm_gpuvm.c algorithm ({c:,}/s, measured on this machine class, see builds.py), "
            f"i.e. >= {c // 4:,}/s: {got:,.0f}/s, {c / got:.1f}x slower: "
            f"{'met' if got * 4 >= c else 'not met'}"
        )
        print(
            "- C figures are recorded, not re-measured by this script; on other hardware "
            "compare the ratios"
        )
    return 0


WORKLOADS = ("sm_map+apply", "sm_unmap+apply", "find_first")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--ops", type=int, default=OPS_PER_MEASUREMENT, help="requests per measurement")
    p.add_argument("--repeat", type=int, default=5, help="runs per measurement (best is kept)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="sizes 1e3 and 1e4, 500 ops, 1 run")
    p.add_argument(
        "--compare",
        action="store_true",
        help="gpuvm only, pure and compiled builds side by side (benchmarks/builds.py), "
        "with the ratio to the C figure",
    )
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # a --compare child
    p.add_argument("--child-build", choices=("pure", "compiled"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.ops, args.repeat = [1_000, 10_000], 500, 1
    if args.child_build is not None:
        from builds import check_build

        check_build(args.child_build)
        check_same_result(min(args.sizes), args.seed)
        print(json.dumps(_gpuvm_only(args)))
        return 0
    if args.compare:
        return compare(args, list(argv if argv is not None else sys.argv[1:]))
    check_same_result(min(args.sizes), args.seed)
    workloads = WORKLOADS
    impls: list[tuple[str, Impl]] = [("gpuvm", CoreBench), ("intervaltree", TreeBench)]
    results: dict[tuple[str, str, int], float] = {}
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for n in args.sizes:
        for w in workloads:
            runs: dict[str, list[float]] = {name: [] for name, _ in impls}
            for _ in range(args.repeat):  # interleaved, so load spikes hit both alike
                for name, make in impls:
                    runs[name].append(measure(make, n, w, args.ops, args.seed))
            for name, _ in impls:
                rs = runs[name]
                results[(name, w, n)] = max(rs)
                print(
                    f"  {w:15s} N={n:>7,} {name:12s} {max(rs):>10,.0f} ops/s "
                    f"(runs: {', '.join(f'{r:,.0f}' for r in rs)}; "
                    f"median {statistics.median(rs):,.0f})",
                    file=sys.stderr,
                )
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"Command: `python benchmarks/bench_vm.py {' '.join(argv or sys.argv[1:])}`".rstrip())
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}; {now}; "
        f"1-min load average {load0:.1f} at start, {load1:.1f} at end"
    )
    print()
    print("| workload | existing VAs | gpuvm ops/s | intervaltree ops/s | gpuvm / intervaltree |")
    print("|---|---:|---:|---:|---:|")
    for w in workloads:
        for n in args.sizes:
            a, b = results[("gpuvm", w, n)], results[("intervaltree", w, n)]
            print(f"| {w} | {n:,} | {a:,.0f} | {b:,.0f} | {a / b:.2f}x |")
    lo, hi = min(args.sizes), max(args.sizes)
    print()
    m_hi = results[("gpuvm", "sm_map+apply", hi)]
    ratio = m_hi / results[("intervaltree", "sm_map+apply", hi)]
    print(f"- sm_map+apply at {hi:,} VAs: {ratio:.2f}x the intervaltree baseline (target >= 3x)")
    for w in workloads:
        s = results[("gpuvm", w, hi)] / results[("gpuvm", w, lo)]
        print(f"- {w}: throughput at {hi:,} VAs is {s:.2f} of that at {lo:,} (target >= 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
