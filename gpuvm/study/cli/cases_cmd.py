"""``gpuvm cases``: the kernel's documented split/merge cases replayed on the model."""

from __future__ import annotations

import argparse
import json

from gpuvm.study.cases import CASES, MULTI_VA, format_span, run_case
from gpuvm.study.cli.common import (
    SubParsers,
    _wrap,
    json_parent,
)


def add_cases(sub: SubParsers) -> None:
    p = sub.add_parser(
        "cases",
        parents=[json_parent()],
        help="replay the 15 documented split/merge cases and the multi-VA example",
        description=_wrap(
            "Replays each case of drm_gpuvm.c's split/merge documentation on a fresh VM: "
            "maps the old layout, computes sm_map ops for the request, applies them, and "
            "prints the ops and the resulting layout next to the documented ones.  "
            "N and M are object offsets; case 15 gives N+1 (the code's value, not the "
            "diagram's N+2).  Exit status 1 if any case disagrees."
        ),
    )
    p.set_defaults(func=cmd_cases)


def cmd_cases(args: argparse.Namespace) -> int:
    runs = [run_case(c) for c in (*CASES, MULTI_VA)]
    if args.json:
        rows = [
            {
                "case": r.case.number,
                "old": [format_span(s) for s in r.case.old],
                "request": format_span(r.case.request),
                "ops": list(r.ops),
                "result": [format_span(s) for s in r.result],
                "matches_kernel_doc": r.ok,
            }
            for r in runs
        ]
        print(json.dumps(rows, indent=2))
    else:
        for r in runs:
            label = "multi-VA" if r.case is MULTI_VA else f"case {r.case.number:2d}"
            old = " ".join(format_span(s) for s in r.case.old)
            print(f"{label}: old {old}   request {format_span(r.case.request)}")
            print(f"          ops    {', '.join(r.ops)}")
            print(
                f"          result {' '.join(format_span(s) for s in r.result)}"
                f"   [{'ok' if r.ok else 'MISMATCH'}]"
            )
    return 0 if all(r.ok for r in runs) else 1


# --- dmabuf -------------------------------------------------------------------------------------
