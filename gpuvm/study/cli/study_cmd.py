"""``gpuvm study``: the design study (the library's main job)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from gpuvm.study.digest import ReportDigest
    from gpuvm.study.runner import RunRecord
    from gpuvm.study.spec import StudySpec
    from gpuvm.study.sweep import Executor

from gpuvm.study.cli.common import (
    ProgressBar,
    SubParsers,
    UsageError,
    _add_common_model_options,
    _formatter,
    _positive_int,
    _refresh,
    _split,
    _wrap,
    json_parent,
)

# --- study ---------------------------------------------------------------------------------


STUDY_EPILOG = """\
examples:
  gpuvm study                              # all policies x workloads x presets -> ./report
  gpuvm study --out /tmp/r --frames 60     # faster, elsewhere
  gpuvm study --preset msm-thread,msm-kms --refresh 60 --refresh 144
  gpuvm study --resolution 1080p,4k --layers 2
  gpuvm study --resolution 2560x1080 --page-size 64K --flavour msm
  gpuvm study --spec study.toml --workers 2  # axes from a file, on 2 local Dask workers
  gpuvm study --policy mypolicies:LruDisplayCache --preset msm-kms
  gpuvm study --json > rows.json           # rows on stdout, no files unless --out

The report (report.md) starts with the msm question: a 1080p compositor flipping its own
swapchain, maps / unmaps / TLB invalidations per flip and ms (% of the frame) per preset.
Then per-flip counts for every workload, a cost table per preset, heatmaps, runs that
failed (exhausted / refused / leaked / use-after-free, with frame, errno and finding) and
lifetime problems found at teardown.  study.json (provenance, then rows) and study.csv hold
the same rows, one per policy x workload x preset x refresh rate.  --policy and the spec
take module:Class for a policy of your own.  --workers needs dask.distributed
(pip install "gpuvm-model[scale]"); charts need matplotlib (pip install ".[report]")."""


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
            "every cost preset.  Writes report.md, PNG charts, study.json and study.csv.  "
            "A run that exhausts the VA space, is refused or breaks a lifetime rule is a "
            "result (a row with its status), not an error."
        ),
        epilog=STUDY_EPILOG,
    )
    p.add_argument("--out", metavar="DIR", help="output directory (default ./report)")
    p.add_argument("--spec", metavar="TOML", help="study spec file (axes, points); flags win")
    _add_common_model_options(p, frames_default=120)
    p.set_defaults(frames=None, layers=None, depth=None)
    p.add_argument(
        "--resolution",
        action="append",
        metavar="NAME",
        help="1080p, 1440p, 4k or WxH (repeatable; default 1080p)",
    )
    p.add_argument(
        "--page-size",
        action="append",
        metavar="SIZE",
        help="GPU page size: 4K, 64K or 2M (repeatable; default 4K)",
    )
    p.add_argument(
        "--flavour", action="append", metavar="NAME", help="driver flavour (default msm)"
    )
    p.add_argument("--workload", action="append", metavar="NAME", help="pageflip and/or reimport")
    p.add_argument("--seed", action="append", metavar="N", help="seeds (default 0)")
    ex = p.add_mutually_exclusive_group()
    ex.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="run on a local Dask cluster of N worker processes",
    )
    ex.add_argument("--scheduler", metavar="ADDRESS", help="run on a running Dask scheduler")
    p.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: on a terminal)",
    )
    p.set_defaults(func=cmd_study)


def _ints(name: str, values: list[str]) -> list[int] | None:
    if not values:
        return None
    try:
        return [int(v) for v in values]
    except ValueError:
        raise UsageError(f"--{name}: expected whole numbers, got {','.join(values)}") from None


def _study_spec(args: argparse.Namespace) -> StudySpec:
    """The spec file (or the defaults) with the flags applied; problems are usage errors."""
    from gpuvm.study.spec import StudySpec, load_spec

    spec = load_spec(args.spec) if args.spec else StudySpec.default()
    rates = _refresh(args) if args.refresh else None
    spec = spec.override(
        preset_files=args.presets_file,
        policies=_split(args.policy) or None,
        presets=_split(args.preset) or None,
        resolutions=_split(args.resolution) or None,
        refresh=rates,
        layers=args.layers,
        depth=args.depth,
        frames=args.frames,
        page_size=_split(args.page_size) or None,
        flavour=_split(args.flavour) or None,
        workloads=_split(args.workload) or None,
        seeds=_ints("seed", _split(args.seed)),
    )
    for pt in spec.points or ({},):
        ax = {**spec.axes, **pt}
        if "pageflip" not in ax["workloads"]:
            continue
        for frames in ax["frames"]:
            for depth in ax["depth"]:
                if frames <= depth + 1:
                    raise UsageError(
                        f"--frames {frames}: a pageflip run needs more than its {depth + 1} "
                        f"warm-up frames ({depth}-buffer swapchain)"
                    )
    return spec


def _check_out(out: Path) -> None:
    """``--out`` must be (or become) a writable directory: checked before any work."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".gpuvm-write-test"
        probe.write_text("", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--out {str(out)!r} is not writable: {exc.strerror or exc}") from None


def provenance(spec: StudySpec, executor: str) -> dict[str, object]:
    """Where a study's rows come from: library version, the spec as run, every preset's
    numbers and sources, the date (UTC) and the executor."""
    import datetime

    from gpuvm import __version__
    from gpuvm.core.compiled import core_build

    return {
        "library": "gpuvm-model",
        "version": __version__,
        "core": core_build(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "spec": spec.as_dict(),
        "presets": {p.name: p.as_dict() for p in spec.presets()},
        "executor": executor,
    }


def _executor(args: argparse.Namespace) -> Executor:
    from gpuvm.study.sweep import DaskExecutor, DaskMissing, Serial

    if args.workers is None and args.scheduler is None:
        return Serial()
    try:
        return DaskExecutor(workers=args.workers, scheduler=args.scheduler)
    except DaskMissing as exc:
        raise UsageError(str(exc)) from None


def cmd_study(args: argparse.Namespace) -> int:
    """Run the sweep, streaming each batch's rows to study.json / study.csv (and stdout with
    ``--json``) as it finishes; the report is drawn from a bounded digest, so memory does not
    grow with the number of points."""
    from gpuvm.study.digest import ReportDigest
    from gpuvm.study.report import write_report
    from gpuvm.study.sweep import JsonRowsWriter, RowSink, iter_rows

    # Validate everything before running or writing anything.
    spec = _study_spec(args)
    runs_total, _ = spec.count()
    out = Path(args.out) if args.out is not None else (None if args.json else Path("report"))
    if out is not None:
        _check_out(out)
    log = sys.stderr if args.json else sys.stdout
    executor = _executor(args)
    digest = ReportDigest(spec.presets(), spec.axes["refresh"])
    bar = progress_bar(runs_total, args.progress)
    sink: RowSink | None = None

    def on_batch(n: int, skip: list[tuple[str, str, str]], recs: list[RunRecord]) -> None:
        digest.add_skipped(skip)
        digest.add_runs(recs)
        bar.update(n)
        if sink is not None:
            sink.flush()  # the previous batch's rows are on disk before the next is taken

    stdout = JsonRowsWriter(sys.stdout) if args.json else None
    try:
        if out is not None:
            sink = RowSink(out, provenance(spec, getattr(executor, "name", "in-process")))
        for row in iter_rows(
            spec.runs(), spec.preset_table, executor=executor, on_batch=on_batch, keep_runs=True
        ):
            digest.add(row)
            if sink is not None:
                sink.write(row)
            if stdout is not None:
                stdout.write(row)
    except KeyboardInterrupt:
        bar.close()
        kept = ""
        if sink is not None:
            sink.close()
            kept = f"; {sink.count} rows kept in {sink.json_path} and {sink.csv_path}"
        if stdout is not None:
            stdout.close()
        print(f"gpuvm: interrupted after {digest.rows_seen} rows{kept}", file=sys.stderr)
        return 130
    finally:
        bar.close()
        executor.close()
    if sink is not None:
        sink.close()
    if stdout is not None:
        stdout.close()
    if out is not None and sink is not None:
        files = write_report(digest, out, charts=not args.no_charts)
        print(f"wrote {files.markdown}, {sink.json_path}, {sink.csv_path}", file=log)
        for c in files.charts:
            print(f"wrote {c}", file=log)
        if files.charts_skipped is not None and not args.no_charts:
            print(f"charts skipped: {files.charts_skipped}", file=log)
        _print_failures(digest, log)
    return 0


def _print_failures(digest: ReportDigest, log: TextIO) -> None:
    """One line per run that stopped early (exhausted, refused; the first
    ``digest.max_listed``), a count of the rest."""
    counts = digest.run_failure_counts
    if not counts:
        return
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    print(f"failed runs: {summary} (report.md, 'Runs that failed')", file=log)
    for r in digest.run_failures:
        at = "during set-up" if r.failed_at_frame is None else f"at frame {r.failed_at_frame}"
        where = f"{r.spec.case} {r.spec.resolution} {r.spec.layers} layer(s)"
        print(f"  {r.policy} {where}: {r.status} {at} ({r.errno})", file=log)
    early = sum(n for s, n in counts.items() if s in ("exhausted", "refused"))
    if early > len(digest.run_failures):
        print(f"  ... and {early - len(digest.run_failures)} more", file=log)


class _PlainBar:
    """The built-in bar, when tqdm is not installed: the same ``update`` / ``close``."""

    def __init__(self, total: int, force: bool | None) -> None:
        self.bar = ProgressBar(force=force)
        self.total = total
        self.done = 0

    def update(self, n: int) -> None:
        self.done += n
        self.bar(self.done, self.total, "runs")

    def close(self) -> None:
        self.bar.close()


def progress_bar(total: int, force: bool | None) -> Any:
    """A tqdm bar over model runs on stderr (rate and ETA), off when stderr is not a
    terminal unless ``force``; the plain built-in bar without tqdm."""
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:
        return _PlainBar(total, force)
    disable = (not sys.stderr.isatty()) if force is None else not force
    return tqdm(total=total, unit="run", disable=disable, file=sys.stderr, dynamic_ncols=True)
