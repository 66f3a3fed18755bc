"""The study report: ``report.md`` (Markdown tables), ``study.json`` (the rows) and PNG
charts.

:func:`write_report` writes everything into one directory.  Charts need matplotlib (the
optional ``report`` extra); it is imported only when charts are drawn, and without it the
Markdown and JSON are written all the same and :attr:`ReportFiles.charts_skipped` says why.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

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


def _num(x: float | None) -> str:
    """Counts per flip: integers without decimals, else two decimals ("-" unmeasured)."""
    if x is None:
        return "-"
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.2f}"


def failure_label(row: Row) -> str:
    """A failed run's short label: its status and frame (``exhausted @517``), or ""."""
    if row["status"] == "ok":
        return ""
    frame = row["failed_at_frame"]
    if frame is not None:
        return f"{row['status']} @{frame}"
    late = row["status"] in ("leaked", "use-after-free")
    return f"{row['status']} ({'teardown' if late else 'set-up'})"


def _ms(row: Row) -> str:
    if row["ms_per_flip"] is None:
        return f"**{failure_label(row)}**"
    text = f"{row['ms_per_flip']:.3f} ({row['frame_budget_pct']:.1f} %)"
    return text if row["status"] == "ok" else f"{text} **{failure_label(row)}**"


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
        gcases = [c for c in cases if any(k[0] == c for k in idx)]
        flips = any(c.startswith("pageflip/") for c in gcases)
        title = (
            f"{res}, {layers} layer{'s' if layers != 1 else ''}, {_hz(hz)}"
            if flips
            else f"re-imports, {res}, {_hz(hz)}"
        )
        out += [f"## {title}" if multi else f"## Setting: {title}", ""]
        # --- headline -------------------------------------------------------------------
        if HEADLINE_CASE in gcases:
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
        for case in gcases:
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
            for case in gcases:
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
    out += _failures(rows, presets[0], study.refresh_rates[0])
    # --- lifetimes -------------------------------------------------------------------------
    bad = [
        r
        for r in rows
        if r["preset"] == presets[0]
        and r["refresh_hz"] == study.refresh_rates[0]
        and (r["leaked_objects"] or r["lifetime_reports"])
    ]
    out += timeline_markdown(study_rows=rows)
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


def _failures(rows: Sequence[Row], preset: str, hz: float) -> list[str]:
    """The section for runs that did not finish cleanly: exhausted, refused, leaked or
    use-after-free, with the frame, errno and the checker's finding.  Their costs cover only
    the frames before the failure, so the tables mark them instead of ranking them."""
    bad = [r for r in rows if r["preset"] == preset and r["refresh_hz"] == hz]
    bad = [r for r in bad if r["status"] != "ok"]
    out = ["## Runs that failed", ""]
    if not bad:
        return [*out, "None: every run finished every frame cleanly.", ""]
    out += [
        "A failure is a result: the run stopped (or was torn down) with the status below. "
        "Its per-flip numbers cover only the steady frames before the failure, so tables "
        "and charts mark it rather than rank it as cheap.",
        "",
    ]
    body = [
        [
            f"`{r['policy']}`",
            f"`{r['case']}`",
            f"{r['resolution']}, {r['layers']} layer{'s' if r['layers'] != 1 else ''}",
            str(r["status"]),
            str(r["failed_at_frame"])
            if r["failed_at_frame"] is not None
            else ("teardown" if r["status"] in ("leaked", "use-after-free") else "set-up"),
            str(r["errno"] or "-"),
            str(r["error"] or r["finding"] or "-").replace("|", "/"),
        ]
        for r in bad
    ]
    out += _table(["policy", "workload", "setting", "status", "frame", "errno", "finding"], body)
    return [*out, ""]


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


_PRESET_ORDER: Final = (
    "default",
    "intel-tlb",
    "msm-kms",
    "msm-thread",
    "per-process-flush",
    "sm8150-smmu-before",
    "sm8150-smmu-after",
    "vtd",
    "nvidia-cuda-vmm-h200",
)
"""The built-in presets, each with its own tab10 colour (user presets get a hashed one)."""


def colour_of(name: str, known: Sequence[str] = _PRESET_ORDER) -> str:
    """A fixed colour for a preset or policy name, the same in every chart (tab10, by the
    name's place among the built-ins, else by a stable hash of the name)."""
    tab10 = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
        "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    ]  # fmt: skip
    if name in known:
        return tab10[known.index(name)]
    return tab10[zlib.crc32(name.encode()) % len(tab10)]


def _setting(row: Row) -> str:
    layers = int(row["layers"])
    return (
        f"{row['resolution']}, {layers} layer{'s' if layers != 1 else ''}, {row['refresh_hz']:g} Hz"
    )


