"""The survivor classes of the issue's outside mutation run, each tested where the
alternatives disagree: ``apply`` of a hand-built op list with adjacent (touching, not
overlapping) pieces; ``apply`` / ``bind`` inside a fence-signalling section; evicting a
freed GEM; ``get`` on a zombie VmBo; the dma-buf p2p decision (importer ops, topology,
the same-device rule) and PRIME's same-device shortcut (the exporter's identity, not its
name); whether a static importer maps at import.  (Bad alignments of ``legacy.aspace``:
``tests/test_checks_drm.py``.)  Every refusal leaves the model unchanged."""

from __future__ import annotations

import attrs
import pytest
from snapshot import snapshot, unchanged
from test_dmabuf_sharing import DGPU2, IGPU, devices, p2p_ops, send, shared, world

from gpuvm import GemObject, GpuVm, GpuVmFlags, MapOp, Piece, RemapOp, UnmapOp, VaExists
from gpuvm.core.errors import FenceSignallingViolation, UseAfterFree
from gpuvm.core.ops import MapRequest, Op
from gpuvm.core.refs import OWNER
from gpuvm.core.vmbo import gem_evict
from gpuvm.drm.caps import Topology, amdgpu_dgpu, soc_display
from gpuvm.drm.device import Device
from gpuvm.drm.dmabuf import DmaBuf, Exporter, ImporterOps
from gpuvm.drm.placement import Domain

P = 0x1000


def _vm(flags: int = 0) -> GpuVm:
    return GpuVm(0, 0x100000, name="vm", flags=flags)


# --- apply of a hand-built op list -----------------------------------------------------------


def test_apply_hand_built_adjacent_maps() -> None:
    vm = _vm()
    obj = GemObject(4 * P, name="o")
    vas = vm.apply([MapOp(0x10000, P, obj, 0), MapOp(0x11000, P, obj, P)])
    assert [(va.addr, va.range) for va in vas] == [(0x10000, P), (0x11000, P)]
    vm.check_invariants()


def test_apply_hand_built_map_touching_a_va() -> None:
    vm = _vm()
    obj = GemObject(4 * P, name="o")
    vm.map(0x10000, P, obj, 0)
    vm.apply([MapOp(0x11000, P, obj, P), MapOp(0xF000, P, obj, 2 * P)])
    assert [(va.addr, va.range) for va in vm.vas] == [(0xF000, P), (0x10000, P), (0x11000, P)]


def test_apply_hand_built_remap_pieces_adjacent_to_the_new_map() -> None:
    vm = _vm()
    obj = GemObject(4 * P, name="o")
    (va,) = vm.map(0x10000, 3 * P, obj, 0)
    other = GemObject(P, name="x")
    ops: list[Op] = [
        RemapOp(Piece(0x10000, P, obj, 0), Piece(0x12000, P, obj, 2 * P), UnmapOp(va)),
        MapOp(0x11000, P, other, 0),
    ]
    vm.apply(ops)
    assert [(v.addr, v.range, v.obj) for v in vm.vas] == [
        (0x10000, P, obj),
        (0x11000, P, other),
        (0x12000, P, obj),
    ]
    vm.check_invariants()


def test_apply_hand_built_overlapping_maps_refused_unchanged() -> None:
    vm = _vm()
    obj = GemObject(4 * P, name="o")
    before = snapshot(vm, obj)
    with pytest.raises(VaExists, match="overlaps another op"):
        vm.apply([MapOp(0x10000, 2 * P, obj, 0), MapOp(0x11000, P, obj, P)])
    assert unchanged(before, snapshot(vm, obj))


def test_apply_hand_built_remap_piece_overlapping_a_map_refused() -> None:
    vm = _vm()
    obj = GemObject(4 * P, name="o")
    (va,) = vm.map(0x10000, 3 * P, obj, 0)
    before = snapshot(vm, obj)
    ops: list[Op] = [
        RemapOp(Piece(0x10000, 2 * P, obj, 0), None, UnmapOp(va)),
        MapOp(0x11000, P, obj, 0),
    ]
    with pytest.raises(VaExists, match="overlaps another op"):
        vm.apply(ops)
    assert unchanged(before, snapshot(vm, obj))


