"""``gpuvm flip``: one workload under each policy, as a table."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gpuvm.observe.costs import (
    resolution,
)
from gpuvm.study.cli.common import (
    ProgressBar,
    SubParsers,
    _add_common_model_options,
    _chosen_presets,
    _fmt,
    _formatter,
    _policies,
    _print_table,
    _refresh,
    _wrap,
    json_parent,
)

FLIP_EPILOG = """\
examples:
  gpuvm flip                                   # own swapchain, 1080p, every policy
  gpuvm flip --source foreign --pattern wlroots --policy gpuvm_vma_ref
  gpuvm flip --resolution 4k --refresh 144 --preset msm-kms
  gpuvm flip --workload reimport --source foreign --pattern close_each_frame --consumer vm_bind
  gpuvm flip --json

pageflip sources: swapchain (pattern own), client, foreign; patterns for client and
foreign: weston (keeps its handle), wlroots (closes it after ADDFB2), android (slot cache),
recreate (new framebuffer every frame).  reimport sources: same_device, foreign; patterns
keep_handle, close_each_frame; consumers legacy, vm_bind."""


def add_flip(sub: SubParsers) -> None:
    p = sub.add_parser(
        "flip",
        parents=[json_parent()],
        formatter_class=_formatter,
        help="one workload under each policy, as a table",
        description=_wrap(
            "Run one workload under each teardown policy and print maps, unmaps and TLB "
            "invalidations per flip in steady state, and the cost of a flip under each "
            "preset (default msm-thread and msm-kms)."
        ),
        epilog=FLIP_EPILOG,
    )
    p.add_argument("--workload", choices=("pageflip", "reimport"), default="pageflip")
    p.add_argument(
        "--source",
        metavar="NAME",
        help="swapchain | client | foreign (reimport: same_device | foreign)",
    )
    p.add_argument("--pattern", metavar="NAME", help="import pattern (see below)")
    p.add_argument(
        "--consumer", metavar="NAME", default="legacy", help="reimport: legacy | vm_bind"
    )
    p.add_argument("--resolution", default="1080p", metavar="NAME", help="1080p, 1440p or 4k")
    _add_common_model_options(p, frames_default=120)
    p.set_defaults(func=cmd_flip)


def _flip_spec(args: argparse.Namespace) -> Any:
    from gpuvm.study.workloads import WorkloadSpec

    res = resolution(args.resolution).name
    if args.workload == "pageflip":
        source = args.source or "swapchain"
        pattern = args.pattern or ("own" if source == "swapchain" else "weston")
        spec = WorkloadSpec(
            "pageflip",
            source,
            pattern,
            "kms",
            res,
            60.0,
            args.layers,
            args.depth,
            args.frames,
            args.depth + 1,
        )
    else:
        spec = WorkloadSpec(
            "reimport",
            args.source or "same_device",
            args.pattern or "close_each_frame",
            args.consumer,
            res,
            60.0,
            1,
            1,
            args.frames,
            2,
        )
    spec.validate()
    return spec


def cmd_flip(args: argparse.Namespace) -> int:
    from gpuvm.drm.policies import make_policy
    from gpuvm.study.runner import RunRecord, Study, price
    from gpuvm.study.workloads import run_spec

    policies = _policies(args)
    presets = _chosen_presets(args, ("msm-thread", "msm-kms"))
    rates = _refresh(args)
    spec = _flip_spec(args)
    runs = []
    skipped = []
    bar = ProgressBar()
    try:
        for i, name in enumerate(policies):
            if spec.consumer == "vm_bind" and not make_policy(name).supports_vm_bind:
                skipped.append(name)
                continue
            done = run_spec(spec, name, teardown=True)
            runs.append(RunRecord.of(done))
            bar(i + 1, len(policies), name)
    finally:
        bar.close()
    study = Study(tuple(runs), tuple(presets), tuple(rates))
    rows = study.rows()
    if args.json:
        from gpuvm.study.runner import dumps_rows

        sys.stdout.write(dumps_rows(rows))
        return 0
    print(
        f"{spec.case}: {spec.resolution}, {spec.layers} layer(s), "
        f"swapchain {spec.swapchain_depth}, {spec.frames - spec.warmup} steady frames "
        f"after {spec.warmup} warm-up"
    )
    header = ["policy", "maps", "unmaps", "TLB inv."]
    header += [f"{p.name} @{hz:g}Hz" for p in presets for hz in rates]
    header.append("leaks")
    body = []
    for run in runs:
        first = price(run, presets[0], rates[0])
        cells = [
            run.policy,
            _fmt(first["maps_per_flip"]),
            _fmt(first["unmaps_per_flip"]),
            _fmt(first["tlb_invalidations_per_flip"]),
        ]
        for p in presets:
            for hz in rates:
                r = price(run, p, hz)
                cells.append(f"{r['ms_per_flip']:.3f} ms ({r['frame_budget_pct']:.1f} %)")
        cells.append(str(run.leaks))
        body.append(cells)
    _print_table(header, body)
    for name in skipped:
        print(f"{name}: not applicable (no VM_BIND)")
    return 0
