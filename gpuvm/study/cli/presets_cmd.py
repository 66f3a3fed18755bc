"""``gpuvm presets``: the cost presets with their numbers and sources."""

from __future__ import annotations

import argparse
import json

from gpuvm.observe.costs import (
    budget_pct,
    resolution,
)
from gpuvm.study.cli.common import (
    SubParsers,
    _formatter,
    _presets,
    _wrap,
    json_parent,
)


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
        if p.invalidation is not None:
            small, large = (
                p.unmap_ms((32 << 20) // ps, tlb_kind="per_page", page_size=ps) * 1000
                for ps in (4096, 2 << 20)
            )
            print(
                f"    invalidation rule: {p.invalidation.describe()}; 32 MiB unmap incl. "
                f"invalidation: {small:.1f} us on 4 KiB pages, {large:.1f} us on 2 MiB pages"
            )
        print(f"    source: {p.source}")
        print()
    return 0


# --- cases ------------------------------------------------------------------------------------
