"""The driver layer's checks check themselves: every ``raise`` of the kernel-managed VM's
``check_invariants`` and its iova checks (``gpuvm/drm/driver.py``), the memory manager's
and a backing's ``check_invariants`` (``gpuvm/drm/placement/manager.py``), the topology's
(``gpuvm/drm/caps.py``), the legacy address space's (``legacy/aspace.py``) and the
sharing-dependent half of ``DmaBuf.check_invariants`` fire on a state corrupted directly
(not through the API), with the precise complaint.  One test per ``raise``, named after it."""

from __future__ import annotations

import pytest
from test_dmabuf_sharing import DGPU2, IGPU, XE, p2p_ops, shared, world

from gpuvm import Device
from gpuvm.core.errors import InvalidValue, NoSpace, RefcountUnderflow, UseAfterFree
from gpuvm.core.gem import GemObject
from gpuvm.drm.caps import DeviceCaps, PciLocation, Topology, choose_backing
from gpuvm.drm.dmabuf import ImporterOps, evict_importer_vms
from gpuvm.drm.driver import Bo, ManagedVa, ManagedVm, Tally
from gpuvm.drm.file import DrmFile
from gpuvm.drm.placement import Backing, Domain, MemoryManager, Place, Resource
from legacy.aspace import AddressSpace, ReservedNode
from legacy.vma import LegacyVma, bo_vmas

P = 4096

# --- driver.py: ManagedVm --------------------------------------------------------------


def _managed(policy: str = "gpuvm_vma_ref") -> tuple[DrmFile, ManagedVm, Bo, ManagedVa]:
    f = Device("msm", policy).open()
    h = f.create_bo(P)
    f.get_iova(h)
    vm = f.vm
    assert isinstance(vm, ManagedVm)
    (va,) = vm.vas
    assert isinstance(va, ManagedVa)
    vm.check_invariants()
    return f, vm, f.bo(h), va


def test_managed_vm_plain_va_is_not_a_vma() -> None:
    f, vm, _, _ = _managed()
    vm.insert(0x200000000, P, f.bo(f.create_bo(P)), 0)  # a bare drm_gpuva, no msm_gem_vma
    with pytest.raises(AssertionError, match=r"in kernel-managed .* is not a VMA"):
        vm.check_invariants()


def test_managed_vm_two_vmas_of_one_buffer() -> None:
    _, vm, bo, _ = _managed()
    vm.new_vma(bo, 0x200000000, P)
    with pytest.raises(AssertionError, match=r"two VMAs of .* in "):
        vm.check_invariants()


def test_managed_vm_pinned_but_unmapped() -> None:
    _, vm, _, va = _managed()
    va.pin_count = 1
    assert not va.mapped
    with pytest.raises(AssertionError, match="pinned but unmapped, or negative pin count"):
        vm.check_invariants()


def test_managed_vm_negative_pin_count() -> None:
    _, vm, _, va = _managed()
    va.mapped = True
    va.pin_count = -1
    with pytest.raises(AssertionError, match="pinned but unmapped, or negative pin count"):
        vm.check_invariants()


def test_managed_vm_vma_buffer_list_disagrees() -> None:
    _, vm, _, _ = _managed()
    vm.bo_owns_vmas = True  # the VMA was made without the legacy trigger: not on the list
    with pytest.raises(AssertionError, match="on its buffer's list: False"):
        vm.check_invariants()


def test_managed_vm_vma_on_buffer_list_without_trigger() -> None:
    _, vm, _, _ = _managed("gpuvm_legacy_trigger")
    vm.bo_owns_vmas = False
    with pytest.raises(AssertionError, match="on its buffer's list: True"):
        vm.check_invariants()


def test_managed_vm_vm_bo_holds_obj_against_weak_refs() -> None:
    _, vm, _, _ = _managed()
    vm.weak_refs = True
    with pytest.raises(AssertionError, match="holds_obj=True in "):
        vm.check_invariants()


def test_managed_vm_close_of_mapped_vma() -> None:
    _, vm, _, va = _managed()
    va.mapped = True
    with pytest.raises(AssertionError, match="close of mapped VMA"):
        vm.close_vma(va)
    assert va in vm.vas and not va.freed


