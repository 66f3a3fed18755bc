"""The invalidation rule prices real unmaps: the cost counters keep the sizes of the TLB
invalidations (a bounded histogram per VM kind and page size), and a preset's optional
invalidation rule (per page / range / whole context, with arm-smmu's size threshold) prices
them.  The SM8150 figures of the arm-smmu change: a 32 MiB unmap 1033 us before, 52 us
after."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuvm import GemObject, GpuVm
from gpuvm.core.events import EventBus, FrameEnd
from gpuvm.observe.costs import CostCounters, Counts, PresetFormatError, get_preset
from gpuvm.observe.costs.counts import MAX_EXACT_TLB_SIZES, size_bucket
from gpuvm.observe.costs.presets import dumps_presets, loads_presets, rule_us
from gpuvm.observe.timeline import InvalidationRule

MIB = 1 << 20


class KmsVm(GpuVm):
    """A VM that declares per-page invalidation (an ordinary IOMMU domain)."""

    tlb_kind = "per_page"


def unmap_counts(size: int, page_size: int = 4096, vm_cls: type[GpuVm] = KmsVm) -> Counts:
    """The counts of mapping then unmapping one ``size`` buffer on a fresh VM (the unmap
    alone: map counts subtracted)."""
    bus = EventBus()
    vm = vm_cls(0, 1 << 40, name="vm", bus=bus)
    counters = CostCounters(bus, page_size=page_size)
    obj = GemObject(size, name="bo", bus=bus)
    vm.map(0, size, obj, 0)
    mapped = counters.total()
    vm.unmap(0, size)
    return counters.total() - mapped


def unmap_us(preset: str, c: Counts) -> float:
    b = get_preset(preset).breakdown(c)
    return (b.unmap_ms + b.tlb_ms) * 1000.0


def test_counters_keep_the_size_of_each_invalidation() -> None:
    c = unmap_counts(32 * MIB)
    assert c.tlb_range_invalidations == 1 and c.tlb_range_pages == 8192
    assert c.tlb_sizes == (("per_page", 4096, 8192, 8192, 1, 8192),)
    flush = unmap_counts(32 * MIB, vm_cls=GpuVm)
    assert flush.tlb_sizes == (("context_flush", 4096, 8192, 8192, 1, 8192),)
    assert c.as_dict()["tlb_sizes"] == [["per_page", 4096, 8192, 8192, 1, 8192]]


def test_32mib_unmap_sm8150_before_and_after() -> None:
    """The figures the arm-smmu change quotes (tlb.py, docs/timeline.md): 1033 us per page,
    52 us with the whole-context flush, for the same model unmap."""
    c = unmap_counts(32 * MIB)
    before = unmap_us("sm8150-smmu-before", c)
    after = unmap_us("sm8150-smmu-after", c)
    # 1.8 + 8192 x 6 ns + 8192 x 0.12 us = 1033.99 us (measured 1033.364)
    assert before == pytest.approx(1033.992, abs=1e-3)
    # 1.8 + 8192 x 6 ns + 2.6 us = 53.55 us (measured 51.797)
    assert after == pytest.approx(53.552, abs=1e-3)
    # The same whatever the VM declared: the rule prices every recorded invalidation.
    flush = unmap_counts(32 * MIB, vm_cls=GpuVm)
    assert unmap_us("sm8150-smmu-before", flush) == pytest.approx(before)
    assert unmap_us("sm8150-smmu-after", flush) == pytest.approx(after)


@pytest.mark.parametrize(
    ("page_size", "pages", "after_us"),
    [(4096, 8192, 2.6), (65536, 512, 2.6), (2 * MIB, 16, 16 * 0.12)],
)
def test_page_size_changes_the_per_page_count(page_size: int, pages: int, after_us: float) -> None:
    c = unmap_counts(32 * MIB, page_size)
    assert c.tlb_sizes == (("per_page", page_size, pages, pages, 1, pages),)
    tlb_us = get_preset("sm8150-smmu-before").breakdown(c).tlb_ms * 1000
    assert tlb_us == pytest.approx(pages * 0.12)
    # After the change the whole-context flush replaces the walk flush of a freed table
    # (512 entries or more); 16 leaf blocks of 2 MiB keep one TLBIVA each.
    assert get_preset("sm8150-smmu-after").breakdown(c).tlb_ms * 1000 == pytest.approx(after_us)


def test_threshold_splits_small_and_large_unmaps() -> None:
    """sm8150-smmu-after: below 512 entries (2 MiB of 4 KiB pages) the TLBIVAs stay per
    page, from 512 one TLBIASID."""
    after = get_preset("sm8150-smmu-after")
    small = unmap_counts(MIB)  # 256 pages
    assert after.breakdown(small).tlb_ms * 1000 == pytest.approx(256 * 0.12)
    edge = unmap_counts(2 * MIB - 4096)  # 511 pages: still per page
    assert after.breakdown(edge).tlb_ms * 1000 == pytest.approx(511 * 0.12)
    large = unmap_counts(2 * MIB)
    assert after.breakdown(large).tlb_ms * 1000 == pytest.approx(2.6)
    # The old single-kind pricing charged both as one 2.6 us flush.
    plain = attrs.evolve(after, invalidation=None)
    assert plain.breakdown(small).tlb_ms * 1000 == pytest.approx(2.6)


def test_histogram_is_bounded_and_keeps_exact_pages() -> None:
    bus = EventBus()
    vm = KmsVm(0, 1 << 40, name="vm", bus=bus)
    counters = CostCounters(bus)
    sizes = list(range(1, 3 * MAX_EXACT_TLB_SIZES + 1))
    addr = 0
    for n in sizes:
        obj = GemObject(n * 4096, name=f"bo{n}", bus=bus)
        vm.map(addr, n * 4096, obj, 0)
        vm.unmap(addr, n * 4096)
        addr += n * 4096
    c = counters.total()
    assert c.tlb_range_invalidations == len(sizes)
    assert sum(row[4] for row in c.tlb_sizes) == len(sizes)
    assert sum(row[5] for row in c.tlb_sizes) == sum(sizes) == c.tlb_range_pages
    exact = [row for row in c.tlb_sizes if row[2] == row[3]]
    buckets = [row for row in c.tlb_sizes if row[2] != row[3]]
    assert len(exact) == MAX_EXACT_TLB_SIZES
    assert len(buckets) <= max(sizes).bit_length()
    for _kind, _ps, lo, hi, _inv, _pages in buckets:
        assert size_bucket(lo) == (lo, hi) == size_bucket(hi)
    # Per-page pricing of buckets is exact: their pages are kept, not their bounds.
    rule = InvalidationRule(kind="per_page", page_us=1.0)
    assert rule_us(rule, c.tlb_sizes) == pytest.approx(sum(sizes))
    # Frames and device totals agree with the per-VM histogram.
    assert counters.vm(vm).tlb_sizes == c.tlb_sizes


def test_counts_arithmetic_keeps_the_histogram() -> None:
    a = unmap_counts(32 * MIB)
    b = unmap_counts(MIB)
    both = a + b
    assert both.tlb_sizes == (
        ("per_page", 4096, 256, 256, 1, 256),
        ("per_page", 4096, 8192, 8192, 1, 8192),
    )
    assert Counts.sum([a, b, a]).tlb_sizes[1] == ("per_page", 4096, 8192, 8192, 2, 16384)
    assert both - b == a


def test_counts_without_sizes_fall_back_to_tlb_kind() -> None:
    """Counts built by hand (no histogram) are priced as before the rule existed."""
    c = Counts(unmap_ops=1, pages_unmapped=8192, tlb_range_invalidations=1, tlb_range_pages=8192)
    after = get_preset("sm8150-smmu-after")  # tlb_kind context_flush
    assert after.breakdown(c).tlb_ms * 1000 == pytest.approx(2.6)
    before = get_preset("sm8150-smmu-before")  # tlb_kind per_page
    assert before.breakdown(c).tlb_ms * 1000 == pytest.approx(8192 * 0.12)


def test_rule_reproduces_the_old_pricing_of_scanout_unmaps() -> None:
    """For 1080p scanout buffers (2025 pages, above the threshold) each preset's rule gives
    what its single tlb_kind gave, so the study's numbers for them do not move."""
    c = unmap_counts(8_294_400) + unmap_counts(8_294_400, vm_cls=GpuVm)
    for name in ("sm8150-smmu-before", "sm8150-smmu-after", "vtd", "nvidia-cuda-vmm-h200"):
        p = get_preset(name)
        assert p.invalidation is not None
        plain = attrs.evolve(p, invalidation=None)
        assert p.breakdown(c) == attrs.evolve(plain.breakdown(c), preset=p.name), name


