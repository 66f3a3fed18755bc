"""Cost presets: frozen price lists that turn :class:`~gpuvm.observe.costs.counts.Counts` into
milliseconds.

A :class:`CostPreset` has fixed, per-page and per-flush terms (microseconds, or
nanoseconds for the per-page PTE terms), the text of its source and an evidence class
(M measured or stated in a cited public source, D derived from M values, E estimate).
Pricing is linear in the counts, so the cost of N frames is N times the cost of their
mean, and swapping a preset never reruns the model.  Built-in presets ship as TOML files
in ``gpuvm/presets/``; users load their own with :func:`load_presets` (schema in ``docs/costs.md``).
"""

from __future__ import annotations

import functools
import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import attrs

from gpuvm.core.errors import GpuvmError
from gpuvm.observe.costs.counts import Counts, TlbSizeRow
from gpuvm.observe.costs.errors import PresetError, PresetFormatError, UnknownPreset
from gpuvm.observe.timeline.tlb import INVALIDATION_KINDS, InvalidationRule

__all__ = [
    "CostBreakdown",
    "CostPreset",
    "all_presets",
    "builtin_presets",
    "dumps_presets",
    "get_preset",
    "ioctl_key",
    "load_presets",
    "loads_presets",
]

PRESET_TLB_KINDS: Final = ("declared", "per_page", "context_flush")
"""``declared``: price each invalidation by the kind its VM declared (a per-page range
invalidation per page, or one flush); ``per_page`` / ``context_flush``: price every
invalidation in the scope that way, whatever its VM declared."""

EVIDENCE: Final = ("M", "D", "E")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

NUMBER_KEYS: Final = (
    "ioctl_us",
    "map_fixed_us",
    "map_page_ns",
    "unmap_fixed_us",
    "unmap_page_ns",
    "tlb_page_us",
    "tlb_flush_us",
    "vma_create_us",
    "vma_destroy_us",
    "migrate_fixed_us",
    "migrate_gb_per_s",
)
TEXT_KEYS: Final = ("description", "source", "evidence", "tlb_kind")
REQUIRED_KEYS: Final = (
    "map_fixed_us",
    "map_page_ns",
    "unmap_fixed_us",
    "unmap_page_ns",
    "tlb_page_us",
    "tlb_flush_us",
)
"""Keys a preset without ``extends`` must give."""
TABLE_KEYS: Final = ("ioctl_us_by_name", "invalidation")
RULE_KEYS: Final = (
    "kind",
    "page_us",
    "range_us",
    "context_us",
    "threshold_bytes",
    "threshold_pages",
)
"""Keys of a preset's ``[preset.NAME.invalidation]`` table (only ``kind`` is required;
``page_us`` defaults to the preset's ``tlb_page_us``, ``range_us`` and ``context_us`` to
its ``tlb_flush_us``, the thresholds to 0: none)."""
FILE_KEYS: Final = ("extends",)
ALL_KEYS: Final = (*TEXT_KEYS, *NUMBER_KEYS, *TABLE_KEYS, *FILE_KEYS)


def ioctl_key(name: str) -> str:
    """The form ioctl names are matched in: upper case, without ``DRM_IOCTL_`` / ``MODE_``
    (``"DRM_IOCTL_MODE_ADDFB2"``, ``"mode_addfb2"`` and ``"ADDFB2"`` all match)."""
    return name.upper().removeprefix("DRM_IOCTL_").removeprefix("MODE_")


def _number_problem(key: str, value: object) -> str | None:
    if type(value) not in (int, float):
        return f"expected a number, got {value!r}"
    x = float(value)  # type: ignore[arg-type]
    if not math.isfinite(x) or x < 0:
        return f"expected a finite number >= 0, got {value!r}"
    if key == "migrate_gb_per_s" and x <= 0:
        return f"expected a bandwidth > 0, got {value!r}"
    return None


