"""``gpuvm dmabuf``: the multi-GPU dma-buf sharing scenarios."""

from __future__ import annotations

import argparse
import json

from gpuvm.study.cli.common import (
    SubParsers,
    UsageError,
    _wrap,
    json_parent,
)


def add_dmabuf(sub: SubParsers) -> None:
    p = sub.add_parser(
        "dmabuf",
        parents=[json_parent()],
        help="the multi-GPU dma-buf scenarios S1-S7 with their numbers",
        description=_wrap(
            "Runs the multi-GPU dma-buf sharing scenarios (S1-S7, S5 also with "
            "amdgpu's no-re-promote rule as S5-settled; V: a VRAM-only device importing a "
            "system-memory buffer; L: late attachers) and prints migrations, bytes over "
            "the link and their milliseconds at the given bandwidth, pins, attachment "
            "maps/unmaps, move_notify calls, page-table writes, refused calls with their "
            "errno, and per-frame steady-state numbers at 60 Hz.  S3 and S4 run a kernel "
            "carrying the NO_MOVE import RFC (mainline ignores PRIME_FD_TO_HANDLE flags) "
            'and are labelled [RFC: ...]; the JSON gives it as "rfc".'
        ),
    )
    p.add_argument(
        "--scenario",
        default="all",
        metavar="KEY",
        help="S1..S7, S5-settled, V, L or all (default: all)",
    )
    p.add_argument(
        "--bandwidth",
        type=float,
        default=24.0,
        metavar="GBPS",
        help="VRAM<->system link bandwidth in GB/s (default 24: PCIe 4.0 x16)",
    )
    p.add_argument(
        "--stock-kernel",
        action="store_true",
        help="build the exporters without CONFIG_DMABUF_MOVE_NOTIFY, as the stock Kconfig "
        "(dynamic importers then pin at map); the default builds it, the scenarios being "
        'about move_notify.  The JSON gives it as "move_notify"',
    )
    p.set_defaults(func=cmd_dmabuf)


def cmd_dmabuf(args: argparse.Namespace) -> int:
    from gpuvm.study import dmabuf_scenarios as ds

    key = args.scenario if args.scenario in ds.SCENARIOS else args.scenario.upper()
    if key != "ALL" and key not in ds.SCENARIOS:
        raise UsageError(f"unknown scenario {args.scenario!r} ({', '.join(ds.SCENARIOS)}, all)")
    if not args.bandwidth > 0:
        raise UsageError(f"--bandwidth must be positive, got {args.bandwidth}")
    results = ds.run(
        "all" if key == "ALL" else key, args.bandwidth, move_notify=not args.stock_kernel
    )
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return 0
    for r in results:
        print(ds.format_result(r))
        print()
    return 0
