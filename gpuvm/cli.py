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
a :class:`~gpuvm.errors.GpuvmError` escape during validation) for a bad argument: ``main``
prints it as one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from gpuvm.cases import CASES, MULTI_VA, format_span, run_case
from gpuvm.costs import CostPreset, PresetError, all_presets, budget_pct, get_preset, resolution
from gpuvm.errors import GpuvmError
from gpuvm.trace import add_replay

__all__ = [
    "COMMANDS",
    "ProgressBar",
    "UsageError",
    "build_parser",
    "json_parent",
    "main",
    "register",
]

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
    from gpuvm.policies import POLICIES
    from gpuvm.workloads import check_policy

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


# --- study ---------------------------------------------------------------------------------


STUDY_EPILOG = """\
examples:
  gpuvm study                              # all policies x workloads x presets -> ./report
  gpuvm study --out /tmp/r --frames 60     # faster, elsewhere
  gpuvm study --preset msm-thread,msm-kms --refresh 60 --refresh 144
  gpuvm study --resolution 1080p,4k --layers 2
  gpuvm study --json > rows.json           # rows on stdout, no files unless --out

The report (report.md) starts with the msm question: a 1080p compositor flipping its own
swapchain, maps / unmaps / TLB invalidations per flip and ms (% of the frame) per preset.
Then per-flip counts for every workload, a cost table per preset, heatmaps and lifetime
problems found at teardown.  study.json holds one row per policy x workload x preset x
refresh rate.  Charts need matplotlib (pip install ".[report]")."""


def add_study(sub: SubParsers) -> None:
    p = sub.add_parser(
        "study",
        parents=[json_parent()],
        formatter_class=_formatter,
        help="the design study: every policy x workload x preset -> report",
        description=_wrap(
            "Run every workload (pageflips from a swapchain, a same-device client or a "
            "foreign dma-buf with each compositor's import pattern; GPU re-imports) under "
            "every teardown policy, once each, and price the steady-state counts under "
            "every cost preset.  Writes report.md, PNG charts and study.json."
        ),
        epilog=STUDY_EPILOG,
    )
    p.add_argument("--out", metavar="DIR", help="output directory (default ./report)")
    _add_common_model_options(p, frames_default=120)
    p.add_argument(
        "--resolution",
        action="append",
        metavar="NAME",
        help="1080p, 1440p or 4k (repeatable; default 1080p)",
    )
    p.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: on a terminal, after 1 s)",
    )
    p.set_defaults(func=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:
    from gpuvm.report import write_report
    from gpuvm.study import default_workloads, dumps_rows, run_study

    # Validate everything before running or writing anything.
    policies = _policies(args)
    presets = _chosen_presets(args, None)
    rates = _refresh(args)
    specs = default_workloads(
        args.frames,
        resolutions=_resolutions(args),
        layers=args.layers,
        swapchain_depth=args.depth,
    )
    out = Path(args.out) if args.out is not None else (None if args.json else Path("report"))
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} exists and is not a directory")
    bar = ProgressBar(force=args.progress)
    try:
        study = run_study(
            policies=policies, presets=presets, workloads=specs, refresh_rates=rates, progress=bar
        )
    finally:
        bar.close()
    if args.json:
        sys.stdout.write(dumps_rows(study.rows()))
    if out is not None:
        files = write_report(study, out, charts=not args.no_charts)
        log = sys.stderr if args.json else sys.stdout
        print(f"wrote {files.markdown}, {files.json}", file=log)
        for c in files.charts:
            print(f"wrote {c}", file=log)
        if files.charts_skipped is not None and not args.no_charts:
            print(f"charts skipped: {files.charts_skipped}", file=log)
    return 0


# --- flip ------------------------------------------------------------------------------------


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
    from gpuvm.workloads import WorkloadSpec

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
    from gpuvm.policies import make_policy
    from gpuvm.study import RunRecord, Study, price
    from gpuvm.workloads import run_spec

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
            runs.append(RunRecord(name, spec, done.steady, len(done.leaks), len(done.reports)))
            bar(i + 1, len(policies), name)
    finally:
        bar.close()
    study = Study(tuple(runs), tuple(presets), tuple(rates))
    rows = study.rows()
    if args.json:
        from gpuvm.study import dumps_rows

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


