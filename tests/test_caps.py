"""Device capabilities, p2p topology, reachability and the choose_backing solver."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from gpuvm.core.errors import InvalidValue
from gpuvm.drm.caps import (
    DEFAULT_MAX_PHYS,
    EXPORTERS,
    Attacher,
    BackingChoice,
    DeviceCaps,
    ImportPaths,
    Topology,
    Unsat,
    amdgpu_dgpu,
    bochs,
    choose_backing,
    i915_igpu,
    qxl,
    reachable,
    soc_display,
    xe_igpu,
)
from gpuvm.drm.placement import (
    AMDGPU_EVICTION,
    KIB,
    MIB,
    PAGE_SIZE,
    Domain,
    MemoryManager,
    Place,
    PlaceFlags,
)

VRAM, TT, SYSTEM = Domain.VRAM, Domain.TT, Domain.SYSTEM
SCANOUT = 33_177_600
MASK32 = (1 << 32) - 1


def dev(name: str, **kw: Any) -> DeviceCaps:
    base = DeviceCaps(name, "test", domains={SYSTEM, TT}, scanout_domains=set())
    return attrs.evolve(base, **kw)


# --- caps values ----------------------------------------------------------------------------


def test_caps_are_frozen_and_validated() -> None:
    d = amdgpu_dgpu()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        d.dma_mask = 0  # type: ignore[misc]
    with pytest.raises(InvalidValue, match="scanout"):
        DeviceCaps("x", "t", domains={SYSTEM}, scanout_domains={VRAM})
    with pytest.raises(InvalidValue):
        dev("x", dma_mask=-1)
    with pytest.raises(InvalidValue):
        dev("x", max_segment_size=0)
    with pytest.raises(InvalidValue):
        dev("x", max_segment_count=0)
    with pytest.raises(InvalidValue, match="power of two"):
        dev("x", iommu_page_sizes=frozenset({4096, 12288}))
    with pytest.raises(InvalidValue):
        DeviceCaps("x", "t", domains={7}, scanout_domains=set())


def test_presets_and_import_paths() -> None:
    assert bochs().vram_only and qxl().vram_only and qxl().driver == "qxl"
    assert not amdgpu_dgpu().vram_only and not soc_display().vram_only
    assert bochs().import_mode(self_import=True) == "self"
    assert bochs().import_mode(self_import=False) is None  # no sg-table import hook
    assert bochs().exporter is None
    assert i915_igpu().import_mode(False) == "static"
    assert xe_igpu().import_mode(False) == "dynamic"
    assert amdgpu_dgpu().import_mode(False) == "dynamic"
    assert soc_display().maps_at_import and soc_display().needs_contiguous
    assert dev("x", import_paths=ImportPaths.NONE).import_mode(True) is None
    assert amdgpu_dgpu().scanout_domains == {VRAM}
    assert VRAM not in i915_igpu().domains and i915_igpu().integrated


def test_exporter_flavours_as_data() -> None:
    assert set(EXPORTERS) == {"amdgpu", "xe", "i915", "gem-shmem", "gem-dma"}
    amd = EXPORTERS["amdgpu"]
    assert amd.eviction_table() == dict(AMDGPU_EVICTION)
    assert (amd.pin_all_p2p, amd.pin_otherwise, amd.map_non_p2p) == (VRAM, TT, TT)
    assert not amd.repromote_while_attached and not amd.notify_from_system
    assert amd.imported_pin_domains == {TT}
    assert EXPORTERS["xe"].refuses_non_system and EXPORTERS["i915"].pins_at_attach
    assert EXPORTERS["gem-dma"].contiguous_backing and not EXPORTERS["gem-shmem"].dynamic
    for rules in EXPORTERS.values():  # every eviction table drives a manager
        m = MemoryManager(vram=10, tt=10, system=10, eviction=rules.eviction_table())
        m.check_invariants()


# --- topology -------------------------------------------------------------------------------


def test_topology_paths() -> None:
    t = Topology(host_bridge_p2p={"rc1"})
    d0, d1, d2, d3, d4 = (amdgpu_dgpu(f"d{i}") for i in range(5))
    t.add(d0, root="rc0", switch="sw0", hive="h")
    t.add(d1, root="rc0", switch="sw0")
    t.add(d2, root="rc9", hive="h")
    t.add(d3, root="rc0")
    t.add("igpu")
    t.add(d4, root="rc1")
    t.add("d5", root="rc1")
    assert t.path(d0, d0) == "self"
    assert t.path(d0, d2) == "xgmi" and t.path(d2, d0) == "xgmi"
    assert t.path(d0, d1) == "pci-switch"
    assert t.path(d0, d3) is None  # same root, host bridge does not forward p2p
    assert t.path(d4, "d5") == "pci-host-bridge"
    assert t.path("igpu", d0) is None and not t.p2p(d1, d2)
    with pytest.raises(InvalidValue):
        t.add(d0)
    with pytest.raises(InvalidValue):
        t.path(d0, "nope")
    with pytest.raises(InvalidValue):
        t.add("x", switch="sw")
    t.check_invariants()


# --- reachable ------------------------------------------------------------------------------


def test_reachable_rules() -> None:
    ast = dev("ast", dma_mask=MASK32)
    assert reachable(ast, VRAM, True) and not reachable(amdgpu_dgpu(), VRAM, False)
    assert not reachable(ast, TT, False)  # RAM reaches past 4 GiB
    assert reachable(ast, TT, False, max_phys=MASK32)
    assert not reachable(ast, SYSTEM, False, max_phys=MASK32 + 1)
    mmu = attrs.evolve(ast, has_iommu=True, needs_contiguous=True)
    assert reachable(mmu, TT, False)  # the IOMMU hides both limits
    disp = soc_display()
    assert not reachable(disp, SYSTEM, False, max_phys=MASK32)
    assert reachable(disp, SYSTEM, False, max_phys=MASK32, contiguous=True)
    assert reachable(amdgpu_dgpu(), TT, False, max_phys=DEFAULT_MAX_PHYS)


# --- choose_backing -------------------------------------------------------------------------


def test_all_p2p_keeps_vram() -> None:
    c = choose_backing(
        [Attacher(amdgpu_dgpu("a"), True), Attacher(amdgpu_dgpu("b"), True)],
        [VRAM, TT],
        size=SCANOUT,
    )
    assert isinstance(c, BackingChoice) and c.ok
    assert c.domain == VRAM and c.place == Place(VRAM) and c.max_phys is None


def test_non_p2p_attacher_forces_system_memory() -> None:
    c = choose_backing(
        [Attacher(amdgpu_dgpu(), True), Attacher(i915_igpu())], [VRAM, TT], size=SCANOUT
    )
    assert isinstance(c, BackingChoice)
    assert c.domain == TT and c.place == Place(TT) and not c.contiguous and c.why == ()


def test_non_iommu_32bit_contiguous_importer() -> None:
    c = choose_backing([Attacher(soc_display())], [VRAM, TT], size=SCANOUT)
    assert isinstance(c, BackingChoice)
    assert c.domain == TT and c.contiguous and c.max_phys == MASK32
    assert c.place == Place(TT, PlaceFlags.CONTIGUOUS, lpfn=(1 << 32) // PAGE_SIZE)
    assert any("contiguous" in w for w in c.why) and any("limit" in w for w in c.why)


def test_lowest_dma_mask_wins_among_non_iommu_attachers() -> None:
    a = dev("a", dma_mask=(1 << 34) - 1)
    b = dev("b", dma_mask=MASK32)
    behind_iommu = dev("c", dma_mask=(1 << 24) - 1, has_iommu=True)
    c = choose_backing([Attacher(a), Attacher(b), Attacher(behind_iommu)], [TT], size=SCANOUT)
    assert isinstance(c, BackingChoice) and c.max_phys == MASK32 and "b" in c.why[-1]


def test_segment_limits() -> None:
    small = dev("small", max_segment_size=64 * KIB, max_segment_count=16)
    u = choose_backing([Attacher(small)], [TT], size=SCANOUT)
    assert isinstance(u, Unsat) and not u.ok and "small" in u.reason
    # Each alone fits, but 4 KiB chunks exceed both segment counts: contiguous solves it.
    a = dev("a", max_segment_size=64 * KIB, max_segment_count=2000)
    b = dev("b", max_segment_size=1 * MIB, max_segment_count=40)
    c = choose_backing([Attacher(a), Attacher(b)], [TT], size=SCANOUT)
    assert isinstance(c, BackingChoice) and c.contiguous
    assert sum("segments" in w for w in c.why) == 2
    # Behind an IOMMU segment limits do not constrain the backing.
    c2 = choose_backing([Attacher(attrs.evolve(small, has_iommu=True))], [TT], size=SCANOUT)
    assert isinstance(c2, BackingChoice) and not c2.contiguous


def test_alignment_is_largest_common_iommu_page() -> None:
    a = dev("a", has_iommu=True, iommu_page_sizes=frozenset({4096, 65536, 2 * MIB}))
    b = dev("b", has_iommu=True, iommu_page_sizes=frozenset({4096, 2 * MIB}))
    c = choose_backing([Attacher(a), Attacher(b)], [TT], size=SCANOUT)
    assert isinstance(c, BackingChoice) and c.alignment == 2 * MIB
    c = choose_backing([Attacher(a), Attacher(dev("c"))], [TT], size=SCANOUT)
    assert isinstance(c, BackingChoice) and c.alignment == 2 * MIB  # only IOMMU attachers count


def test_unsat_reasons() -> None:
    u = choose_backing([Attacher(i915_igpu())], [VRAM], size=SCANOUT)
    assert isinstance(u, Unsat) and u.tried == ("VRAM: not peer-to-peer for igpu",)
    tiny = dev("tiny", dma_mask=(1 << 24) - 1)
    u = choose_backing([Attacher(tiny)], [VRAM, TT, SYSTEM], size=SCANOUT)
    assert isinstance(u, Unsat) and len(u.tried) == 3 and "cannot hold" in u.tried[1]
    with pytest.raises(InvalidValue):
        choose_backing([], [TT], size=0)


def test_no_attachments_take_the_first_preference() -> None:
    c = choose_backing([], [VRAM, TT], size=SCANOUT)
    assert isinstance(c, BackingChoice) and c.domain == VRAM and c.alignment == PAGE_SIZE


def test_choice_place_validates_in_a_manager() -> None:
    m = MemoryManager()
    obj = object()
    m.add(obj, VRAM, size=SCANOUT)
    m.validate(obj)
    c = choose_backing([Attacher(soc_display())], [VRAM, TT], size=SCANOUT)
    assert isinstance(c, BackingChoice)
    moves = m.validate(obj, [c.place])
    assert [(mv.src, mv.dst, mv.bytes) for mv in moves] == [(VRAM, TT, SCANOUT)]
    res = m.backing(obj).resource
    assert res is not None and res.compatible(c.place) and res.contiguous
    assert m.validate(obj, [c.place]) == ()
