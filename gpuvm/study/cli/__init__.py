"""The ``gpuvm`` command line.

* ``gpuvm study``: every teardown policy x every workload x every cost preset, written as
  ``report.md`` + PNG charts + ``study.json`` (the main job).
* ``gpuvm flip``: one workload under each policy, as a table on the terminal.
* ``gpuvm presets``: the cost presets with their numbers and sources.
* ``gpuvm cases``: the kernel's 15 documented split/merge cases replayed on the model.
* ``gpuvm dmabuf``: the multi-GPU dma-buf sharing scenarios S1-S7 with their numbers.

Every command takes ``--json``.  Bad arguments print one line and exit with status 2 before
anything is written.

Adding a command: write ``add_<name>(sub)`` that calls ``sub.add_parser(...)`` (use
``parents=[json_parent()]`` for ``--json``), adds its arguments and
``set_defaults(func=<handler>)``, where the handler takes the parsed namespace and returns
the exit status; then append ``add_<name>`` to :data:`COMMANDS` (or call :func:`register`
from the command's own module before :func:`main` runs).  Raise :class:`UsageError` (or let
a :class:`~gpuvm.core.errors.GpuvmError` escape during validation) for a bad argument: ``main``
prints it as one line and exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gpuvm.core.errors import GpuvmError
from gpuvm.observe.costs import PresetError
from gpuvm.study.cli.cases_cmd import add_cases
from gpuvm.study.cli.common import (
    AddCommand,
    ProgressBar,
    UsageError,
    _formatter,
    _Parser,
    _wrap,
    json_parent,
)
from gpuvm.study.cli.dmabuf_cmd import add_dmabuf
from gpuvm.study.cli.flip_cmd import add_flip
from gpuvm.study.cli.ingest_cmd import add_ingest
from gpuvm.study.cli.presets_cmd import add_presets
from gpuvm.study.cli.replay_cmd import add_replay
from gpuvm.study.cli.study_cmd import add_study
from gpuvm.study.cli.timeline_cmd import add_timeline
from gpuvm.study.cli.vectors_cmd import add_vectors

__all__ = [
    "COMMANDS",
    "ProgressBar",
    "UsageError",
    "build_parser",
    "json_parent",
    "main",
    "register",
]


# --- wiring -------------------------------------------------------------------------------------


COMMANDS: list[AddCommand] = [
    add_study,
    add_flip,
    add_presets,
    add_cases,
    add_dmabuf,
    add_replay,
    add_ingest,
    add_vectors,
    add_timeline,
]
"""The subcommands, in help order.  Append ``add_<name>`` here (or :func:`register` it)."""


def register(add: AddCommand) -> AddCommand:
    """Add a subcommand builder to :data:`COMMANDS` (usable as a decorator)."""
    if add not in COMMANDS:
        COMMANDS.append(add)
    return add


MAIN_EPILOG = """\
examples:
  gpuvm study --out report          # the design study: report/report.md, charts, study.json
  gpuvm flip --source foreign --pattern wlroots
  gpuvm presets
  gpuvm cases
  gpuvm dmabuf --scenario S5 --bandwidth 12
  gpuvm replay trace.jsonl          # replay a recorded trace: events + lifetime verdict
  gpuvm timeline --refresh 144 --layers 2   # dropped frames at vblank (SimPy)
  gpuvm COMMAND --help              # each command's options and examples

Without a command, `gpuvm` prints this help."""


def _version() -> str:
    from gpuvm import __version__
    from gpuvm.core.compiled import core_build

    return f"{__version__} (core: {core_build()})"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gpuvm",
        formatter_class=_formatter,
        description=_wrap(
            "Executable model of Linux DRM GPU VA management.  Commands run design studies "
            "of mapping lifetimes (what a pageflip costs in maps, unmaps, TLB invalidations "
            "and milliseconds under each teardown policy) and replay the kernel's "
            "split/merge cases."
        ),
        epilog=MAIN_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"gpuvm-model {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # module:Class policies from the current directory
    try:
        return int(args.func(args))
    except UsageError as exc:
        parser.exit(2, f"gpuvm {args.command}: error: {exc}\n")
    except (GpuvmError, PresetError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        parser.exit(2, f"gpuvm {args.command}: error: {message}\n")
    except BrokenPipeError:
        # the reader went away (``gpuvm dmabuf | head``): stop quietly, as a Unix filter does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
