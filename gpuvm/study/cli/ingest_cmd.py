"""``gpuvm ingest``: a kernel tracepoint log (``trace-cmd report`` or ``trace_pipe`` text)
reconstructed as a model trace, with a report of what could not be reconstructed
(``docs/ingest.md``)."""

from __future__ import annotations

import sys
from typing import Any

from gpuvm.study.cli.common import UsageError
from gpuvm.study.ingest import DEFAULT_POLICY, IngestError, Reconstruction, reconstruct


def add_ingest(sub: Any) -> None:
    """Register ``gpuvm ingest LOG [--out T] [--what-if POLICY]``."""
    p = sub.add_parser(
        "ingest",
        help="reconstruct a model trace from an xe / amdgpu / msm / dma-buf / vblank log",
        description=(
            "Parses trace-cmd report or raw trace_pipe text, each supported event by its "
            "kernel TP_printk format; unknown events are counted and skipped, malformed "
            "lines are reported one per line (exit status 2).  Writes the model trace "
            "(docs/trace-format.md) with --out, and prints what could not be reconstructed."
        ),
    )
    p.add_argument("log", metavar="LOG", help="the ftrace text log")
    p.add_argument("--out", metavar="TRACE", default=None, help="write the model trace here")
    p.add_argument(
        "--what-if",
        metavar="POLICY",
        default=None,
        help="also rebuild under this teardown policy and compare (meaningful for flips)",
    )
    p.set_defaults(func=cmd_ingest)


def _line(label: str, r: Reconstruction) -> str:
    m = r.summary()["model"]
    return (
        f"{label} {r.policy}: {len(r.session.lines)} trace ops ({r.refused} refused), "
        f"{m['map_ops']} map / {m['unmap_ops']} unmap ops, "
        f"{m['tlb_invalidations']} TLB invalidations"
    )


def cmd_ingest(args: Any) -> int:
    try:
        with open(args.log, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {args.log}: {e}") from None
    if args.what_if is not None:
        from gpuvm.drm.policies import POLICIES

        if args.what_if not in POLICIES:
            raise UsageError(
                f"unknown policy {args.what_if!r}; known: {', '.join(sorted(POLICIES))}"
            )
    try:
        r = reconstruct(text)
    except IngestError as e:
        for p in e.problems:
            print(f"{args.log}:{p.line}: {p.reason}", file=sys.stderr)
        return 2
    s = r.summary()
    print(f"{args.log}: {s['lines']} lines, {sum(s['events'].values())} supported events")
    for name, n in s["events"].items():
        print(f"  {name}: {n}")
    if s["unknown_events"]:
        skipped = ", ".join(f"{k} x{v}" for k, v in s["unknown_events"].items())
        print(f"unknown events skipped: {skipped}")
    devs = ", ".join(f"{k}={v}" for k, v in s["devices"].items())
    print(f"devices: {devs or 'none'}")
    vms = ", ".join(f"{k}={v}" for k, v in s["vms"].items())
    print(f"VMs: {vms or 'none'}")
    print(f"frames: {s['frames']}, page flips: {s['flips']}")
    t = s["tlb_fences"]
    print(f"TLB invalidation fences in the log: {t['sent']} sent, {t['received']} received")
    for mv in s["moves"]:
        print(
            f"move (line {mv['line']}): {mv['driver']} bo {mv['bo']} {mv['size']} bytes "
            f"{mv['from']} -> {mv['to']}"
        )
    print(_line("model under", r))
    if s["not_reconstructed"]:
        print("not reconstructed:")
        for n in s["not_reconstructed"]:
            print(f"  {n}")
    if args.what_if is not None:
        if r.flips == 0:
            print(
                f"what-if {args.what_if}: not meaningful for this log: the teardown policy "
                "decides when a display (KMS) mapping of a flipped buffer goes away, and the "
                "log has no page flips"
            )
        else:
            w = reconstruct(text, policy=args.what_if)
            print(_line("what-if", w))
    if args.out is not None:
        try:
            with open(args.out, "w", encoding="utf-8") as fh:
                fh.write(r.text)
        except OSError as e:
            raise UsageError(f"cannot write {args.out}: {e}") from None
        print(f"wrote {args.out} ({len(r.session.lines)} ops, policy {DEFAULT_POLICY})")
    return 0
