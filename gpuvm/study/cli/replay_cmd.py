"""``gpuvm replay``: a recorded trace's events and the lifetime checker's verdict."""

from __future__ import annotations

import json
from typing import Any

from gpuvm.core.events import EventBus
from gpuvm.observe.costs import CostCounters, Counts, PresetError, get_preset
from gpuvm.observe.trace import TRACE_VERSION, TraceError, replay
from gpuvm.study.cli.common import (
    UsageError,
    json_parent,
)

# --- the `gpuvm replay` command ---------------------------------------------------------


def add_replay(sub: Any) -> None:
    """Register ``gpuvm replay TRACE [--json]`` (see :mod:`gpuvm.study.cli`)."""
    p = sub.add_parser(
        "replay",
        parents=[json_parent()],
        help="replay a recorded trace: its events and the lifetime checker's verdict",
        description=(
            "Validates a JSON-lines trace (docs/trace-format.md) as a whole, replays it into "
            "a fresh model with the lifetime checker on, and prints every event followed by "
            "the verdict.  A malformed or inconsistent trace is rejected with its line "
            "number and the reason (exit status 2); a lifetime violation exits 1."
        ),
    )
    p.add_argument("trace", metavar="TRACE", help="the trace file (JSON lines)")
    p.add_argument(
        "--events",
        metavar="KINDS",
        default=None,
        help="comma-separated event types to print (default: all)",
    )
    p.add_argument(
        "--preset",
        metavar="NAME",
        default=None,
        help="price the trace with a cost preset (gpuvm presets): per frame and in total",
    )
    p.set_defaults(func=cmd_replay)


def _event_kinds(text: str) -> set[str]:
    """The ``--events`` names, each checked against every event type the model emits."""
    import gpuvm  # noqa: F401  (every layer's event types are defined once it is imported)
    from gpuvm.core.events import Event

    known: set[str] = set()
    todo = [Event]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            known.add(sub.__name__)
            todo.append(sub)
    kinds = {k.strip() for k in text.split(",") if k.strip()}
    unknown = sorted(kinds - known)
    if unknown or not kinds:
        raise UsageError(
            f"--events: unknown event type {', '.join(unknown) or repr(text)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return kinds


def _pricing(bus: EventBus) -> tuple[CostCounters, list[Counts], Any]:
    """Cost counters on ``bus`` and a callback that cuts a frame at each ``frame`` op."""
    counters = CostCounters(bus)
    frames: list[Counts] = []
    last = [counters.total()]

    def on_op(op: str) -> None:
        if op == "frame":
            now = counters.total()
            frames.append(now - last[0])
            last[0] = now

    return counters, frames, on_op


def cmd_replay(args: Any) -> int:
    kinds = None if args.events is None else _event_kinds(args.events)
    try:
        with open(args.trace, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {args.trace}: {e}") from None
    preset = None
    if args.preset is not None:
        try:
            preset = get_preset(args.preset)
        except PresetError as e:
            raise UsageError(str(e)) from None
    bus = EventBus()
    counters, frames, on_op = _pricing(bus)
    try:
        result = replay(text, text_log=True, bus=bus, on_op=on_op)
    except TraceError as e:
        raise UsageError(f"{args.trace}:{e.line}: {e.reason}") from None
    keep = [kinds is None or e.kind in kinds for e in result.events]
    events = [t for t, k in zip(result.session.text, keep, strict=True) if k]
    structured = [f for f, k in zip(result.session.fields, keep, strict=True) if k]
    costs = None
    if preset is not None:
        total = counters.total()
        rest = total - sum(frames, Counts()) if frames else total
        costs = {
            "preset": preset.name,
            "frames": [preset.breakdown(c).as_dict() for c in frames],
            "after_last_frame": preset.breakdown(rest).as_dict(),
            "total": preset.breakdown(total).as_dict(),
        }
    checker = result.checker
    if args.json:
        print(
            json.dumps(
                {
                    "trace": args.trace,
                    "version": TRACE_VERSION,
                    "ops": result.ops,
                    "events": structured,
                    "ok": checker.ok,
                    "violations": [
                        {"kind": v.kind, "message": v.message, "fatal": v in checker.failures}
                        for v in checker.violations
                    ],
                    **({} if costs is None else {"costs": costs}),
                },
                indent=2,
            )
        )
    else:
        for line in events:
            print(line)
        print(f"-- {result.ops} ops, {len(result.events)} events")
        if costs is not None:
            _print_costs(costs)
        print(checker.verdict())
    return 0 if checker.ok else 1


def _ms(d: dict[str, Any]) -> str:
    parts = ("ioctl", "map", "unmap", "tlb", "vma", "migrate")
    return f"{d['total_ms']:.4f} ms (" + ", ".join(f"{p} {d[p + '_ms']:.4f}" for p in parts) + ")"


def _print_costs(costs: dict[str, Any]) -> None:
    print(f"-- costs under preset {costs['preset']}")
    for i, d in enumerate(costs["frames"]):
        print(f"frame {i}: {_ms(d)}")
    print(f"after the last frame: {_ms(costs['after_last_frame'])}")
    print(f"total: {_ms(costs['total'])}")
