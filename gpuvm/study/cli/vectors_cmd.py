"""``gpuvm vectors``: the model's split/merge and VmBo conformance vectors as JSON lines or
a C table (``docs/vectors.md``)."""

from __future__ import annotations

import sys
from typing import Any

from gpuvm.study.cli.common import UsageError


def add_vectors(sub: Any) -> None:
    """Register ``gpuvm vectors [--seed N] [--scripts N] [--vm-bo-scripts N]
    [--format jsonl|c] [--out PATH]``."""
    p = sub.add_parser(
        "vectors",
        help="export split/merge and vm_bo conformance vectors (JSON lines or a C table)",
        description=(
            "Exports the documented drm_gpuvm split/merge cases and seeded random map / "
            "unmap scripts, each command with the ops the model generates and the layout "
            "after them, then vm_bo / extobj / evict / deferred-cleanup sequences and "
            "seeded random ones, each command with its result and the VmBo, list and "
            "buffer state after it.  The same seed gives the same bytes."
        ),
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the random scripts (1)")
    p.add_argument("--scripts", type=int, default=16, help="random scripts (16)")
    p.add_argument(
        "--vm-bo-scripts", type=int, default=8, help="random vm_bo / extobj / evict scripts (8)"
    )
    p.add_argument("--format", choices=("jsonl", "c"), default="jsonl")
    p.add_argument("--out", metavar="PATH", default=None, help="write here, not stdout")
    p.set_defaults(func=cmd_vectors)


def cmd_vectors(args: Any) -> int:
    from gpuvm.study.vectors import to_c, to_jsonl, vectors

    if args.scripts < 0:
        raise UsageError("--scripts must be >= 0")
    if args.vm_bo_scripts < 0:
        raise UsageError("--vm-bo-scripts must be >= 0")
    vecs = vectors(args.seed, args.scripts, args.vm_bo_scripts)
    text = to_jsonl(vecs) if args.format == "jsonl" else to_c(vecs, args.seed)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as e:
        raise UsageError(f"cannot write {args.out}: {e}") from None
    return 0
