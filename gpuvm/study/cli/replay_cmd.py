"""``gpuvm replay``: a recorded trace's events and the lifetime checker's verdict."""

from __future__ import annotations

import json
from typing import Any

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


def cmd_replay(args: Any) -> int:
    kinds = None if args.events is None else _event_kinds(args.events)
    try:
        with open(args.trace, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {args.trace}: {e}") from None
    try:
        result = replay(text, text_log=True)
    except TraceError as e:
        raise UsageError(f"{args.trace}:{e.line}: {e.reason}") from None
    events = [
        t
        for e, t in zip(result.events, result.session.text, strict=True)
        if kinds is None or e.kind in kinds
    ]
    checker = result.checker
    if args.json:
        print(
            json.dumps(
                {
                    "trace": args.trace,
                    "version": TRACE_VERSION,
                    "ops": result.ops,
                    "events": events,
                    "ok": checker.ok,
                    "violations": [
                        {"kind": v.kind, "message": v.message, "fatal": v in checker.failures}
                        for v in checker.violations
                    ],
                },
                indent=2,
            )
        )
    else:
        for line in events:
            print(line)
        print(f"-- {result.ops} ops, {len(result.events)} events")
        print(checker.verdict())
    return 0 if checker.ok else 1