def test_managed_vm_check_iova_occupied() -> None:
    _, vm, _, va = _managed()
    with pytest.raises(NoSpace, match=r"\[0x100000000, \+0x1000\) is not free in"):
        vm.check_iova(va.addr, P)
    vm.check_iova(va.addr + P, P)


def test_managed_vm_check_iova_outside_window() -> None:
    _, vm, _, _ = _managed()
    with pytest.raises(NoSpace, match="is not free in"):
        vm.check_iova(vm.end, P)
    with pytest.raises(NoSpace, match="is not free in"):
        vm.check_iova(vm.start - P, P)


def test_managed_vm_alloc_iova_no_hole() -> None:
    _, vm, _, _ = _managed()
    with pytest.raises(NoSpace, match=r"no hole of .* bytes"):
        vm.alloc_iova(vm.range)
    assert vm.alloc_iova(P) == 0x100001000  # first fit after the VMA


def test_tally_put_by_non_holder() -> None:
    t = Tally()
    t.get("a")
    with pytest.raises(RefcountUnderflow, match="tally put by 'b', which holds nothing"):
        t.put("b")
    assert (t.total, t.holders) == (1, {"a": 1})
    assert t.put("a") == 0 and t.holders == {}
    with pytest.raises(RefcountUnderflow, match="which holds nothing"):
        t.put("a")


# --- placement/manager.py ------------------------------------------------------------------


def _mem() -> tuple[MemoryManager, Backing, Backing]:
    """Two resident unpinned buffers in VRAM, ``a`` used before ``b``."""
    mem = MemoryManager(name="m")
    a, b = GemObject(P, name="a"), GemObject(P, name="b")
    for obj in (a, b):
        mem.add(obj, [Place(Domain.VRAM)])
        mem.validate(obj)
    mem.check_invariants()
    return mem, mem.backing(a), mem.backing(b)


def test_backing_size_not_positive() -> None:
    mem, a, _ = _mem()
    a.size = 0
    with pytest.raises(AssertionError, match="size 0 <= 0"):
        mem.check_invariants()


def test_backing_negative_pin_count() -> None:
    mem, a, _ = _mem()
    a.pin_count = -1
    with pytest.raises(AssertionError, match="pin_count -1 < 0"):
        mem.check_invariants()


def test_backing_pinned_without_backing() -> None:
    mem, a, _ = _mem()
    a.pin_count = 1
    a.resource = None
    with pytest.raises(AssertionError, match="pinned without backing"):
        mem.check_invariants()


def test_backing_filed_under_other_object() -> None:
    mem, a, b = _mem()
    mem._backings[b.obj] = a
    with pytest.raises(AssertionError, match=r"Backing\(a, .* filed under .*b"):
        mem.check_invariants()


def test_manager_accounting_off() -> None:
    mem, _, _ = _mem()
    mem._used[Domain.VRAM] += 1
    with pytest.raises(AssertionError, match=f"VRAM: accounted {2 * P + 1} != resident {2 * P}"):
        mem.check_invariants()


def test_manager_over_capacity() -> None:
    mem, _, _ = _mem()
    mem.capacity = {Domain.SYSTEM: 0, Domain.TT: 0, Domain.VRAM: P}
    with pytest.raises(AssertionError, match=f"VRAM: {2 * P} B over capacity {P}"):
        mem.check_invariants()


def test_manager_lru_not_the_unpinned_residents() -> None:
    mem, a, _ = _mem()
    del mem._lru[Domain.VRAM][a]
    with pytest.raises(AssertionError, match=r"VRAM LRU .* != unpinned residents"):
        mem.check_invariants()


def test_manager_pinned_buffer_on_lru() -> None:
    mem, a, _ = _mem()
    a.pin_count = 1
    with pytest.raises(AssertionError, match=r"VRAM LRU .* != unpinned residents"):
        mem.check_invariants()


def test_manager_lru_out_of_order() -> None:
    mem, a, b = _mem()
    a.last_use, b.last_use = b.last_use, a.last_use
    with pytest.raises(AssertionError, match="VRAM LRU out of order"):
        mem.check_invariants()


def test_manager_lru_equal_stamps() -> None:
    mem, a, b = _mem()
    a.last_use = b.last_use
    with pytest.raises(AssertionError, match="VRAM LRU out of order"):
        mem.check_invariants()


