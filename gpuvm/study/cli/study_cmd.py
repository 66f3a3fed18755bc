"""``gpuvm study``: the design study (the library's main job)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpuvm.study.cli.common import (
    ProgressBar,
    SubParsers,
    UsageError,
    _add_common_model_options,
    _chosen_presets,
    _formatter,
    _policies,
    _refresh,
    _resolutions,
    _wrap,
    json_parent,
)

# --- study ---------------------------------------------------------------------------------


STUDY_EPILOG = """\
examples:
  gpuvm study                              # all policies x workloads x presets -> ./report
  gpuvm study --out /tmp/r --frames 60     # faster, elsewhere
  gpuvm study --preset msm-thread,msm-kms --refresh 60 --refresh 144
  gpuvm study --resolution 1080p,4k --layers 2
  gpuvm study --json > rows.json           # rows on stdout, no files unless --out

The report (report.md) starts with the msm question: a 1080p compositor flipping its own
swapchain, maps / unmaps / TLB invalidations per flip and ms (% of the frame) per preset.
Then per-flip counts for every workload, a cost table per preset, heatmaps and lifetime
problems found at teardown.  study.json holds one row per policy x workload x preset x
refresh rate.  Charts need matplotlib (pip install ".[report]")."""


def add_study(sub: SubParsers) -> None:
    p = sub.add_parser(
        "study",
        parents=[json_parent()],
        formatter_class=_formatter,
        help="the design study: every policy x workload x preset -> report",
        description=_wrap(
            "Run every workload (pageflips from a swapchain, a same-device client or a "
            "foreign dma-buf with each compositor's import pattern; GPU re-imports) under "
            "every teardown policy, once each, and price the steady-state counts under "
            "every cost preset.  Writes report.md, PNG charts and study.json."
        ),
        epilog=STUDY_EPILOG,
    )
    p.add_argument("--out", metavar="DIR", help="output directory (default ./report)")
    _add_common_model_options(p, frames_default=120)
    p.add_argument(
        "--resolution",
        action="append",
        metavar="NAME",
        help="1080p, 1440p or 4k (repeatable; default 1080p)",
    )
    p.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: on a terminal, after 1 s)",
    )
    p.set_defaults(func=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:
    from gpuvm.study.report import write_report
    from gpuvm.study.runner import default_workloads, dumps_rows, run_study

    # Validate everything before running or writing anything.
    policies = _policies(args)
    presets = _chosen_presets(args, None)
    rates = _refresh(args)
    specs = default_workloads(
        args.frames,
        resolutions=_resolutions(args),
        layers=args.layers,
        swapchain_depth=args.depth,
    )
    out = Path(args.out) if args.out is not None else (None if args.json else Path("report"))
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} exists and is not a directory")
    bar = ProgressBar(force=args.progress)
    try:
        study = run_study(
            policies=policies, presets=presets, workloads=specs, refresh_rates=rates, progress=bar
        )
    finally:
        bar.close()
    if args.json:
        sys.stdout.write(dumps_rows(study.rows()))
    if out is not None:
        files = write_report(study, out, charts=not args.no_charts)
        log = sys.stderr if args.json else sys.stdout
        print(f"wrote {files.markdown}, {files.json}", file=log)
        for c in files.charts:
            print(f"wrote {c}", file=log)
        if files.charts_skipped is not None and not args.no_charts:
            print(f"charts skipped: {files.charts_skipped}", file=log)
    return 0


# --- flip ------------------------------------------------------------------------------------