def _text_problem(key: str, value: object) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {value!r}"
    if key == "evidence" and value not in EVIDENCE:
        return f"expected one of {', '.join(EVIDENCE)}, got {value!r}"
    if key == "tlb_kind" and value not in PRESET_TLB_KINDS:
        return f"expected one of {', '.join(PRESET_TLB_KINDS)}, got {value!r}"
    return None


def _table_problem(value: object) -> str | None:
    if not isinstance(value, Mapping):
        return f"expected a table of ioctl name = microseconds, got {value!r}"
    for name, us in value.items():
        if not isinstance(name, str) or not name:
            return f"ioctl name {name!r} must be a non-empty string"
        problem = _number_problem("ioctl_us_by_name", us)
        if problem is not None:
            return f"ioctl {name!r}: {problem}"
    return None


def rule_of_table(value: object, *, page_us: float, flush_us: float) -> InvalidationRule:
    """The :class:`InvalidationRule` of a preset's ``invalidation`` table; anything
    malformed raises :class:`PresetFormatError` naming the key."""
    if not isinstance(value, Mapping):
        raise PresetFormatError(f"expected a table of {', '.join(RULE_KEYS)}, got {value!r}")
    for key in value:
        if key not in RULE_KEYS:
            raise PresetFormatError(f"unknown key {key!r}; known keys: {', '.join(RULE_KEYS)}")
    kind = value.get("kind")
    if kind not in INVALIDATION_KINDS:
        raise PresetFormatError(
            f"key 'kind': expected one of {', '.join(INVALIDATION_KINDS)}, got {kind!r}"
        )
    nums: dict[str, float] = {}
    for key, default in (("page_us", page_us), ("range_us", flush_us), ("context_us", flush_us)):
        x = value.get(key, default)
        problem = _number_problem(key, x)
        if problem is not None:
            raise PresetFormatError(f"key {key!r}: {problem}")
        nums[key] = float(x)
    limits: dict[str, int] = {}
    for key in ("threshold_bytes", "threshold_pages"):
        limit = value.get(key, 0)
        if type(limit) is not int or limit < 0:
            raise PresetFormatError(f"key {key!r}: expected an integer >= 0, got {limit!r}")
        limits[key] = limit
    try:
        return InvalidationRule(
            kind=kind,
            page_us=nums["page_us"],
            range_us=nums["range_us"],
            context_us=nums["context_us"],
            threshold_bytes=limits["threshold_bytes"],
            threshold_pages=limits["threshold_pages"],
        )
    except GpuvmError as exc:  # pragma: no cover - the checks above come first
        raise PresetFormatError(str(exc)) from None


