"""``gpuvm timeline``: one setting's vblank timeline (dropped frames, flip latency, commit
tail and ioctl CPU time), as a table, ``--json``, a Chrome trace (``--perfetto``) and
charts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gpuvm.observe.costs import get_preset, resolution
from gpuvm.study.cli.common import (
    SubParsers,
    UsageError,
    _formatter,
    _print_table,
    _wrap,
    json_parent,
)

__all__ = ["add_timeline"]

EPILOG = """\
examples:
  gpuvm timeline --policy gpuvm_eager --preset msm-kms --refresh 144 --layers 2
  gpuvm timeline --policy gpuvm_vma_ref --refresh 144 --layers 2 --json
  gpuvm timeline --refresh 144 --layers 2 --perfetto trace.json   # open in ui.perfetto.dev
  gpuvm timeline --refresh 144 --layers 2 --chart timeline.png --sweep-chart dropped.png"""

SWEEP_RATES = (60.0, 75.0, 90.0, 120.0, 144.0, 165.0, 240.0)


def add_timeline(sub: SubParsers) -> None:
    p = sub.add_parser(
        "timeline",
        parents=[json_parent()],
        formatter_class=_formatter,
        help="simulate one setting's vblank timeline: dropped frames, flip latency",
        description=_wrap(
            "Run the model for a pageflip setting, price it with a preset and simulate the "
            "atomic commits at vblank (SimPy): maps in prepare_fb before arming, unmaps and "
            "TLB invalidations in the commit tail after the flip, one commit worker per CRTC "
            "in the kernel's order.  Needs the 'timeline' extra."
        ),
        epilog=EPILOG,
    )
    p.add_argument("--policy", default="gpuvm_eager", help="teardown policy (or module:Class)")
    p.add_argument("--preset", default="msm-kms", help="cost preset (see gpuvm presets)")
    p.add_argument(
        "--source",
        default="swapchain",
        help="where the flipped buffers come from: swapchain, client or foreign",
    )
    p.add_argument(
        "--pattern",
        help="import pattern for client / foreign buffers: weston (default), wlroots, "
        "android or recreate (import, ADDFB2 and GEM_CLOSE every frame)",
    )
    p.add_argument("--resolution", default="1080p", help="1080p, 1440p, 4k or WxH")
    p.add_argument("--refresh", type=float, default=60.0, help="refresh rate, Hz")
    p.add_argument("--layers", type=int, default=1, help="planes per commit")
    p.add_argument("--page-size", type=int, default=4096, help="GPU page size, bytes")
    p.add_argument("--frames", type=int, default=120, help="commits simulated")
    p.add_argument("--render-ms", type=float, default=3.0, help="GPU render time per frame")
    p.add_argument(
        "--repaint-window-ms",
        type=float,
        default=7.0,
        help="compositor repaint window (Weston's default 7 ms)",
    )
    p.add_argument("--vm-bind-ms", type=float, default=0.0, help="VM_BIND job per frame")
    p.add_argument("--crtcs", type=int, default=1, help="CRTCs, each with its compositor loop")
    p.add_argument("--blocking", action="store_true", help="blocking commits (tail in ioctl)")
    p.add_argument(
        "--unordered-tails",
        action="store_true",
        help="tails on an unbound workqueue (not one serial worker per CRTC)",
    )
    p.add_argument("--perfetto", type=Path, metavar="OUT.json", help="write a Chrome trace")
    p.add_argument("--chart", type=Path, metavar="OUT.png", help="timeline chart (first frames)")
    p.add_argument(
        "--sweep-chart",
        type=Path,
        metavar="OUT.png",
        help="dropped frames across refresh rates for eager and vma_ref",
    )
    p.set_defaults(func=cmd_timeline)


def _overrides(args: argparse.Namespace, hz: float) -> dict[str, Any]:
    return {
        "refresh_hz": hz,
        "frames": args.frames,
        "crtcs": args.crtcs,
        "render_ms": args.render_ms,
        "repaint_window_ms": args.repaint_window_ms,
        "vm_bind_ms": args.vm_bind_ms,
        "nonblocking": not args.blocking,
        "serial_worker": not args.unordered_tails,
    }


def _check_setting(source: str, pattern: str) -> None:
    """A bad source or pattern is a usage error (one line, exit 2)."""
    from gpuvm.study.workloads import PAGEFLIP_PATTERNS, SOURCES

    if source not in SOURCES:
        raise UsageError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
    if (source == "swapchain") != (pattern == "own") or pattern not in PAGEFLIP_PATTERNS:
        allowed = ["own"] if source == "swapchain" else [p for p in PAGEFLIP_PATTERNS if p != "own"]
        raise UsageError(
            f"pattern {pattern!r} does not fit source {source!r}; use {', '.join(allowed)}"
        )


def cmd_timeline(args: argparse.Namespace) -> int:
    try:
        import simpy  # noqa: F401
    except ImportError:
        raise UsageError(
            "needs SimPy: pip install 'gpuvm-model[timeline]' (or pip install simpy)"
        ) from None
    from gpuvm.observe.timeline import TimelineParams, check_page_size, dumps_perfetto, simulate
    from gpuvm.study.timeline_study import params_of_row, setting_row

    check_page_size(args.page_size)
    TimelineParams(layers=args.layers, **_overrides(args, args.refresh))  # validate first
    preset = get_preset(args.preset)
    res = resolution(args.resolution).name
    for out in (args.perfetto, args.chart, args.sweep_chart):
        if out is not None and not out.resolve().parent.is_dir():
            raise UsageError(f"cannot write {out}: no such directory")
    source = args.source
    pattern = args.pattern or ("own" if source == "swapchain" else "weston")
    _check_setting(source, pattern)
    row = setting_row(
        args.policy,
        preset,
        resolution=res,
        refresh_hz=args.refresh,
        layers=args.layers,
        page_size=args.page_size,
        source=source,
        pattern=pattern,
    )
    if row["map_ms"] is None:
        raise UsageError(f"the setting did not run: {row['status']} {row['error']}")
    params = params_of_row(row, **_overrides(args, args.refresh))
    tl = simulate(params)
    metrics = tl.metrics()
    setting = (
        f"{args.policy}, {preset.name}, {res}, {args.refresh:g} Hz, {args.layers} plane(s), "
        f"page {args.page_size}"
    )
    if source != "swapchain":
        setting += f", {source} buffers ({pattern})"
    if args.perfetto is not None:
        args.perfetto.write_text(dumps_perfetto(tl))
    if args.chart is not None:
        from gpuvm.study.timeline_charts import timeline_chart

        timeline_chart(tl, args.chart, title=f"timeline: {setting}")
    if args.sweep_chart is not None:
        from gpuvm.study.timeline_charts import dropped_chart

        series: dict[str, list[tuple[float, float]]] = {}
        for policy in dict.fromkeys((args.policy, "gpuvm_eager", "gpuvm_vma_ref")):
            pts = []
            for hz in SWEEP_RATES:
                r = setting_row(
                    policy,
                    preset,
                    resolution=res,
                    refresh_hz=hz,
                    layers=args.layers,
                    page_size=args.page_size,
                    source=source,
                    pattern=pattern,
                )
                if r["map_ms"] is not None:
                    pts.append(
                        (hz, simulate(params_of_row(r, **_overrides(args, hz))).dropped_per_s())
                    )
            series[policy] = pts
        dropped_chart(
            series,
            args.sweep_chart,
            title=f"dropped frames/s: {preset.name}, {res}, {args.layers} plane(s)",
        )
    out = {
        "setting": {
            "policy": args.policy,
            "preset": preset.name,
            "resolution": res,
            "refresh_hz": args.refresh,
            "layers": args.layers,
            "page_size": args.page_size,
            "source": source,
            "pattern": pattern,
        },
        "params": {
            k: getattr(params, k)
            for k in (
                "frames",
                "crtcs",
                "render_ms",
                "repaint_window_ms",
                "nonblocking",
                "serial_worker",
                "ioctl_ms",
                "prepare_ms",
                "tail_ms",
                "vm_bind_ms",
                "gem_closes",
                "close_waits",
            )
        },
        "metrics": metrics,
    }
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    print(setting)
    print(
        f"per plane: prepare_fb {params.prepare_ms:.4f} ms, cleanup_fb {params.tail_ms:.4f} ms; "
        f"render {params.render_ms:g} ms, repaint window {params.repaint_window_ms:g} ms"
    )
    if params.gem_closes:
        print(
            f"GEM_CLOSE per commit: {params.gem_closes}, "
            + ("waits for the render fence" if params.close_blocks else "does not wait")
        )
    _print_table(["metric", "value"], [[k, f"{v:g}"] for k, v in metrics.items()])
    return 0