def test_apply_hand_built_map_one_byte_into_a_va_refused() -> None:
    vm = _vm()
    obj = GemObject(4 * P, name="o")
    vm.map(0x10000, P, obj, 0)
    before = snapshot(vm, obj)
    with pytest.raises(VaExists, match=r"MAP \[0x10fff, \+0x1000\) overlaps Va\["):
        vm.apply([MapOp(0x10FFF, P, obj, 0)])
    assert unchanged(before, snapshot(vm, obj))


# --- fence-signalling sections --------------------------------------------------------------


def test_apply_inside_fence_signalling_refused_unchanged() -> None:
    vm = _vm()
    obj = GemObject(P, name="o")
    ops = vm.sm_map_ops(MapRequest(0x10000, P, obj, 0))
    before = snapshot(vm, obj)
    with vm.fence_signalling():
        with pytest.raises(FenceSignallingViolation, match=r"apply .* fence-signalling section"):
            vm.apply(ops)
        with pytest.raises(FenceSignallingViolation, match=r"apply .* fence-signalling section"):
            vm.apply([MapOp(0x10000, P, obj, 0)])
        with pytest.raises(FenceSignallingViolation, match="bind in a fence-signalling"):
            vm.bind([MapRequest(0x10000, P, obj, 0)])
    assert unchanged(before, snapshot(vm, obj))
    assert vm.fence_depth == 0
    vm.apply(ops)  # outside the section the same list applies
    assert len(vm.vas) == 1


def test_fence_section_nests_and_unwinds_on_error() -> None:
    vm = _vm()
    with pytest.raises(RuntimeError), vm.fence_signalling(), vm.fence_signalling():
        assert vm.fence_depth == 2
        raise RuntimeError
    assert vm.fence_depth == 0


# --- evicting a freed GEM, get on a zombie VmBo ------------------------------------------


def test_evict_freed_gem_refused_unchanged() -> None:
    vm = _vm()
    obj = GemObject(P, name="o")
    vb = vm.bo_obtain(obj)
    gem_evict(obj)
    assert vb.evicted and vb in vm.evict
    gem_evict(obj, False)
    dead = GemObject(P, name="dead")
    dead.put(OWNER)
    with pytest.raises(UseAfterFree, match="evict on freed"):
        gem_evict(dead)
    vb.put()
    with pytest.raises(UseAfterFree, match="evict on freed VmBo"):
        vb.evict(True)
    assert vm.evict == {}


def _zombie() -> tuple[GpuVm, GemObject, object]:
    vm = GpuVm(0, 0x100000, name="vm", flags=GpuVmFlags.IMMEDIATE_MODE)
    obj = GemObject(P, name="o")
    vb = vm.bo_obtain(obj)
    assert vb.put_deferred() and vb.zombie and vb in vm.bo_defer
    vm.check_invariants()
    return vm, obj, vb


def test_get_on_zombie_vm_bo_refused_unchanged() -> None:
    vm, obj, vb = _zombie()
    before = snapshot(vm, obj)
    with pytest.raises(UseAfterFree):
        vb.get()  # type: ignore[attr-defined]
    assert unchanged(before, snapshot(vm, obj))
    assert vb.refs.total == 0  # type: ignore[attr-defined]
    vm.check_invariants()
    assert vm.bo_deferred_cleanup() == [vb] and vb.freed  # type: ignore[attr-defined]


def test_evict_zombie_vm_bo_refused() -> None:
    vm, obj, vb = _zombie()
    before = snapshot(vm, obj)
    with pytest.raises(UseAfterFree, match="evict on zombie"):
        vb.evict(True)  # type: ignore[attr-defined]
    assert unchanged(before, snapshot(vm, obj))


def test_find_skips_zombie() -> None:
    vm, obj, vb = _zombie()
    assert vm.bo_find(obj) is None
    fresh = vm.bo_obtain(obj)
    assert fresh is not vb and fresh.listed


def _domain(d: DmaBuf) -> Domain | None:
    return d.backing.domain  # a call, so mypy does not narrow across moves


# --- the dma-buf p2p decision ---------------------------------------------------------------