def rule_us(rule: InvalidationRule, rows: Iterable[TlbSizeRow]) -> float:
    """Microseconds of the invalidations of histogram ``rows`` (see
    :attr:`Counts.tlb_sizes`) under ``rule``.  An exact row is priced at its size; a bucket
    row (only past :data:`~gpuvm.observe.costs.counts.MAX_EXACT_TLB_SIZES` distinct sizes)
    takes the threshold decision at its mean size, its per-page term from its exact
    pages."""
    total = 0.0
    for _vm_kind, ps, lo, hi, inv, pages in rows:
        if lo == hi:
            total += inv * rule.pages_us(lo, ps)
            continue
        kind = rule.effective_kind(pages * ps // max(inv, 1), ps)
        if kind == "per_page":
            total += pages * rule.page_us
        else:
            total += inv * (rule.range_us if kind == "range" else rule.context_us)
    return total


def _to_float(value: object) -> object:
    return float(value) if type(value) is int else value


def _ioctl_table(value: object) -> object:
    if isinstance(value, Mapping):
        value = tuple(value.items())
    if isinstance(value, tuple | list):
        try:
            return tuple(sorted((ioctl_key(str(k)), _to_float(v)) for k, v in value))
        except (TypeError, ValueError):
            return value
    return value


def _num(default: float | None = None) -> Any:
    if default is None:
        return attrs.field(converter=_to_float)
    return attrs.field(default=default, converter=_to_float)


@attrs.frozen(slots=True, kw_only=True)
class CostBreakdown:
    """A preset's price of some counts, in milliseconds, per component."""

    preset: str
    ioctl_ms: float = 0.0
    map_ms: float = 0.0
    unmap_ms: float = 0.0
    tlb_ms: float = 0.0
    vma_ms: float = 0.0
    migrate_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return (
            self.ioctl_ms
            + self.map_ms
            + self.unmap_ms
            + self.tlb_ms
            + self.vma_ms
            + self.migrate_ms
        )

    def per_frame(self, frames: int) -> CostBreakdown:
        """Every component divided by ``frames``."""
        if frames <= 0:
            raise PresetError(f"per-frame cost over {frames} frames")
        return CostBreakdown(
            preset=self.preset,
            ioctl_ms=self.ioctl_ms / frames,
            map_ms=self.map_ms / frames,
            unmap_ms=self.unmap_ms / frames,
            tlb_ms=self.tlb_ms / frames,
            vma_ms=self.vma_ms / frames,
            migrate_ms=self.migrate_ms / frames,
        )

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = attrs.asdict(self)
        out["total_ms"] = self.total_ms
        return out


@attrs.frozen(slots=True, kw_only=True)
class CostPreset:
    """A price list for counted operations (times in µs, per-page PTE terms in ns).

    ``cost = ioctls * ioctl_us`` (or ``ioctl_us_by_name[name]``)
    ``+ map_ops * map_fixed_us + pages_mapped * map_page_ns``
    ``+ unmap_ops * unmap_fixed_us + pages_unmapped * unmap_page_ns``
    ``+ TLB`` (by ``tlb_kind``: pages of per-page range invalidations * ``tlb_page_us``,
    flushes * ``tlb_flush_us``) ``+ VMA and migration terms``.  Pages are page-table
    entries in each VM's page size, so larger pages divide the per-page terms.
    """

    name: str
    description: str = ""
    source: str = ""
    evidence: str = "E"
    tlb_kind: str = "declared"
    ioctl_us: float = _num(2.0)
    ioctl_us_by_name: tuple[tuple[str, float], ...] = attrs.field(
        default=(), converter=_ioctl_table
    )
    map_fixed_us: float = _num()
    map_page_ns: float = _num()
    unmap_fixed_us: float = _num()
    unmap_page_ns: float = _num()
    tlb_page_us: float = _num()
    tlb_flush_us: float = _num()
    vma_create_us: float = _num(0.0)
    vma_destroy_us: float = _num(0.0)
    migrate_fixed_us: float = _num(0.0)
    migrate_gb_per_s: float = _num(25.0)
    invalidation: InvalidationRule | None = None
    """How one TLB invalidation is priced by its size (per page, per range, whole context,
    with a size threshold), applied to every invalidation whose size the counts recorded
    (``Counts.tlb_sizes``), whatever its VM declared; ``None``: by ``tlb_kind``."""

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise PresetFormatError(
                f"preset name {self.name!r}: use letters, digits, '-' and '_' "
                "(starting with a letter or digit)"
            )
        for key in TEXT_KEYS:
            problem = _text_problem(key, getattr(self, key))
            if problem is not None:
                raise PresetFormatError(f"preset {self.name!r}: key {key!r}: {problem}")
        for key in NUMBER_KEYS:
            problem = _number_problem(key, getattr(self, key))
            if problem is not None:
                raise PresetFormatError(f"preset {self.name!r}: key {key!r}: {problem}")
        table = self.ioctl_us_by_name
        if not isinstance(table, tuple) or (problem := _table_problem(dict(table))) is not None:
            raise PresetFormatError(
                f"preset {self.name!r}: key 'ioctl_us_by_name': "
                f"{problem if isinstance(table, tuple) else 'expected a table'}"
            )
        if self.invalidation is not None and not isinstance(self.invalidation, InvalidationRule):
            raise PresetFormatError(
                f"preset {self.name!r}: key 'invalidation': expected an InvalidationRule, "
                f"got {self.invalidation!r}"
            )

    # --- pricing ------------------------------------------------------------------------

    def breakdown(self, counts: Counts) -> CostBreakdown:
        """The price of ``counts``, per component, in milliseconds."""
        c = counts
        ioctl = c.ioctls * self.ioctl_us
        if self.ioctl_us_by_name and c.ioctls_by_name:
            table = dict(self.ioctl_us_by_name)
            for name, k in c.ioctls_by_name:
                us = table.get(ioctl_key(name))
                if us is not None:
                    ioctl += k * (us - self.ioctl_us)
        tlb = self._tlb_us(c)
        return CostBreakdown(
            preset=self.name,
            ioctl_ms=ioctl / 1000.0,
            map_ms=(c.map_ops * self.map_fixed_us + c.pages_mapped * self.map_page_ns / 1000.0)
            / 1000.0,
            unmap_ms=(
                c.unmap_ops * self.unmap_fixed_us + c.pages_unmapped * self.unmap_page_ns / 1000.0
            )
            / 1000.0,
            tlb_ms=tlb / 1000.0,
            vma_ms=(c.vmas_created * self.vma_create_us + c.vmas_destroyed * self.vma_destroy_us)
            / 1000.0,
            migrate_ms=(
                c.migrations * self.migrate_fixed_us
                + c.bytes_migrated / (self.migrate_gb_per_s * 1000.0)
            )
            / 1000.0,
        )

    def _tlb_us(self, c: Counts) -> float:
        """TLB microseconds: the invalidations with a recorded size through the
        invalidation rule (if any), the rest by ``tlb_kind``."""
        range_n, range_pages = c.tlb_range_invalidations, c.tlb_range_pages
        flush_n, flush_pages = c.tlb_flushes, c.tlb_flush_pages
        tlb = 0.0
        rule = self.invalidation
        if rule is not None and c.tlb_sizes:
            tlb = rule_us(rule, c.tlb_sizes)
            for vm_kind, _ps, _lo, _hi, inv, pages in c.tlb_sizes:
                if vm_kind == "per_page":
                    range_n, range_pages = range_n - inv, range_pages - pages
                else:
                    flush_n, flush_pages = flush_n - inv, flush_pages - pages
        kind = self.tlb_kind
        if kind == "declared":
            tlb += range_pages * self.tlb_page_us + flush_n * self.tlb_flush_us
        elif kind == "per_page":
            tlb += (range_pages + flush_pages) * self.tlb_page_us
        else:
            tlb += (range_n + flush_n) * self.tlb_flush_us
        return tlb

    def cost(self, counts: Counts) -> float:
        """The price of ``counts`` in milliseconds."""
        return self.breakdown(counts).total_ms

    def cost_per_frame(self, counts: Counts) -> float:
        """Milliseconds per frame of counts spanning ``counts.frames`` frames."""
        if counts.frames <= 0:
            raise PresetError("cost per frame of counts that span no frame")
        return self.cost(counts) / counts.frames

    def map_ms(self, pages: int, *, ops: int = 1) -> float:
        """The price of ``ops`` map calls writing ``pages`` entries in all."""
        return self.cost(Counts(map_ops=ops, pages_mapped=pages))

    def unmap_ms(
        self, pages: int, *, tlb_kind: str = "context_flush", ops: int = 1, page_size: int = 4096
    ) -> float:
        """The price of ``ops`` unmap calls clearing ``pages`` entries of ``page_size``
        (split evenly), each followed by its TLB invalidation on a VM of kind ``tlb_kind``
        (the preset's invalidation rule, else its own ``tlb_kind`` unless ``declared``,
        wins)."""
        if tlb_kind not in ("per_page", "context_flush"):
            raise PresetError(f"tlb_kind must be per_page or context_flush, got {tlb_kind!r}")
        each, rest = divmod(pages, ops) if ops > 0 else (0, 1)
        sizes: tuple[TlbSizeRow, ...] = ()
        if not rest:
            sizes = ((tlb_kind, page_size, each, each, ops, pages),)
        if tlb_kind == "per_page":
            c = Counts(
                unmap_ops=ops,
                pages_unmapped=pages,
                tlb_range_invalidations=ops,
                tlb_range_pages=pages,
                tlb_sizes=sizes,
            )
        else:
            c = Counts(
                unmap_ops=ops,
                pages_unmapped=pages,
                tlb_flushes=ops,
                tlb_flush_pages=pages,
                tlb_sizes=sizes,
            )
        return self.cost(c)

    def as_dict(self) -> dict[str, object]:
        """Every field, JSON-ready, in a fixed order."""
        out: dict[str, object] = attrs.asdict(self, recurse=False)
        out["ioctl_us_by_name"] = dict(self.ioctl_us_by_name)
        out["invalidation"] = None if self.invalidation is None else self.invalidation.as_dict()
        return out


# --- loading ----------------------------------------------------------------------------


def loads_presets(
    text: str, *, origin: str = "<string>", base: Mapping[str, CostPreset] | None = None
) -> dict[str, CostPreset]:
    """Parse the presets of one TOML document (``[preset.NAME]`` tables), in file order.
    ``extends = "other"`` starts from a preset of ``base`` (the built-ins by default) or of
    the same document.  Anything malformed raises :class:`PresetFormatError` naming
    ``origin``, the preset and the key; nothing is returned then."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PresetFormatError(f"{origin}: not valid TOML: {exc}") from None
    for key in doc:
        if key != "preset":
            raise PresetFormatError(
                f"{origin}: unknown top-level key {key!r}; presets go in [preset.NAME] tables"
            )
    tables = doc.get("preset")
    if not isinstance(tables, dict) or not tables:
        raise PresetFormatError(f"{origin}: no presets (expected [preset.NAME] tables)")
    base = builtin_presets() if base is None else base
    out: dict[str, CostPreset] = {}

    def build(name: str, stack: tuple[str, ...]) -> CostPreset:
        if name in out:
            return out[name]
        where = f"{origin}: preset {name!r}"
        table = tables[name]
        if not isinstance(table, dict):
            raise PresetFormatError(f"{where}: expected a table [preset.{name}], got {table!r}")
        for key in table:
            if key not in ALL_KEYS:
                raise PresetFormatError(
                    f"{where}: unknown key {key!r}; known keys: {', '.join(ALL_KEYS)}"
                )
        fields: dict[str, Any] = {}
        parent = table.get("extends")
        if parent is not None:
            if not isinstance(parent, str):
                raise PresetFormatError(f"{where}: key 'extends': expected a name, got {parent!r}")
            if parent in stack or parent == name:
                raise PresetFormatError(f"{where}: key 'extends': cycle {' -> '.join(stack)}")
            if parent in tables:
                root = build(parent, (*stack, parent))
            elif parent in base:
                root = base[parent]
            else:
                known = sorted({*base, *tables} - {name})
                raise PresetFormatError(
                    f"{where}: key 'extends': unknown preset {parent!r}; known: {', '.join(known)}"
                )
            fields = {k: getattr(root, k) for k in (*NUMBER_KEYS, "tlb_kind", *TABLE_KEYS)}
            fields["source"] = f"{origin}: extends {parent}"
        else:
            missing = [k for k in REQUIRED_KEYS if k not in table]
            if missing:
                raise PresetFormatError(
                    f"{where}: missing key {missing[0]!r} (required without 'extends': "
                    f"{', '.join(REQUIRED_KEYS)})"
                )
        for key, value in table.items():
            if key == "extends":
                continue
            if key == "invalidation":
                continue
            if key in NUMBER_KEYS:
                problem = _number_problem(key, value)
            elif key in TEXT_KEYS:
                problem = _text_problem(key, value)
            else:
                problem = _table_problem(value)
            if problem is not None:
                raise PresetFormatError(f"{where}: key {key!r}: {problem}")
            fields[key] = value
        if "invalidation" in table:
            try:
                fields["invalidation"] = rule_of_table(
                    table["invalidation"],
                    page_us=float(fields["tlb_page_us"]),
                    flush_us=float(fields["tlb_flush_us"]),
                )
            except PresetFormatError as exc:
                raise PresetFormatError(f"{where}: key 'invalidation': {exc.args[0]}") from None
        try:
            preset = CostPreset(name=name, **fields)
        except PresetFormatError as exc:
            raise PresetFormatError(f"{origin}: {exc.args[0]}") from None
        out[name] = preset
        return preset

    for name in tables:
        build(name, (name,))
    return {name: out[name] for name in tables}


def load_presets(
    path: str | Path, *, base: Mapping[str, CostPreset] | None = None
) -> dict[str, CostPreset]:
    """Read the presets of a TOML file (see :func:`loads_presets`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PresetError(f"{p}: no such preset file", errno=2) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PresetFormatError(f"{p}: cannot read preset file: {exc}") from None
    return loads_presets(text, origin=str(p), base=base)


@functools.cache
def builtin_presets() -> Mapping[str, CostPreset]:
    """The presets shipped in ``gpuvm/presets/*.toml``, by name, in name order."""
    found: dict[str, CostPreset] = {}
    folder = resources.files("gpuvm").joinpath("presets")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        loaded = loads_presets(entry.read_text(encoding="utf-8"), origin=entry.name, base=found)
        for name, preset in loaded.items():
            if name in found:
                raise PresetFormatError(f"{entry.name}: preset {name!r} defined twice")
            found[name] = preset
    return MappingProxyType(dict(sorted(found.items())))


def all_presets(*paths: str | Path) -> dict[str, CostPreset]:
    """The built-ins plus the presets of each file in turn (a later name shadows an earlier
    one, so a file may redefine a built-in)."""
    out = dict(builtin_presets())
    for path in paths:
        out.update(load_presets(path, base=out))
    return out


def get_preset(name: str, presets: Mapping[str, CostPreset] | None = None) -> CostPreset:
    """The preset called ``name`` among ``presets`` (the built-ins by default); an unknown
    name raises :class:`UnknownPreset` listing the known ones."""
    table = builtin_presets() if presets is None else presets
    try:
        return table[name]
    except (KeyError, TypeError):
        raise UnknownPreset(
            f"unknown cost preset {name!r}; known presets: {', '.join(sorted(table))}"
        ) from None


# --- writing ----------------------------------------------------------------------------


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def dumps_presets(presets: Iterable[CostPreset]) -> str:
    """TOML text that :func:`loads_presets` reads back to equal presets."""
    chunks: list[str] = []
    for p in presets:
        lines = [f"[preset.{p.name}]"]
        lines += [f"{key} = {_toml_str(getattr(p, key))}" for key in TEXT_KEYS]
        lines += [f"{key} = {float(getattr(p, key))!r}" for key in NUMBER_KEYS]
        if p.ioctl_us_by_name:
            lines.append("")
            lines.append(f"[preset.{p.name}.ioctl_us_by_name]")
            lines += [f"{_toml_str(k)} = {float(v)!r}" for k, v in p.ioctl_us_by_name]
        if p.invalidation is not None:
            r = p.invalidation
            lines.append("")
            lines.append(f"[preset.{p.name}.invalidation]")
            lines.append(f"kind = {_toml_str(r.kind)}")
            lines += [
                f"{k} = {float(getattr(r, k))!r}" for k in ("page_us", "range_us", "context_us")
            ]
            lines.append(f"threshold_bytes = {int(r.threshold_bytes)}")
            lines.append(f"threshold_pages = {int(r.threshold_pages)}")
        chunks.append("\n".join(lines) + "\n")
    return "\n".join(chunks)