def test_manager_lru_stamp_from_the_future() -> None:
    mem, _, b = _mem()
    b.last_use = mem._tick + 1
    with pytest.raises(AssertionError, match=f"VRAM LRU stamp {mem._tick + 1} > tick"):
        mem.check_invariants()
    b.last_use = mem._tick
    mem.check_invariants()


# --- caps.py: the topology and the capability validators -----------------------------------


def test_topology_switch_without_root() -> None:
    topo = Topology()
    topo.add("gpu", root="pci0", switch="sw0")
    topo.check_invariants()
    topo.locations["bad"] = PciLocation(None, "sw0", None)
    with pytest.raises(AssertionError, match="bad: switch sw0 without a root complex"):
        topo.check_invariants()


def test_topology_add_twice() -> None:
    topo = Topology()
    topo.add("gpu", root="pci0")
    with pytest.raises(InvalidValue, match="'gpu' is already in the topology"):
        topo.add("gpu", root="pci1")
    assert topo.locations == {"gpu": PciLocation("pci0")}


def test_topology_add_switch_without_root() -> None:
    topo = Topology()
    with pytest.raises(InvalidValue, match="a PCIe switch needs a root complex"):
        topo.add("gpu", switch="sw0")
    assert topo.locations == {}


def test_topology_unknown_device() -> None:
    topo = Topology()
    topo.add("gpu", root="pci0")
    with pytest.raises(InvalidValue, match="'other' is not in the topology"):
        topo.path("gpu", "other")
    with pytest.raises(InvalidValue, match="'other' is not in the topology"):
        topo.path("other", "gpu")


def _caps(**kw: object) -> DeviceCaps:
    args: dict[str, object] = {
        "name": "d",
        "driver": "x",
        "domains": [Domain.SYSTEM, Domain.TT],
        "scanout_domains": [Domain.TT],
    }
    args.update(kw)
    return DeviceCaps(**args)  # type: ignore[arg-type]


def test_caps_not_memory_domains() -> None:
    with pytest.raises(InvalidValue, match="not memory domains"):
        _caps(domains=[99])


def test_caps_segment_size_must_be_positive() -> None:
    with pytest.raises(InvalidValue, match="max_segment_size must be positive"):
        _caps(max_segment_size=0)
    with pytest.raises(InvalidValue, match="max_segment_size must be positive"):
        _caps(max_segment_count=0)
    assert _caps(max_segment_size=1, max_segment_count=1).max_segment_count == 1


def test_caps_scanout_outside_domains() -> None:
    with pytest.raises(InvalidValue, match="d: scanout domains outside the device's domains"):
        _caps(scanout_domains=[Domain.VRAM])


def test_caps_iommu_page_size_not_power_of_two() -> None:
    with pytest.raises(InvalidValue, match="IOMMU page size 12288 not a power of two"):
        _caps(iommu_page_sizes=frozenset({4096, 12288}))
    with pytest.raises(InvalidValue, match="IOMMU page size 0 not a power of two"):
        _caps(iommu_page_sizes=frozenset({0}))
    assert _caps(iommu_page_sizes=frozenset({1, 4096})).iommu_page_sizes == {1, 4096}


def test_choose_backing_zero_size() -> None:
    with pytest.raises(InvalidValue, match="choose_backing of a zero-size buffer"):
        choose_backing([], [Domain.TT], size=0)


# --- legacy/aspace.py ----------------------------------------------------------------------


def _aspace() -> tuple[AddressSpace, GemObject, LegacyVma]:
    asp = AddressSpace(0x10000, 0x100000, 0x10000, 0x1000, name="as")
    obj = GemObject(P, name="o")
    vma = asp.new_vma(obj, asp.alloc_iova(P), P)
    asp.check_invariants()
    return asp, obj, vma


def test_aspace_alignment_not_power_of_two() -> None:
    for bad in (0, -4096, 3 * 4096, True, 4096.0):
        with pytest.raises(InvalidValue, match="alignment must be a power of two"):
            AddressSpace(0, 0x100000, align=bad)  # type: ignore[arg-type]
    asp, _, _ = _aspace()
    with pytest.raises(InvalidValue, match="alignment must be a power of two, got 12288"):
        asp.alloc_iova(P, align=3 * P)
    assert AddressSpace(0, 0x100000, align=1).align == 1


