"""Shared pieces of the ``gpuvm`` commands: one-line usage errors, ``--json``, the progress
bar, option parsers and table printing."""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from gpuvm.observe.costs import (
    CostPreset,
    all_presets,
    get_preset,
    resolution,
)

SubParsers = Any  # argparse._SubParsersAction, private in typeshed
AddCommand = Callable[[SubParsers], None]


class UsageError(Exception):
    """A bad command-line argument: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"gpuvm: error: {message}\n")


def json_parent() -> argparse.ArgumentParser:
    """A parent parser giving a command the common ``--json`` flag."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    return p


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _wrap(text: str) -> str:
    """A description wrapped to 88 columns (the raw formatter keeps epilogs as written)."""
    return textwrap.fill(text, 88)


# --- progress ----------------------------------------------------------------------------


class ProgressBar:
    """A one-line progress bar on stderr, drawn only once a run has taken more than
    ``delay`` seconds and only on a terminal (or when ``force``)."""

    def __init__(
        self, stream: TextIO | None = None, *, delay: float = 1.0, force: bool | None = None
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.delay = delay
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = tty if force is None else force
        self.start = time.monotonic()
        self.drawn = False

    def __call__(self, done: int, total: int, label: str) -> None:
        if not self.enabled or (time.monotonic() - self.start < self.delay and done < total):
            return
        if not self.drawn and done >= total:
            return  # finished within the delay: never drawn
        width = 30
        fill = width * done // max(total, 1)
        text = f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{total} {label[:40]:<40}"
        self.stream.write(text)
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


# --- shared helpers ----------------------------------------------------------------------


def _presets(args: argparse.Namespace) -> dict[str, CostPreset]:
    """The presets the command may use: built-ins plus ``--presets-file`` files."""
    files = getattr(args, "presets_file", None) or []
    for f in files:
        if not Path(f).is_file():
            raise UsageError(f"preset file {f!r} does not exist")
    return all_presets(*files)


def _chosen_presets(args: argparse.Namespace, default: Sequence[str] | None) -> list[CostPreset]:
    table = _presets(args)
    names = _split(args.preset) or (list(table) if default is None else list(default))
    return [get_preset(n, table) for n in dict.fromkeys(names)]


def _split(values: Sequence[str] | None) -> list[str]:
    """Repeatable options that also accept comma-separated lists."""
    out: list[str] = []
    for v in values or []:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return out


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _policies(args: argparse.Namespace) -> list[str]:
    from gpuvm.drm.policies import POLICIES
    from gpuvm.study.workloads import check_policy

    names = _split(args.policy) or list(POLICIES)
    return [check_policy(n) for n in dict.fromkeys(names)]


def _resolutions(args: argparse.Namespace) -> list[str]:
    return list(dict.fromkeys(resolution(r).name for r in (_split(args.resolution) or ["1080p"])))


def _refresh(args: argparse.Namespace) -> list[float]:
    rates = _split(args.refresh) or ["60"]
    out = []
    for r in rates:
        try:
            out.append(_positive_float(r))
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"--refresh: {exc}") from None
    return list(dict.fromkeys(out))


def _add_common_model_options(p: argparse.ArgumentParser, frames_default: int) -> None:
    p.add_argument(
        "--policy",
        action="append",
        metavar="NAME",
        help="teardown policy (repeat or comma-separate; default: all)",
    )
    p.add_argument(
        "--preset",
        action="append",
        metavar="NAME",
        help="cost preset (repeat or comma-separate; see `gpuvm presets`)",
    )
    p.add_argument(
        "--presets-file",
        action="append",
        metavar="TOML",
        help="extra presets from a TOML file (docs/costs.md has the schema)",
    )
    p.add_argument(
        "--frames",
        type=_positive_int,
        default=frames_default,
        metavar="N",
        help=f"frames per run, warm-up included (default {frames_default})",
    )
    p.add_argument(
        "--refresh",
        action="append",
        metavar="HZ",
        help="refresh rate for the frame-budget %% (repeatable; default 60)",
    )
    p.add_argument(
        "--layers", type=_positive_int, default=1, metavar="N", help="planes (default 1)"
    )
    p.add_argument(
        "--depth",
        type=_positive_int,
        default=3,
        metavar="N",
        help="swapchain buffers per layer (default 3)",
    )


def _fmt(x: object) -> str:
    v = float(x)  # type: ignore[arg-type]
    return f"{v:.0f}" if v.is_integer() else f"{v:.2f}"


def _print_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)
    ]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in body:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


# --- presets ---------------------------------------------------------------------------------
