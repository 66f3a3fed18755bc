"""The frozen record of what a scope cost in operations: :class:`Counts`.

A :class:`Counts` is what cost counters hand out (per VM, per device, per frame) and what a
:class:`~gpuvm.observe.costs.presets.CostPreset` turns into milliseconds.  It holds counts only,
never times, so one recorded run can be priced under any number of presets.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

import attrs

from gpuvm.observe.costs.errors import FrameScopeError

TlbSizeRow = tuple[str, int, int, int, int, int]
"""One row of :attr:`Counts.tlb_sizes`: ``(vm_kind, page_size, lo_pages, hi_pages,
invalidations, pages)``."""

MAX_EXACT_TLB_SIZES: Final = 64
"""Distinct invalidation sizes kept exactly per (VM kind, page size); further sizes are
kept in power-of-two buckets, so the histogram stays bounded whatever the workload."""

TlbKind = Literal["per_page", "context_flush"]
"""How a VM's TLB is invalidated: one range invalidation per page (an ordinary IOMMU
domain such as the msm KMS VM) or one whole-context flush per invalidation (per-process
page tables, most GPU MMUs)."""

TLB_KINDS: Final[tuple[str, ...]] = ("per_page", "context_flush")
DEFAULT_TLB_KIND: Final = "context_flush"
DEFAULT_PAGE_SIZE: Final = 4096

INT_FIELDS: Final[tuple[str, ...]] = (
    "map_ops",
    "unmap_ops",
    "pages_mapped",
    "pages_unmapped",
    "bytes_mapped",
    "bytes_unmapped",
    "tlb_range_invalidations",
    "tlb_range_pages",
    "tlb_flushes",
    "tlb_flush_pages",
    "vmas_created",
    "vmas_destroyed",
    "migrations",
    "bytes_migrated",
    "ioctls",
    "frames",
)
"""The integer fields of :class:`Counts`, in order (the counters' accumulator layout)."""

# Accumulator slots (indices into INT_FIELDS), used by the counters' hot path.
MAP_OPS, UNMAP_OPS, PAGES_MAPPED, PAGES_UNMAPPED, BYTES_MAPPED, BYTES_UNMAPPED = range(6)
TLB_RANGE, TLB_RANGE_PAGES, TLB_FLUSH, TLB_FLUSH_PAGES = range(6, 10)
VMAS_CREATED, VMAS_DESTROYED, MIGRATIONS, BYTES_MIGRATED, IOCTLS, FRAMES = range(10, 16)


def pages_touched(addr: int, range_: int, page_size: int) -> int:
    """Page-table entries of size ``page_size`` that ``[addr, addr+range_)`` touches (a
    range that is not page-aligned touches its partial first and last pages)."""
    return (addr + range_ + page_size - 1) // page_size - addr // page_size


@attrs.frozen(slots=True)
class Counts:
    """Operation counts of one scope (a VM, a device, a frame, or a sum of frames).

    * ``map_ops`` / ``unmap_ops``: calls into the page-table code, one per ``Mapped`` /
      ``Unmapped`` event (a MAP whose middle is kept is two map calls, one per run written).
    * ``pages_mapped`` / ``pages_unmapped``: page-table entries written / cleared, each in
      its VM's page size (a 2 MiB block is one entry); ``pages_by_size`` splits them as
      ``(page_size, mapped, unmapped)`` rows; ``bytes_*`` are the byte ranges.
    * ``tlb_range_invalidations`` / ``tlb_range_pages``: ``TlbInvalidated`` events on
      ``per_page`` VMs and the pages they cover; ``tlb_flushes`` / ``tlb_flush_pages``:
      the same on ``context_flush`` VMs.  Keeping the pages of flushes lets a preset re-price
      them as per-page invalidations without rerunning the model.
    * ``vmas_created`` / ``vmas_destroyed``, ``migrations`` / ``bytes_migrated``,
      ``ioctls`` (split by name in ``ioctls_by_name``).
    * ``frames``: frames the scope spans (1 for one frame record, N for a sum of N).
    * ``tlb_sizes``: the sizes of the TLB invalidations, what a preset's invalidation rule
      needs to apply a size threshold: rows ``(vm_kind, page_size, lo_pages, hi_pages,
      invalidations, pages)`` sorted, where each of ``invalidations`` covered between
      ``lo_pages`` and ``hi_pages`` entries of ``page_size`` (``lo == hi``: that exact
      size; a bucket ``(2**(k-1), 2**k]`` once more than :data:`MAX_EXACT_TLB_SIZES`
      distinct sizes were seen) and ``pages`` is their total.  ``vm_kind`` is the VM's
      declared kind (``per_page`` or ``context_flush``).
    """

    map_ops: int = 0
    unmap_ops: int = 0
    pages_mapped: int = 0
    pages_unmapped: int = 0
    bytes_mapped: int = 0
    bytes_unmapped: int = 0
    tlb_range_invalidations: int = 0
    tlb_range_pages: int = 0
    tlb_flushes: int = 0
    tlb_flush_pages: int = 0
    vmas_created: int = 0
    vmas_destroyed: int = 0
    migrations: int = 0
    bytes_migrated: int = 0
    ioctls: int = 0
    frames: int = 0
    pages_by_size: tuple[tuple[int, int, int], ...] = ()
    ioctls_by_name: tuple[tuple[str, int], ...] = ()
    tlb_sizes: tuple[TlbSizeRow, ...] = ()

    # --- derived -----------------------------------------------------------------------

    @property
    def tlb_invalidations(self) -> int:
        """Every TLB invalidation, range and flush together."""
        return self.tlb_range_invalidations + self.tlb_flushes

    @property
    def tlb_pages(self) -> int:
        """Pages covered by every TLB invalidation."""
        return self.tlb_range_pages + self.tlb_flush_pages

    def pages_for_size(self, page_size: int) -> tuple[int, int]:
        """``(mapped, unmapped)`` entries of one page size."""
        for size, mapped, unmapped in self.pages_by_size:
            if size == page_size:
                return mapped, unmapped
        return 0, 0

    def ints(self) -> tuple[int, ...]:
        """The integer fields in :data:`INT_FIELDS` order."""
        return tuple(getattr(self, f) for f in INT_FIELDS)

    # --- arithmetic --------------------------------------------------------------------

    def __add__(self, other: Counts) -> Counts:
        if not isinstance(other, Counts):
            return NotImplemented
        return _combine(self, other, 1)

    def __sub__(self, other: Counts) -> Counts:
        if not isinstance(other, Counts):
            return NotImplemented
        return _combine(self, other, -1)

    @classmethod
    def sum(cls, items: Iterable[Counts]) -> Counts:
        """The sum of ``items`` (``frames`` adds up, so a sum of N frame records spans N)."""
        n = [0] * len(INT_FIELDS)
        by_size: dict[int, list[int]] = {}
        names: dict[str, int] = {}
        sizes: dict[tuple[str, int, int, int], list[int]] = {}
        for c in items:
            for i, f in enumerate(INT_FIELDS):
                n[i] += getattr(c, f)
            for size, m, u in c.pages_by_size:
                cell = by_size.setdefault(size, [0, 0])
                cell[0] += m
                cell[1] += u
            for name, k in c.ioctls_by_name:
                names[name] = names.get(name, 0) + k
            _add_sizes(sizes, c.tlb_sizes, 1)
        return from_parts(n, by_size, names, sizes)

    def per_frame(self) -> dict[str, float]:
        """Every integer field (and the TLB totals) divided by ``frames``: the per-flip
        averages a study reports.  Counts spanning no frame are refused."""
        if self.frames <= 0:
            raise FrameScopeError("per-frame averages of counts that span no frame")
        out = {f: getattr(self, f) / self.frames for f in INT_FIELDS if f != "frames"}
        out["tlb_invalidations"] = self.tlb_invalidations / self.frames
        out["tlb_pages"] = self.tlb_pages / self.frames
        return out

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict with a fixed key order (deterministic output)."""
        out: dict[str, object] = {f: getattr(self, f) for f in INT_FIELDS}
        out["tlb_invalidations"] = self.tlb_invalidations
        out["pages_by_size"] = {
            str(size): {"mapped": m, "unmapped": u} for size, m, u in self.pages_by_size
        }
        out["ioctls_by_name"] = dict(self.ioctls_by_name)
        out["tlb_sizes"] = [list(row) for row in self.tlb_sizes]
        return out


ZERO: Final = Counts()


def from_parts(
    n: list[int],
    by_size: dict[int, list[int]],
    names: dict[str, int],
    sizes: dict[tuple[str, int, int, int], list[int]] | None = None,
) -> Counts:
    """Build a :class:`Counts` from an accumulator layout (zero rows dropped, rows sorted).
    ``sizes`` maps ``(vm_kind, page_size, lo_pages, hi_pages)`` to ``[invalidations,
    pages]``."""
    return Counts(
        *n,  # type: ignore[arg-type, misc]
        pages_by_size=tuple(
            (size, cell[0], cell[1]) for size, cell in sorted(by_size.items()) if cell[0] or cell[1]
        ),
        ioctls_by_name=tuple((k, v) for k, v in sorted(names.items()) if v),
        tlb_sizes=tuple(
            (*key, cell[0], cell[1]) for key, cell in sorted((sizes or {}).items()) if cell[0]
        ),
    )


def _add_sizes(
    sizes: dict[tuple[str, int, int, int], list[int]], rows: Iterable[TlbSizeRow], sign: int
) -> None:
    for kind, ps, lo, hi, inv, pages in rows:
        cell = sizes.setdefault((kind, ps, lo, hi), [0, 0])
        cell[0] += sign * inv
        cell[1] += sign * pages


def size_bucket(pages: int) -> tuple[int, int]:
    """The power-of-two bucket ``(lo, hi)`` (``lo = 2**(k-1) + 1``, ``hi = 2**k``) that
    holds an invalidation of ``pages`` entries (``(n, n)`` for ``n <= 1``)."""
    if pages <= 1:
        return pages, pages
    hi = 1 << (pages - 1).bit_length()
    return hi // 2 + 1, hi


def _combine(a: Counts, b: Counts, sign: int) -> Counts:
    n = [x + sign * y for x, y in zip(a.ints(), b.ints(), strict=True)]
    by_size: dict[int, list[int]] = {s: [m, u] for s, m, u in a.pages_by_size}
    for size, m, u in b.pages_by_size:
        cell = by_size.setdefault(size, [0, 0])
        cell[0] += sign * m
        cell[1] += sign * u
    names = dict(a.ioctls_by_name)
    for name, k in b.ioctls_by_name:
        names[name] = names.get(name, 0) + sign * k
    sizes: dict[tuple[str, int, int, int], list[int]] = {}
    _add_sizes(sizes, a.tlb_sizes, 1)
    _add_sizes(sizes, b.tlb_sizes, sign)
    return from_parts(n, by_size, names, sizes)