def test_preset_toml_invalidation_table() -> None:
    text = """
[preset.mine]
extends = "sm8150-smmu-after"

[preset.ranged]
extends = "default"
tlb_flush_us = 7.0

[preset.ranged.invalidation]
kind = "range"
threshold_bytes = 1048576
"""
    got = loads_presets(text)
    assert got["mine"].invalidation == get_preset("sm8150-smmu-after").invalidation
    rule = got["ranged"].invalidation
    assert rule == InvalidationRule(
        kind="range", page_us=2.5, range_us=7.0, context_us=7.0, threshold_bytes=1048576
    )
    assert rule.pages_us(256, 4096) == 7.0 and rule.pages_us(257, 4096) == 7.0  # context = 7
    assert InvalidationRule(threshold_pages=4).pages_us(4, 4096) == 4 * 2.5
    again = loads_presets(dumps_presets(got.values()))
    assert again == {k: attrs.evolve(v) for k, v in got.items()}


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ('kind = "bogus"', "'kind'"),
        ("page_us = 1.0", "'kind'"),
        ('kind = "range"\nrange_us = -1.0', "'range_us'"),
        ('kind = "range"\nthreshold_bytes = 1.5', "'threshold_bytes'"),
        ('kind = "range"\nthreshold_pages = -1', "'threshold_pages'"),
        ('kind = "range"\nfoo = 1', "unknown key 'foo'"),
    ],
)
def test_bad_invalidation_table(table: str, needle: str) -> None:
    text = f'[preset.bad]\nextends = "default"\n\n[preset.bad.invalidation]\n{table}\n'
    with pytest.raises(PresetFormatError) as info:
        loads_presets(text, origin="mine.toml")
    msg = str(info.value)
    assert "mine.toml" in msg and "'bad'" in msg and "'invalidation'" in msg and needle in msg