def test_aspace_window_overflows() -> None:
    from gpuvm.core.errors import InitOverflow

    with pytest.raises(InitOverflow, match="window or reserved range overflows u64"):
        AddressSpace(1 << 63, 1 << 63)
    with pytest.raises(InitOverflow, match="window or reserved range overflows u64"):
        AddressSpace(0, P, (1 << 64) - P, P)
    AddressSpace((1 << 64) - 2 * P, P)  # ends one page below 2**64


def test_aspace_use_after_free() -> None:
    asp = AddressSpace(0, 0x100000, name="as")
    asp.put()
    assert asp.freed
    with pytest.raises(UseAfterFree, match=r"alloc_iova on freed AddressSpace\(as\)"):
        asp.alloc_iova(P)
    with pytest.raises(UseAfterFree, match="check_iova on freed"):
        asp.check_iova(0, P)


def test_aspace_no_hole() -> None:
    asp, _, _ = _aspace()
    with pytest.raises(NoSpace, match="no hole of 0x100000 bytes"):
        asp.alloc_iova(0x100000)


def test_aspace_iova_not_aligned() -> None:
    asp, _, vma = _aspace()
    with pytest.raises(InvalidValue, match=f"iova {vma.addr + 1 + P:#x} is not aligned to 0x1000"):
        asp.check_iova(vma.addr + P + 1, P)


def test_aspace_iova_outside_window() -> None:
    asp, _, _ = _aspace()
    for addr in (0, asp.end, 0x10000):  # below, past, reserved
        with pytest.raises(NoSpace, match="is outside as's usable window"):
            asp.check_iova(addr, P)
    with pytest.raises(NoSpace, match="is outside as's usable window"):
        asp.check_iova(asp.end - P, 2 * P)  # straddles the end


def test_aspace_iova_occupied() -> None:
    asp, _, vma = _aspace()
    with pytest.raises(NoSpace, match="is occupied by"):
        asp.check_iova(vma.addr, P)
    with pytest.raises(NoSpace, match="is occupied by"):
        asp.check_iova(vma.addr, 2 * P)  # starts inside it
    asp.check_iova(vma.addr + P, P)


def test_aspace_second_vma_of_buffer() -> None:
    asp, obj, vma = _aspace()
    with pytest.raises(AssertionError, match="already has a VMA in as"):
        asp.new_vma(obj, vma.addr + P, P)
    assert asp.vmas == [vma]


def test_aspace_close_of_mapped_vma() -> None:
    asp, _, vma = _aspace()
    asp.map_vma(vma)
    with pytest.raises(AssertionError, match="close of mapped"):
        asp.close_vma(vma)
    assert asp.vmas == [vma] and not vma.closed


def test_aspace_released_with_vmas_left() -> None:
    asp, _, _ = _aspace()
    asp.refs.holders.clear()
    asp.refs.total = 1
    asp.refs.holders["x"] = 1
    with pytest.raises(AssertionError, match="as released with VMAs left"):
        asp.put("x")


def test_aspace_stray_reserved_node() -> None:
    asp, _, _ = _aspace()
    asp.index.add(ReservedNode(0x80000, P))
    with pytest.raises(AssertionError, match="stray reserved node"):
        asp.check_invariants()


def test_aspace_vma_closed_but_indexed() -> None:
    asp, _, vma = _aspace()
    vma.closed = True
    with pytest.raises(AssertionError, match="in as's index but closed or foreign"):
        asp.check_invariants()


def test_aspace_vma_foreign() -> None:
    asp, _, vma = _aspace()
    vma.vm = AddressSpace(0, 0x100000, name="other")
    with pytest.raises(AssertionError, match="in as's index but closed or foreign"):
        asp.check_invariants()


def test_aspace_vma_outside_window() -> None:
    asp, _, _ = _aspace()
    asp.range = 0x1000  # the window now ends inside the reserved range
    with pytest.raises(AssertionError, match="outside as's usable window"):
        asp.check_invariants()


def test_aspace_vma_survives_freed_buffer() -> None:
    asp, obj, _ = _aspace()
    obj.freed = True
    with pytest.raises(AssertionError, match="survives its freed buffer"):
        asp.check_invariants()