def add_presets(sub: SubParsers) -> None:
    p = sub.add_parser(
        "presets",
        parents=[json_parent()],
        formatter_class=_formatter,
        help="list the cost presets with their numbers and sources",
        description=_wrap(
            "List the built-in cost presets (and those of --presets-file files): evidence "
            "class (M measured, D derived, E estimate), TLB pricing, the 1080p map and unmap "
            "in ms, and the source of the numbers."
        ),
        epilog="examples:\n  gpuvm presets\n  gpuvm presets --presets-file mine.toml --json",
    )
    p.add_argument("--presets-file", action="append", metavar="TOML", help="extra presets")
    p.set_defaults(func=cmd_presets)


def cmd_presets(args: argparse.Namespace) -> int:
    table = _presets(args)
    pages = resolution("1080p").pages()
    if args.json:
        print(json.dumps([p.as_dict() for p in table.values()], indent=2, sort_keys=True))
        return 0
    for p in table.values():
        m = p.map_ms(pages)
        uf = p.unmap_ms(pages)
        up = p.unmap_ms(pages, tlb_kind="per_page")
        print(f"{p.name}  [{p.evidence}]  tlb: {p.tlb_kind}")
        print(f"    {p.description}")
        print(
            f"    1080p: map {m:.3f} ms; unmap {uf:.3f} ms (context VM), {up:.3f} ms "
            f"(display VM); eager flip on the display: {m + up:.3f} ms "
            f"({budget_pct(m + up, 60):.1f} % of 60 Hz)"
        )
        print(f"    source: {p.source}")
        print()
    return 0


# --- cases ------------------------------------------------------------------------------------


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


def add_dmabuf(sub: SubParsers) -> None:
    p = sub.add_parser(
        "dmabuf",
        parents=[json_parent()],
        help="the multi-GPU dma-buf scenarios S1-S7 with their numbers",
        description=_wrap(
            "Runs the dma-buf sharing scenarios of the spec (section 4: S1-S7, S5 also with "
            "amdgpu's no-re-promote rule as S5-settled; V: a VRAM-only device importing a "
            "system-memory buffer; L: late attachers) and prints migrations, bytes over "
            "the link and their milliseconds at the given bandwidth, pins, attachment "
            "maps/unmaps, move_notify calls, page-table writes, refused calls with their "
            "errno, and per-frame steady-state numbers at 60 Hz."
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
    p.set_defaults(func=cmd_dmabuf)


def cmd_dmabuf(args: argparse.Namespace) -> int:
    from gpuvm import dmabuf_scenarios as ds

    key = args.scenario if args.scenario in ds.SCENARIOS else args.scenario.upper()
    if key != "ALL" and key not in ds.SCENARIOS:
        raise UsageError(f"unknown scenario {args.scenario!r} ({', '.join(ds.SCENARIOS)}, all)")
    if not args.bandwidth > 0:
        raise UsageError(f"--bandwidth must be positive, got {args.bandwidth}")
    results = ds.run("all" if key == "ALL" else key, args.bandwidth)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return 0
    for r in results:
        print(ds.format_result(r))
        print()
    return 0


# --- wiring -------------------------------------------------------------------------------------


COMMANDS: list[AddCommand] = [
    add_study,
    add_flip,
    add_presets,
    add_cases,
    add_dmabuf,
    add_replay,
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
  gpuvm COMMAND --help              # each command's options and examples

Without a command, `gpuvm` runs `gpuvm cases`."""


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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["cases", *(argv or [])])
    try:
        return int(args.func(args))
    except UsageError as exc:
        parser.exit(2, f"gpuvm {args.command}: error: {exc}\n")
    except (GpuvmError, PresetError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        parser.exit(2, f"gpuvm {args.command}: error: {message}\n")


if __name__ == "__main__":
    sys.exit(main())
