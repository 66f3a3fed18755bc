"""The ``gpuvm`` command line.

``gpuvm cases`` replays the kernel's 15 documented split/merge cases (plus the multi-VA
example) on the model and prints each one's ops and resulting layout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from gpuvm.cases import CASES, MULTI_VA, format_span, run_case


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"gpuvm: error: {message}\n")


def _cmd_cases(args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gpuvm",
        description=(
            "Executable model of Linux DRM GPU VA management.  Commands replay the "
            "kernel's split/merge cases and run design studies of mapping lifetimes."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    p = sub.add_parser(
        "cases",
        help="replay the 15 documented split/merge cases and the multi-VA example",
        description=(
            "Replays each case of drm_gpuvm.c's split/merge documentation on a fresh VM: "
            "maps the old layout, computes sm_map ops for the request, applies them, and "
            "prints the ops and the resulting layout next to the documented ones.  "
            "N and M are object offsets; case 15 gives N+1 (the code's value, not the "
            "diagram's N+2).  Exit status 1 if any case disagrees."
        ),
    )
    p.add_argument("--json", action="store_true", help="print the runs as JSON")
    p.set_defaults(func=_cmd_cases)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["cases", *(argv or [])])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