def test_aspace_two_vmas_of_one_buffer() -> None:
    asp, obj, vma = _aspace()
    twin = LegacyVma(asp, obj, vma.addr + P, P)
    asp.index.add(twin)
    asp.refs.get(twin)
    bo_vmas(obj).vmas.append(twin)  # type: ignore[union-attr]
    with pytest.raises(AssertionError, match=r"two VMAs of .* in as"):
        asp.check_invariants()


def test_aspace_vma_not_on_buffer_list() -> None:
    asp, obj, vma = _aspace()
    bo_vmas(obj).vmas.remove(vma)  # type: ignore[union-attr]
    with pytest.raises(AssertionError, match="is not on its buffer's VMA list exactly once"):
        asp.check_invariants()


def test_aspace_vma_twice_on_buffer_list() -> None:
    asp, obj, vma = _aspace()
    bo_vmas(obj).vmas.append(vma)  # type: ignore[union-attr]
    with pytest.raises(AssertionError, match="is not on its buffer's VMA list exactly once"):
        asp.check_invariants()


def test_aspace_vma_pinned_but_unmapped() -> None:
    asp, _, vma = _aspace()
    vma.pin_count = 1
    with pytest.raises(AssertionError, match="pinned but unmapped, or negative pin count"):
        asp.check_invariants()
    asp.map_vma(vma)
    asp.check_invariants()
    vma.pin_count = -1
    with pytest.raises(AssertionError, match="pinned but unmapped, or negative pin count"):
        asp.check_invariants()


def test_aspace_vma_holds_two_refs() -> None:
    asp, _, vma = _aspace()
    asp.refs.holders[vma] = 2
    asp.refs.total += 1
    with pytest.raises(AssertionError, match="holds 2 refs"):
        asp.check_invariants()


def test_aspace_refcount_inconsistent() -> None:
    asp, _, _ = _aspace()
    asp.refs.total += 1
    with pytest.raises(AssertionError, match="refcount of AddressSpace"):
        asp.check_invariants()


def test_aspace_refcount_not_owners_plus_vmas() -> None:
    asp, _, _ = _aspace()
    asp.refs.get("extra")  # an owner
    asp.check_invariants()
    stranger = LegacyVma(asp, GemObject(P), 0x90000, P)  # holds a ref, not in the index
    asp.refs.get(stranger)
    with pytest.raises(AssertionError, match=r"as refcount 4 != 2 \+ 1"):
        asp.check_invariants()


# --- dmabuf/buffer.py: the sharing-dependent half of DmaBuf.check_invariants -------------


def test_dmabuf_importer_ops_on_static_attachment() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    a = d.attach("dgpu2", DGPU2, p2p_ops())
    d.check_invariants()
    a.dynamic = False
    with pytest.raises(AssertionError, match="importer ops without a dynamic move_notify"):
        d.check_invariants()


def test_dmabuf_move_callback_not_registered() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    mem.on_move.clear()
    with pytest.raises(AssertionError, match="move callback not registered"):
        d.check_invariants()


def test_dmabuf_pin_count_below_attachment_pins() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    s = d.attach("igpu", IGPU)
    d.map(s)
    d.check_invariants()
    d.backing.pin_count = 0
    with pytest.raises(AssertionError, match="pin_count 0 < attachment pins 1"):
        d.check_invariants()


def test_dmabuf_static_mapping_without_pin() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    s = d.attach("igpu", IGPU)
    d.map(s)
    s.map_pins = 0
    with pytest.raises(AssertionError, match="static mappings 1 hold 0 pins"):
        d.check_invariants()


def test_dmabuf_mapping_cannot_reach_pinned_backing() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    s = d.attach("igpu", IGPU)
    d.map(s)  # pinned in TT
    a = d.attach("igpu2", XE, ImporterOps(evict_importer_vms))
    assert a.view is not None
    a.mappings = 1  # as if mapped, but the pinned backing moves to VRAM
    a.mapped_resource = Resource(Domain.VRAM)
    d.backing.resource = Resource(Domain.VRAM)
    with pytest.raises(AssertionError, match="maps but cannot reach pinned backing"):
        d.check_invariants()