def _draw_headline(plt: Any, grows: Sequence[Row], study: Study, path: Path, hz: float) -> bool:
    idx = _index(grows)
    policies = [p for p in study.policies if (HEADLINE_CASE, p, study.presets[0].name) in idx]
    presets = [p.name for p in study.presets]
    if not policies:
        return False
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    n = len(presets)
    width = 0.8 / n
    top = 100.0
    for i, p in enumerate(policies):  # the min-max range across presets, as a band
        vals = [idx[(HEADLINE_CASE, p, s)]["frame_budget_pct"] for s in presets]
        got = [float(v) for v in vals if v is not None]
        if got:
            ax.fill_between(
                [i - 0.45, i + 0.45], min(got), max(got), color="#bbbbbb", alpha=0.35, lw=0,
                label="min-max across presets" if i == 0 else None,
            )  # fmt: skip
    for j, s in enumerate(presets):
        for i, p in enumerate(policies):
            r = idx[(HEADLINE_CASE, p, s)]
            x = i + (j - (n - 1) / 2) * width
            failed = r["status"] != "ok"
            v = 0.0 if r["frame_budget_pct"] is None else float(r["frame_budget_pct"])
            top = max(top, v)
            ax.bar(
                x, v, width, color=colour_of(s), label=s if i == 0 else None,
                hatch="//" if failed else None, edgecolor="black" if failed else None,
            )  # fmt: skip
            if v >= 0.5:
                ax.annotate(f"{v:.1f}", (x, v), ha="center", va="bottom", fontsize=7)
    ymax = top * 1.25
    ax.axhline(100.0, color="#d62728", ls="--", lw=1.2, label="100 % of the frame budget")
    for i, p in enumerate(policies):
        r = idx[(HEADLINE_CASE, p, presets[0])]
        label = failure_label(r)
        text = f"{_num(r['maps_per_flip'])} map / {_num(r['unmaps_per_flip'])} unmap\nper flip"
        ax.text(
            i, ymax * 0.97, text + (f"\n{label}" if label else ""), ha="center", va="top",
            fontsize=9, color="#b00000" if label else "#444444",
        )  # fmt: skip
    ax.set_xticks(range(len(policies)))
    ax.set_xticklabels(policies, rotation=15, ha="right", fontsize=10)
    ax.set_xlabel("teardown policy")
    ax.set_ylabel(f"% of a {hz:g} Hz frame per flip")
    ax.set_ylim(0, ymax)
    ax.set_title(f"Compositor flipping its own swapchain ({_setting(grows[0])}): cost of one flip")
    ax.legend(title="cost preset", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _draw_heatmap(
    plt: Any, grows: Sequence[Row], study: Study, preset: str, path: Path, vmax: float
) -> bool:
    idx = _index(grows)
    policies = study.policies
    cases = [c for c in study.cases if any((c, p, preset) in idx for p in policies)]
    if not cases:
        return False
    hz = float(grows[0]["refresh_hz"])
    vals: list[list[float]] = []
    for c in cases:
        line = []
        for p in policies:
            r = idx.get((c, p, preset))
            ok = r is not None and r["status"] == "ok" and r["frame_budget_pct"] is not None
            line.append(float(r["frame_budget_pct"]) if ok and r is not None else float("nan"))
        vals.append(line)
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(cases) + 2.4), dpi=110)
    cmap = plt.get_cmap("YlOrRd").with_extremes(bad="#dddddd")
    im = ax.imshow(vals, cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
    for i, c in enumerate(cases):
        for j, p in enumerate(policies):
            r = idx.get((c, p, preset))
            light = False
            if r is None:
                text = "n/a"
            elif r["status"] != "ok":
                text = failure_label(r)
                ax.add_patch(
                    plt.Rectangle(
                        (j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///",
                        edgecolor="#b00000", lw=0,
                    )
                )  # fmt: skip
            else:
                text = (
                    f"{_num(r['maps_per_flip'])}/{_num(r['unmaps_per_flip'])}  "
                    f"{float(r['ms_per_flip']):.2f} ms"
                )
                light = float(r["frame_budget_pct"]) > vmax * 0.6
            ax.text(
                j, i, text, ha="center", va="center", fontsize=8,
                color="white" if light else "black",
            )  # fmt: skip
    ax.set_xticks(range(len(policies)))
    ax.set_xticklabels(policies, rotation=15, ha="right", fontsize=9)
    ax.set_xlabel("teardown policy")
    ax.set_yticks(range(len(cases)))
    ax.set_yticklabels(cases, fontsize=9)
    ax.set_ylabel("workload")
    ax.set_title(
        f"Per flip under {preset} ({_setting(grows[0])}): maps/unmaps and ms; hatched = run failed"
    )
    cbar = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    cbar.set_label(f"% of a {hz:g} Hz frame (same scale in every heatmap)")
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
    ok = [
        float(r["frame_budget_pct"])
        for r in rows
        if r["preset"] in heat and r["status"] == "ok" and r["frame_budget_pct"] is not None
    ]
    vmax = max([10.0, *ok])  # one colour scale for the whole heatmap family
    for key, grows in groups.items():
        hz = key[2]
        name = _chart_name("headline", key, multi)
        if _draw_headline(plt, grows, study, out / name, hz):
            made[f"headline:{key}"] = name
        for s in heat:
            name = _chart_name("heatmap", key, multi, s)
            if _draw_heatmap(plt, grows, study, s, out / name, vmax):
                made[f"heatmap:{key}:{s}"] = name
    return made, None


def write_report(
    study: Study,
    out: str | Path,
    *,
    charts: bool = True,
    rows: Sequence[Row] | None = None,
) -> ReportFiles:
    """Write ``report.md``, ``study.json`` and (with matplotlib) PNG charts into ``out``
    (created if needed).  With ``rows`` (already written to ``study.json`` by a sweep's
    sink) the JSON is left alone and the report is drawn from them.  Charts of an earlier
    run in ``out`` are removed first, so no stale PNG stays behind."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "study.json"
    if rows is None:
        rows = study.rows()
        json_path.write_text(dumps_rows(rows), encoding="utf-8")
    for old in list(folder.glob("headline*.png")) + list(folder.glob("heatmap*.png")):
        old.unlink()
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
