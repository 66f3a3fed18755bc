"""The study report: ``report.md`` (Markdown tables), ``study.json`` (the rows) and PNG
charts.

:func:`write_report` writes everything into one directory.  Charts need matplotlib (the
optional ``report`` extra); it is imported only when charts are drawn, and without it the
Markdown and JSON are written all the same and :attr:`ReportFiles.charts_skipped` says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from gpuvm.study.runner import Study, dumps_rows
from gpuvm.study.timeline_study import timeline_markdown
from gpuvm.study.workloads import CONSUMERS, PAGEFLIP_PATTERNS, REIMPORT_PATTERNS, SOURCES

__all__ = ["HEADLINE_CASE", "ReportFiles", "render_markdown", "write_report"]

Row = Mapping[str, Any]

HEADLINE_CASE = "pageflip/swapchain/own"
"""The case the msm question is about: a compositor flipping its own swapchain."""

HEATMAP_PRESETS = ("msm-thread", "msm-kms")
"""Presets that get a heatmap (when the study priced them); else the first preset."""


@attrs.frozen(slots=True)
class ReportFiles:
    """What :func:`write_report` wrote: paths, and why charts were skipped (or None)."""

    markdown: Path
    json: Path
    charts: tuple[Path, ...]
    charts_skipped: str | None


def _group_key(row: Row) -> tuple[str, int, float]:
    return (str(row["resolution"]), int(row["layers"]), float(row["refresh_hz"]))


def _groups(rows: Sequence[Row]) -> dict[tuple[str, int, float], list[Row]]:
    out: dict[tuple[str, int, float], list[Row]] = {}
    for row in rows:
        out.setdefault(_group_key(row), []).append(row)
    return out


def _num(x: float) -> str:
    """Counts per flip: integers without decimals, else two decimals."""
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.2f}"


def _ms(row: Row) -> str:
    return f"{row['ms_per_flip']:.3f} ({row['frame_budget_pct']:.1f} %)"


def _hz(hz: float) -> str:
    return f"{hz:g} Hz"


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines


def _index(rows: Sequence[Row]) -> dict[tuple[str, str, str], Row]:
    return {(str(r["case"]), str(r["policy"]), str(r["preset"])): r for r in rows}


def _chart_name(kind: str, key: tuple[str, int, float], multi: bool, extra: str = "") -> str:
    suffix = f"_{key[0]}_{key[1]}l_{key[2]:g}hz" if multi else ""
    return f"{kind}{'_' + extra if extra else ''}{suffix}.png"


def render_markdown(study: Study, rows: Sequence[Row], charts: Mapping[str, str]) -> str:
    """The report text.  ``charts`` maps a chart's role (``headline:<group>`` or
    ``heatmap:<group>:<preset>``) to its file name; roles without a chart are left out."""
    policies = study.policies
    presets = [p.name for p in study.presets]
    cases = study.cases
    groups = _groups(rows)
    multi = len(groups) > 1
    out: list[str] = ["# GPU VA lifetime design study", ""]
    first = study.runs[0] if study.runs else None
    out += [
        "Every teardown policy x every workload, each run once through the model with cost "
        "counters on the device's event bus; the steady-state counts (warm-up frames "
        "excluded) are then priced under every cost preset.  Produced by `gpuvm study`; the "
        "same rows are in `study.json`.",
        "",
        f"* Policies: {', '.join(f'`{p}`' for p in policies)}",
        f"* Presets: {', '.join(f'`{p}`' for p in presets)}",
        f"* Refresh rates: {', '.join(_hz(h) for h in study.refresh_rates)}",
    ]
    if first is not None:
        out.append(
            f"* Frames per run: {first.spec.frames} ({first.spec.warmup} warm-up frames for a "
            f"pageflip with a {first.spec.swapchain_depth}-buffer swapchain; 2 for a re-import)"
        )
    out += [
        "* A *flip* is one frame: every layer flipped once (pageflip), or one import + submit "
        "(+ close) (re-import).  `ms` include the frame's ioctls (2 us each, 10 us for "
        "ADDFB2/RMFB, in most presets).",
        "",
    ]
    for key, grows in groups.items():
        res, layers, hz = key
        idx = _index(grows)
        title = f"{res}, {layers} layer{'s' if layers != 1 else ''}, {_hz(hz)}"
        out += [f"## {title}" if multi else f"## Setting: {title}", ""]
        # --- headline -------------------------------------------------------------------
        if any(c == HEADLINE_CASE for c in cases):
            out += [
                "### The msm question: a compositor flipping its own swapchain",
                "",
                "Maps, unmaps and TLB invalidations per flip in steady state, and the cost "
                "of a flip in ms (share of the frame budget) under each preset.",
                "",
            ]
            body = []
            for p in policies:
                first_row = idx.get((HEADLINE_CASE, p, presets[0]))
                if first_row is None:
                    continue
                body.append(
                    [
                        f"`{p}`",
                        _num(first_row["maps_per_flip"]),
                        _num(first_row["unmaps_per_flip"]),
                        _num(first_row["tlb_invalidations_per_flip"]),
                        *[_ms(idx[(HEADLINE_CASE, p, s)]) for s in presets],
                    ]
                )
            out += _table(["policy", "maps", "unmaps", "TLB inv.", *presets], body)
            out.append("")
            out += _findings(idx, policies, presets, hz)
            role = f"headline:{key}"
            if role in charts:
                out += [f"![frame budget per flip]({charts[role]})", ""]
        # --- counts for every case ---------------------------------------------------------
        out += [
            "### Page-table work per flip, every workload",
            "",
            "Each cell: maps / unmaps / TLB invalidations per flip (steady state); the same "
            "under every preset.",
            "",
        ]
        body = []
        for case in cases:
            cells = []
            for p in policies:
                r = idx.get((case, p, presets[0]))
                cells.append(
                    "n/a"
                    if r is None
                    else " / ".join(
                        _num(r[k])
                        for k in ("maps_per_flip", "unmaps_per_flip", "tlb_invalidations_per_flip")
                    )
                )
            body.append([f"`{case}`", *cells])
        out += _table(["workload", *[f"`{p}`" for p in policies]], body)
        out.append("")
        # --- cost per preset ---------------------------------------------------------------
        for s in presets:
            preset = next(p for p in study.presets if p.name == s)
            out += [
                f"### Cost per flip under `{s}`: ms ({_hz(hz)} frame budget %)",
                "",
                f"{preset.description} (evidence {preset.evidence}).",
                "",
            ]
            body = []
            for case in cases:
                cells = []
                for p in policies:
                    r = idx.get((case, p, s))
                    cells.append("n/a" if r is None else _ms(r))
                body.append([f"`{case}`", *cells])
            out += _table(["workload", *[f"`{p}`" for p in policies]], body)
            out.append("")
            role = f"heatmap:{key}:{s}"
            if role in charts:
                out += [f"![cost per flip under {s}]({charts[role]})", ""]
    # --- lifetimes -------------------------------------------------------------------------
    bad = [
        r
        for r in rows
        if r["preset"] == presets[0]
        and r["refresh_hz"] == study.refresh_rates[0]
        and (r["leaked_objects"] or r["lifetime_reports"])
    ]
    out += timeline_markdown()
    out += ["## Lifetime problems found at teardown", ""]
    if bad:
        out += [
            "After each run every file, fd and the device were closed; the device's leak "
            "report and its lifetime reports (use-after-free) are counted here.",
            "",
        ]
        out += _table(
            ["policy", "workload", "resolution", "leaked objects", "lifetime reports"],
            [
                [
                    f"`{r['policy']}`",
                    f"`{r['case']}`",
                    str(r["resolution"]),
                    str(r["leaked_objects"]),
                    str(r["lifetime_reports"]),
                ]
                for r in bad
            ],
        )
    else:
        out.append("None: every run freed every buffer, VM and dma-buf at teardown.")
    out.append("")
    if study.skipped:
        out += ["## Not applicable", ""]
        out += _table(
            ["policy", "workload", "why"],
            [[f"`{p}`", f"`{c}`", why] for p, c, why in study.skipped],
        )
        out.append("")
    out += _glossary()
    return "\n".join(out)


def _findings(
    idx: Mapping[tuple[str, str, str], Row],
    policies: Sequence[str],
    presets: Sequence[str],
    hz: float,
) -> list[str]:
    lines = []
    for p in policies:
        parts = []
        for s in ("msm-thread", "msm-kms"):
            r = idx.get((HEADLINE_CASE, p, s))
            if r is not None:
                parts.append(f"{_ms(r)} under `{s}`")
        r0 = idx.get((HEADLINE_CASE, p, presets[0]))
        if r0 is None or not parts:
            continue
        lines.append(
            f"* `{p}`: {_num(r0['maps_per_flip'])} map + {_num(r0['unmaps_per_flip'])} unmap "
            f"+ {_num(r0['tlb_invalidations_per_flip'])} TLB invalidation per flip: "
            + "; ".join(parts)
            + "."
        )
    if lines:
        lines.append("")
    return lines


def _glossary() -> list[str]:
    out = ["## Workloads", ""]
    out += ["Pageflip sources:", ""]
    out += [f"* `{k}`: {v}" for k, v in SOURCES.items()]
    out += ["", "Import patterns (pageflip):", ""]
    out += [f"* `{k}`: {v}" for k, v in PAGEFLIP_PATTERNS.items()]
    out += ["", "Re-import (a GPU consumer texturing from imported buffers):", ""]
    out += [f"* `{k}`: {v}" for k, v in REIMPORT_PATTERNS.items()]
    out += [f"* consumer `{k}`: {v}" for k, v in CONSUMERS.items()]
    out.append("")
    return out


# --- charts -------------------------------------------------------------------------------


def _draw_headline(plt: Any, grows: Sequence[Row], study: Study, path: Path, hz: float) -> bool:
    idx = _index(grows)
    policies = [p for p in study.policies if (HEADLINE_CASE, p, study.presets[0].name) in idx]
    presets = [p.name for p in study.presets]
    if not policies:
        return False
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    n = len(presets)
    width = 0.8 / n
    cmap = plt.get_cmap("tab10")
    top = 0.0
    for j, s in enumerate(presets):
        xs = [i + (j - (n - 1) / 2) * width for i in range(len(policies))]
        vals = [float(idx[(HEADLINE_CASE, p, s)]["frame_budget_pct"]) for p in policies]
        top = max(top, *vals)
        bars = ax.bar(xs, vals, width, label=s, color=cmap(j))
        for bar, v in zip(bars, vals, strict=True):
            if v >= 0.5:
                ax.annotate(
                    f"{v:.1f}",
                    (bar.get_x() + bar.get_width() / 2, v),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
    ymax = max(5.0, top * 1.4)
    for i, p in enumerate(policies):
        r = idx[(HEADLINE_CASE, p, presets[0])]
        ax.text(
            i,
            ymax * 0.97,
            f"{_num(r['maps_per_flip'])} map / {_num(r['unmaps_per_flip'])} unmap\nper flip",
            ha="center",
            va="top",
            fontsize=9,
            color="#444444",
        )
    ax.set_xticks(range(len(policies)))
    ax.set_xticklabels(policies, rotation=15, ha="right", fontsize=10)
    ax.set_ylabel(f"% of a {hz:g} Hz frame per flip")
    ax.set_ylim(0, ymax)
    res = grows[0]["resolution"]
    ax.set_title(
        f"Compositor flipping its own swapchain ({res}, {grows[0]['layers']} layer): "
        "cost of one flip"
    )
    ax.legend(title="cost preset", fontsize=9, loc="center right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _draw_heatmap(
    plt: Any, grows: Sequence[Row], study: Study, preset: str, path: Path, hz: float
) -> bool:
    idx = _index(grows)
    policies = study.policies
    cases = [c for c in study.cases if any((c, p, preset) in idx for p in policies)]
    if not cases:
        return False
    vals: list[list[float]] = []
    for c in cases:
        line = []
        for p in policies:
            r = idx.get((c, p, preset))
            line.append(float("nan") if r is None else float(r["frame_budget_pct"]))
        vals.append(line)
    finite = [v for line in vals for v in line if v == v]
    vmax = max([10.0, *finite])
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(cases) + 2.2), dpi=110)
    cmap = plt.get_cmap("YlOrRd").with_extremes(bad="#dddddd")
    im = ax.imshow(vals, cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
    for i, c in enumerate(cases):
        for j, p in enumerate(policies):
            r = idx.get((c, p, preset))
            if r is None:
                text, light = "n/a", False
            else:
                text = (
                    f"{_num(r['maps_per_flip'])}/{_num(r['unmaps_per_flip'])}  "
                    f"{float(r['ms_per_flip']):.2f} ms"
                )
                light = float(r["frame_budget_pct"]) > vmax * 0.6
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if light else "black",
            )
    ax.set_xticks(range(len(policies)))
    ax.set_xticklabels(policies, rotation=15, ha="right", fontsize=9)
    ax.set_yticks(range(len(cases)))
    ax.set_yticklabels(cases, fontsize=9)
    res = grows[0]["resolution"]
    ax.set_title(
        f"Per flip under {preset} ({res}, {hz:g} Hz): maps/unmaps and ms; colour = % of frame"
    )
    cbar = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    cbar.set_label(f"% of a {hz:g} Hz frame")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _charts(study: Study, rows: Sequence[Row], out: Path) -> tuple[dict[str, str], str | None]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}, 'matplotlib is not installed (pip install ".[report]")'
    plt.rcParams["svg.hashsalt"] = "gpuvm"
    made: dict[str, str] = {}
    groups = _groups(rows)
    multi = len(groups) > 1
    names = [p.name for p in study.presets]
    heat = [p for p in HEATMAP_PRESETS if p in names] or names[:1]
    for key, grows in groups.items():
        hz = key[2]
        name = _chart_name("headline", key, multi)
        if _draw_headline(plt, grows, study, out / name, hz):
            made[f"headline:{key}"] = name
        for s in heat:
            name = _chart_name("heatmap", key, multi, s)
            if _draw_heatmap(plt, grows, study, s, out / name, hz):
                made[f"heatmap:{key}:{s}"] = name
    return made, None


def write_report(study: Study, out: str | Path, *, charts: bool = True) -> ReportFiles:
    """Write ``report.md``, ``study.json`` and (with matplotlib) PNG charts into ``out``
    (created if needed)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    rows = study.rows()
    json_path = folder / "study.json"
    json_path.write_text(dumps_rows(rows), encoding="utf-8")
    made: dict[str, str] = {}
    skipped: str | None = "charts not requested"
    if charts:
        made, skipped = _charts(study, rows, folder)
    md_path = folder / "report.md"
    text = render_markdown(study, rows, made)
    if skipped is not None and charts:
        text += f"\n_Charts skipped: {skipped}._\n"
    md_path.write_text(text, encoding="utf-8")
    return ReportFiles(md_path, json_path, tuple(folder / n for n in made.values()), skipped)