def test_dmabuf_live_mapping_of_old_backing() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    a = d.attach("dgpu2", DGPU2, p2p_ops())
    d.map(a)
    a.mapped_resource = Resource(Domain.TT)  # moved without move_notify
    with pytest.raises(AssertionError, match=r"live mapping of .* backing is .*moved without"):
        d.check_invariants()


def test_dmabuf_non_p2p_attachment_mapped_vram() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    a = d.attach("dgpu2", DGPU2, p2p_ops())
    d.map(a)  # p2p: VRAM in place
    assert d.backing.domain == Domain.VRAM
    a.peer2peer = False
    with pytest.raises(AssertionError, match="non-p2p attachment mapped VRAM"):
        d.check_invariants()


def test_dmabuf_mapped_resource_the_exporter_never_maps() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    a = d.attach("igpu", XE, ImporterOps(evict_importer_vms))
    d.map(a)
    assert d.backing.domain == Domain.TT
    res = Resource(Domain.SYSTEM)
    d.backing.resource = res
    a.mapped_resource = res
    with pytest.raises(AssertionError, match="never maps"):
        d.check_invariants()


# --- device.py: Device.check_invariants ----------------------------------------------------


def _device() -> tuple[Device, DrmFile, Bo]:
    dev = Device("msm", "gpuvm_vma_ref")
    f = dev.open(name="f")
    bo = f.bo(f.create_bo(P))
    dev.check_invariants()
    return dev, f, bo


def test_device_freed_bo_listed_live() -> None:
    dev, f, bo = _device()
    del f.handles[1]
    del f.handle_counts[bo]
    bo.refs.total -= bo.refs.holders.pop(next(iter(bo.refs.holders)))
    bo.freed = True
    with pytest.raises(AssertionError, match="still listed live"):
        dev.check_invariants()


def test_device_handle_count_off() -> None:
    dev, _, bo = _device()
    bo.handle_count = 2
    with pytest.raises(AssertionError, match="handle_count 2 != 1"):
        dev.check_invariants()


def test_device_vma_ref_inconsistent() -> None:
    dev, _, bo = _device()
    bo.vma_ref.total += 1
    with pytest.raises(AssertionError, match=r"vma_ref Tally\(2: .* inconsistent"):
        dev.check_invariants()


def test_device_busy_count_off() -> None:
    dev, _, bo = _device()
    bo.busy = 1
    with pytest.raises(AssertionError, match="busy 1 != jobs using it"):
        dev.check_invariants()


def test_device_export_cache_without_handle() -> None:
    dev, f, bo = _device()
    f.prime_handle_to_fd(1)
    dev.check_invariants()
    del f.handles[1]  # the handle gone, its export cache left behind
    del f.handle_counts[bo]
    f.prime_cache.clear()
    bo.handle_count = 0
    bo.refs.total -= bo.refs.holders.pop(bo.handle_ref)
    with pytest.raises(AssertionError, match="keeps its export cache with no handle"):
        dev.check_invariants()


def test_device_plane_shows_fb_without_holding_it() -> None:
    dev, f, _ = _device()
    fb = f.add_fb(1)
    f.page_flip(dev.plane(), fb)
    dev.check_invariants()
    fb.refs.holders[dev.plane().holder] = 2
    fb.refs.total += 1
    with pytest.raises(AssertionError, match=r"shows .* without holding it"):
        dev.check_invariants()


def test_device_fb_prepare_count_off() -> None:
    dev, f, _ = _device()
    fb = f.add_fb(1)
    fb.prepare_count = 1
    with pytest.raises(AssertionError, match="prepared 1x, shown 0x"):
        dev.check_invariants()


def test_device_fb_holds_freed_bo() -> None:
    dev, f, bo = _device()
    f.add_fb(1)
    del dev.live_bos[bo]
    f.handles.clear()
    f.handle_counts.clear()
    bo.handle_count = 0
    bo.freed = True
    with pytest.raises(AssertionError, match="holds freed"):
        dev.check_invariants()


def test_device_prepared_fb_not_pinned_for_scanout() -> None:
    dev, f, bo = _device()
    fb = f.add_fb(1)
    f.page_flip(dev.plane(), fb)
    assert dev.display_vm is not None
    vma = dev.display_vm.vma_of(bo)
    assert vma is not None
    vma.pin_count = 0
    with pytest.raises(AssertionError, match=r"prepared but .* not pinned for scanout"):
        dev.check_invariants()
