"""Charts of the vblank timeline: the first frames of one setting (vblanks, each commit's
ioctl / wait / flip / cleanup phases, GPU jobs, dropped frames marked), and dropped frames
per second across refresh rates per policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from gpuvm.observe.timeline.sim import Timeline

__all__ = ["dropped_chart", "timeline_chart"]

_PHASE_COLOURS = {
    "commit": "#4c72b0",
    "wait": "#bbbbbb",
    "flip": "#55a868",
    "cleanup": "#c44e52",
    "render": "#8172b2",
    "VM_BIND": "#ccb974",
    "GEM_CLOSE": "#dd8452",
}


def timeline_chart(timeline: Timeline, path: Path, *, title: str, frames: int = 8) -> Path:
    """A PNG of the first ``frames`` commits of ``timeline``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spans = [s for s in timeline.spans if s.frame < frames]
    end = max((s.end for s in spans if s.frame >= 0), default=timeline.params.period_ms)
    end = end + timeline.params.period_ms * 0.5
    tracks = sorted({s.track for s in spans if s.end > s.start}, reverse=True)
    fig, ax = plt.subplots(figsize=(12, 1.0 + 0.7 * len(tracks)))
    y = {t: i for i, t in enumerate(tracks)}
    seen: set[str] = set()
    for s in spans:
        if s.end <= s.start or s.track not in y:
            continue
        phase = s.name.split(" ")[0]
        colour = _PHASE_COLOURS.get(phase, "#999999")
        label = None if phase in seen else phase
        seen.add(phase)
        ax.broken_barh(
            [(s.start, s.end - s.start)],
            (y[s.track] - 0.35, 0.7),
            color=colour,
            label=label,
            edgecolor="black",
            linewidth=0.4,
        )
        if s.end - s.start > timeline.params.period_ms * 0.25:
            ax.text(
                (s.start + s.end) / 2,
                y[s.track],
                f"f{s.frame}",
                ha="center",
                va="center",
                fontsize=7,
                color="white",
            )
    first_vblank = True
    for s in timeline.spans:
        if s.start > end:
            break
        if s.name.startswith("vblank"):
            ax.axvline(
                s.start,
                color="#555555",
                linestyle=":",
                linewidth=0.8,
                label="vblank" if first_vblank else None,
            )
            first_vblank = False
    first_drop = True
    for s in timeline.spans:
        if s.name == "dropped" and s.start <= end:
            ax.plot(
                [s.start],
                [len(tracks) - 0.4],
                marker="X",
                color="red",
                markersize=10,
                linestyle="none",
                label="dropped frame (missed vblank)" if first_drop else None,
            )
            first_drop = False
    ax.set_yticks(range(len(tracks)), tracks)
    ax.set_ylim(-0.6, len(tracks) - 0.1)
    ax.set_xlim(0, end)
    ax.set_xlabel("time (ms)")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=8, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def dropped_chart(
    series: Mapping[str, Sequence[tuple[float, float]]], path: Path, *, title: str
) -> Path:
    """A PNG of dropped frames per second (y) across refresh rates (x), one line per policy;
    ``series[policy]`` is ``[(refresh_hz, dropped_per_s), ...]``.  The dashed line is every
    vblank missed (the refresh rate itself)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    rates: set[float] = set()
    for i, (policy, points) in enumerate(series.items()):
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        rates.update(xs)
        ax.plot(xs, ys, marker="o", label=policy, linewidth=2.2 - 0.3 * i)
    xs = sorted(rates)
    ax.plot(xs, xs, linestyle="--", color="#888888", label="all vblanks missed")
    ax.set_xlabel("refresh rate (Hz)")
    ax.set_ylabel("dropped frames per second")
    ax.set_xticks(xs)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
