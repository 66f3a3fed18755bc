"""Study sweep throughput: points per second in-process and on a local Dask cluster.

Run ``python benchmarks/bench_sweep.py`` (``--workers N``, default 2; ``--frames N``,
default 120; ``--batch N`` runs per Dask task, default 4).  The sweep is the compositor
flipping its own swapchain under every policy x preset x resolution x refresh x layers x
swapchain depth: 6 x 5 x 3 x 2 x 4 x 3 = 2,160 points (rows) from 216 model runs of
``--frames`` frames each (presets and refresh rates price a run's counts without rerunning
it).  The same sweep runs once with the in-process executor and once on a
``dask.distributed`` LocalCluster of ``--workers`` worker processes (cluster start-up and a
warm-up sweep are timed separately and not counted); the rows of both are compared and
must be identical.
It prints points/s for both and the speed-up (goal on a 2-core machine: >= 1.7x), and the
speed-up plain worker processes get on the machine at that moment (other load caps both).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from gpuvm.study.spec import StudySpec
from gpuvm.study.sweep import DaskExecutor, Executor, Serial, iter_rows


def sweep_spec(frames: int) -> StudySpec:
    """The benchmark's sweep (see the module docstring)."""
    return StudySpec.default().override(
        resolutions=["1080p", "1440p", "4k"],
        refresh=[60.0, 144.0],
        layers=[1, 2, 3, 4],
        depth=[2, 3, 4],
        frames=[frames],
        workloads=["pageflip"],
        sources=["swapchain"],
        patterns=["own"],
    )


def timed(spec: StudySpec, executor: Executor, batch: int) -> tuple[float, list[dict[str, object]]]:
    t0 = time.perf_counter()
    rows = list(iter_rows(spec.runs(), spec.preset_table, executor=executor, batch=batch))
    return time.perf_counter() - t0, rows


def _spin(n: int) -> float:
    t0 = time.perf_counter()
    x = 0
    for i in range(n):
        x += i
    return time.perf_counter() - t0


def parallel_ceiling(workers: int, n: int = 5_000_000) -> float:
    """The speed-up ``workers`` processes get on this machine right now for pure-Python
    work with no communication (a shared machine's other load caps it): the bound the
    Dask figure is to be read against."""
    import multiprocessing as mp

    t0 = time.perf_counter()
    for _ in range(workers):
        _spin(n)
    serial = time.perf_counter() - t0
    with mp.get_context("spawn").Pool(workers) as pool:
        pool.map(_spin, [0] * workers)  # start the processes before timing
        t0 = time.perf_counter()
        pool.map(_spin, [n] * workers)
        parallel = time.perf_counter() - t0
    return serial / parallel


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = ap.parse_args(argv)
    spec = sweep_spec(args.frames)
    runs, points = spec.count()
    serial_s, serial_rows = timed(spec, Serial(), args.batch)
    t0 = time.perf_counter()
    dask = DaskExecutor(workers=args.workers)
    # Warm the workers (imports, first runs) with a small sweep: start-up, not throughput.
    warm = sweep_spec(args.frames).override(layers=[1], depth=[3], resolutions=["1080p"])
    timed(warm, dask, 1)
    startup_s = time.perf_counter() - t0
    try:
        dask_s, dask_rows = timed(spec, dask, args.batch)
    finally:
        dask.close()
    ceiling = parallel_ceiling(args.workers)
    if dask_rows != serial_rows:
        print("rows differ between the executors", file=sys.stderr)
        return 1
    out = {
        "points": points,
        "runs": runs,
        "frames": args.frames,
        "workers": args.workers,
        "batch": args.batch,
        "serial_s": round(serial_s, 2),
        "serial_points_per_s": round(points / serial_s, 1),
        "dask_startup_s": round(startup_s, 2),
        "dask_s": round(dask_s, 2),
        "dask_points_per_s": round(points / dask_s, 1),
        "speedup": round(serial_s / dask_s, 2),
        "process_ceiling": round(ceiling, 2),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{points} points ({runs} runs x presets x refresh rates, {args.frames} frames)")
        print(f"in-process      : {serial_s:7.2f} s  {out['serial_points_per_s']:8.1f} points/s")
        print(
            f"dask {args.workers} workers  : {dask_s:7.2f} s  {out['dask_points_per_s']:8.1f}"
            f" points/s  (cluster start + warm-up {startup_s:.1f} s, not counted)"
        )
        print(f"speed-up        : {out['speedup']:.2f}x   (load average {out['loadavg']})")
        print(
            f"ceiling         : {ceiling:.2f}x   ({args.workers} plain processes of pure-Python"
            " work on this machine now)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