def test_p2p_needs_importer_ops_allowing_it() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    yes = d.attach("dgpu2", DGPU2, p2p_ops())
    no = d.attach("dgpu2", DGPU2, ImporterOps(lambda att: None, allow_peer2peer=False))
    assert yes.peer2peer and not no.peer2peer  # same importer, same path: the ops decide
    d.map(yes)
    assert _domain(d) == Domain.VRAM
    d.map(no)  # a non-p2p mapping needs system memory: the buffer moves out of VRAM
    assert _domain(d) == Domain.TT


def test_p2p_needs_a_topology_path() -> None:
    topo, mem, caps = world()
    topo.add("far", root="pci1")
    d = shared(mem, caps, topo)
    far = d.attach("far", amdgpu_dgpu("far"), p2p_ops())
    unknown = d.attach("nowhere", amdgpu_dgpu("nowhere"), p2p_ops())
    near = d.attach("dgpu2", DGPU2, p2p_ops())
    assert (near.peer2peer, far.peer2peer, unknown.peer2peer) == (True, False, False)


def test_p2p_exporter_rule_same_device_and_missing_locations() -> None:
    topo, mem, caps = world()
    assert Exporter(caps, mem, topology=None).p2p(amdgpu_dgpu("dgpu"))  # same device
    assert not Exporter(caps, mem, topology=None).p2p(DGPU2)
    assert Exporter(caps, mem, topology=topo).p2p(DGPU2)
    lonely = Topology()
    lonely.add("dgpu2", root="pci0", switch="sw0")  # the exporter is not in this topology
    assert not Exporter(caps, mem, topology=lonely).p2p(DGPU2)
    assert Exporter(caps, mem, topology=lonely).p2p(amdgpu_dgpu("dgpu"))


def test_p2p_static_importer_never_p2p() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    static = d.attach("dgpu2", attrs.evolve(DGPU2, allow_peer2peer=True), None)
    assert not static.dynamic and not static.peer2peer


def test_can_access_optimal_p2p_needs_dynamic_path_and_allow() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    assert d.can_access_optimal(DGPU2).path == "p2p"
    no_allow = d.can_access_optimal(attrs.evolve(DGPU2, allow_peer2peer=False))
    assert (no_allow.ok, no_allow.reason) == (False, "no p2p path to VRAM")
    self_ = d.can_access_optimal(amdgpu_dgpu("dgpu"))
    assert (self_.ok, self_.path, self_.reason) == (True, "self", "same device")
    far = d.can_access_optimal(amdgpu_dgpu("nowhere"))
    assert (far.ok, far.reason) == (False, "no p2p path to VRAM")


# --- PRIME's same-device shortcut ------------------------------------------------------


def test_same_device_shortcut_is_by_identity_not_name() -> None:
    """Two devices of the same flavour and name: an import into the other one is foreign
    (a new buffer with an attachment), an import into the exporter reuses its buffer
    (``drm_gem_prime_fd_to_handle``: ``obj->dev == dev``)."""
    a, b = Device("nouveau", name="gpu"), Device("nouveau", name="gpu")
    fa, fa2, fb = a.open(name="x"), a.open(name="y"), b.open(name="z")
    h = fa.create_bo(P)
    fd = fa.prime_handle_to_fd(h)
    same = fa2.prime_fd_to_handle(fa.fds.send(fd, fa2.fds))
    other = fb.prime_fd_to_handle(fa.fds.send(fd, fb.fds))
    assert fa2.bo(same) is fa.bo(h) and fa2.bo(same).import_attach is None
    assert fb.bo(other) is not fa.bo(h) and fb.bo(other).import_attach is not None
    assert fb.bo(other).device is b
    a.check_invariants()
    b.check_invariants()


# --- does a static importer map at import? --------------------------------------------------


def test_static_importer_maps_at_import_only_if_it_says_so() -> None:
    for maps, want in ((True, 1), (False, 0)):
        caps = attrs.evolve(IGPU, maps_at_import=maps)
        dgpu, igpu, client, comp, h = devices(caps)
        ih = comp.prime_fd_to_handle(send(client, comp, h))
        att = comp.bo(ih).import_attach
        assert att is not None and not att.dynamic
        assert att.mappings == want, maps
        assert (dgpu.mem.backing(client.bo(h)).pin_count > 0) == bool(want)  # type: ignore[union-attr]
        dgpu.check_invariants()
        igpu.check_invariants()


def test_soc_display_preset_maps_at_import() -> None:
    assert soc_display().maps_at_import and not IGPU.maps_at_import