def test_docs_worked_example_prints_what_the_text_says() -> None:
    """docs/costs.md's 32 MiB SM8150 unmap: the block's printed lines are its comments,
    and the hand calculation in the text gives the same numbers."""
    import contextlib
    import io
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "costs.md").read_text()
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", doc, flags=re.S) if "sm8150" in b]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/costs.md", "exec"), {})
    shown = [line.removeprefix("# ") for line in code.splitlines() if line.startswith("# ")]
    assert out.getvalue().splitlines() == shown
    assert "**1033.992 µs**" in doc and "**53.552 µs**" in doc
    # The text's hand calculation, from the presets' own terms.
    before, after = get_preset("sm8150-smmu-before"), get_preset("sm8150-smmu-after")
    assert before.invalidation is not None and after.invalidation is not None
    pte = before.unmap_fixed_us + 8192 * before.unmap_page_ns / 1000
    assert round(pte + 8192 * before.invalidation.page_us, 3) == 1033.992
    assert after.invalidation.threshold_pages == 511 < 8192
    assert round(pte + after.invalidation.context_us, 3) == 53.552


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([4096, 65536]), st.integers(1, 300), st.booleans()),
        min_size=1,
        max_size=40,
    )
)
def test_histogram_agrees_with_the_totals(unmaps: list[tuple[int, int, bool]]) -> None:
    """Whatever the mix of page sizes, sizes and frame boundaries: the histogram's
    invalidations and pages add up to the totals, per frame and in sum."""
    bus = EventBus()
    vms = {ps: KmsVm(0, 1 << 44, name=f"vm{ps}", bus=bus) for ps in (4096, 65536)}
    counters = CostCounters(bus)
    for ps, vm in vms.items():
        counters.configure_vm(vm, page_size=ps)
    addr = 0
    for k, (ps, n, end_frame) in enumerate(unmaps):
        size = n * 4096
        vms[ps].map(addr, size, GemObject(size, name="b", bus=bus), 0)
        vms[ps].unmap(addr, size)
        addr += size + (-size % 65536)
        if end_frame:
            bus.emit(FrameEnd(k))
    for c in [counters.total(), *counters.frames, counters.frames_sum()]:
        assert sum(r[4] for r in c.tlb_sizes) == c.tlb_range_invalidations
        assert sum(r[5] for r in c.tlb_sizes) == c.tlb_range_pages
        rule = InvalidationRule(kind="per_page", page_us=1.0)
        assert rule_us(rule, c.tlb_sizes) == pytest.approx(c.tlb_range_pages)
    assert counters.frames_sum().tlb_sizes == Counts.sum(counters.frames).tlb_sizes
