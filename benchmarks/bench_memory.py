"""Memory of ``gpuvm study`` against the number of points: flat, not linear.

Run ``python benchmarks/bench_memory.py`` (``--sizes 1000,10000,100000`` by default;
``--workers N`` runs the sweeps on a local Dask cluster; ``--keep-rows`` also measures the
same sweep with every row held in a list, the way the CLI kept them before the digest).

Each size runs in a fresh Python process that calls the real CLI (``gpuvm study --spec ...
--out DIR --no-charts``, rows streamed to study.json / study.csv, the report drawn from the
bounded digest) and reports its peak RSS (``ru_maxrss``) and the tracemalloc peak of the
sweep.  The sweep is ``gpuvm_eager`` flipping its own swapchain (depth 2, 6 frames per run)
under 5 presets x 4 refresh rates (20 points per run), over 10 ``WxH`` resolutions and as
many seeds as the size needs (one run each): 10^5 points are 5,000 model runs in 40 report
settings (the digest details the first 24).  Few resolutions keep the timeline simulation
of each row (memoised per setting) from dominating the time; the memory is what is
measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESETS = ["msm-kms", "msm-thread", "default", "intel-tlb", "vtd"]
REFRESH = [60, 90, 120, 144]
POINTS_PER_RUN = len(PRESETS) * len(REFRESH)


def spec_text(points: int) -> str:
    """The TOML spec of a sweep of ``points`` points (a multiple of 20)."""
    runs = points // POINTS_PER_RUN
    nres = min(runs, 10)
    seeds = runs // nres
    assert nres * seeds * POINTS_PER_RUN == points, points
    res = [f"{1280 + 16 * i}x720" for i in range(nres)]
    return (
        "[study]\n"
        'policies = ["gpuvm_eager"]\n'
        f"presets = {json.dumps(PRESETS)}\n"
        f"resolutions = {json.dumps(res)}\n"
        f"refresh = {json.dumps(REFRESH)}\n"
        "depth = [2]\nframes = 6\n"
        'workloads = ["pageflip"]\nsources = ["swapchain"]\npatterns = ["own"]\n'
        f"seeds = {json.dumps(list(range(seeds)))}\n"
    )


def child(spec: str, out: str, workers: int, keep_rows: bool) -> dict[str, object]:
    """One measurement, in this (fresh) process."""
    import resource
    import tracemalloc

    from gpuvm.study.cli import main

    args = ["study", "--spec", spec, "--out", out, "--no-charts", "--no-progress"]
    if workers:
        args += ["--workers", str(workers)]
    kept: list[object] = []
    if keep_rows:  # the pre-digest behaviour: every row held until the end
        import gpuvm.study.sweep as sweep

        real = sweep.RowSink.write

        def write(self: sweep.RowSink, row: object) -> None:
            kept.append(row)
            real(self, row)  # type: ignore[arg-type]

        sweep.RowSink.write = write  # type: ignore[method-assign]
    tracemalloc.start()
    t0 = time.perf_counter()
    with open(os.devnull, "w") as null:
        stdout, sys.stdout = sys.stdout, null
        try:
            code = main(args)
        finally:
            sys.stdout = stdout
    wall = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    with Path(out, "study.csv").open(encoding="utf-8") as f:
        rows = sum(1 for _ in f) - 1
    return {
        "code": code,
        "rows": rows,
        "seconds": round(wall, 1),
        "tracemalloc_peak_mib": round(peak / 2**20, 2),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def measure(points: int, workers: int, keep_rows: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp, "study.toml")
        spec.write_text(spec_text(points), encoding="utf-8")
        cmd = [sys.executable, __file__, "--child", str(spec), str(Path(tmp, "out")),
               str(workers), "1" if keep_rows else "0"]  # fmt: skip
        # A Dask cluster's shutdown can log errors and set the exit status after the
        # measurement is printed: the last JSON line is the result.
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
        lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
        if not lines:
            raise RuntimeError(f"measurement of {points} points failed:\n{done.stderr[-2000:]}")
        result: dict[str, object] = json.loads(lines[-1])
    result["points"] = points
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        spec, out, nworkers, held = argv[1:5]
        print(json.dumps(child(spec, out, int(nworkers), held == "1")))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--workers", type=int, default=0, help="Dask workers (0: in-process)")
    ap.add_argument("--keep-rows", action="store_true", help="also measure with rows held")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = [False, True] if args.keep_rows else [False]
    print(f"load average {os.getloadavg()}, Python {platform.python_version()}", flush=True)
    print("points   rows held  seconds  tracemalloc peak MiB  max RSS MiB", flush=True)
    for keep in modes:
        for n in sizes:
            r = measure(n, args.workers, keep)
            if r["code"] != 0 or r["rows"] != n:
                print(f"sweep of {n} points failed: {r}", file=sys.stderr)
                return 1
            print(
                f"{n:>7}  {'yes' if keep else 'no ':>9}  {r['seconds']:>7}  "
                f"{r['tracemalloc_peak_mib']:>20}  {r['max_rss_mib']:>11}",
                flush=True,
            )
    print(f"load average {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
