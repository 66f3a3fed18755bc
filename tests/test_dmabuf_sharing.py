"""dma-buf sharing with placement: static/dynamic attachments, p2p, map/unmap, pin/unpin,
exporter moves with move_notify, exporter behaviours from ``caps.EXPORTERS``, NO_MOVE,
late attachers, PRIME integration, invariants, and refusals that change nothing (with
their kernel errno)."""

from __future__ import annotations

import errno as E
from collections.abc import Callable

import attrs
import pytest

from gpuvm.core.errors import (
    BackingConflict,
    Busy,
    GpuvmError,
    InvalidValue,
    NoImportPath,
    NotPinned,
    NotSupported,
    PinnedBuffer,
    UseAfterFree,
    WouldMigrate,
)
from gpuvm.core.gem import GemObject
from gpuvm.drm.caps import EXPORTERS, DeviceCaps, Topology, amdgpu_dgpu, bochs, i915_igpu, xe_igpu
from gpuvm.drm.device import Device, snapshot
from gpuvm.drm.dmabuf import Attachment, DmaBuf, Exporter, ImporterOps, evict_importer_vms
from gpuvm.drm.file import DrmFile
from gpuvm.drm.placement import Domain, MemoryManager, Place, amdgpu_domains
from gpuvm.drm.prime import DRM_PRIME_FD_TO_HANDLE_NO_MOVE

SIZE = 8 << 20


def world(
    exporter_caps: DeviceCaps | None = None,
) -> tuple[Topology, MemoryManager, DeviceCaps]:
    topo = Topology()
    caps = exporter_caps or amdgpu_dgpu("dgpu")
    topo.add(caps, root="pci0", switch="sw0")
    topo.add("dgpu2", root="pci0", switch="sw0")
    mem = MemoryManager(name="dgpu")
    return topo, mem, caps


def shared(  # CONFIG_DMABUF_MOVE_NOTIFY built unless move_notify_built=False is given
    mem: MemoryManager,
    caps: DeviceCaps,
    topo: Topology,
    *,
    allowed: tuple[Domain, ...] | None = None,
    place: bool = True,
    **kw: object,
) -> DmaBuf:
    obj = GemObject(SIZE, name="buf")
    if allowed is None:
        mem.add(obj, *amdgpu_domains([Domain.VRAM]))
    else:
        mem.add(obj, [Place(d) for d in allowed])
    if place:
        mem.validate(obj)
    d = DmaBuf(
        obj,
        "dgpu",
        SIZE,
        obj.resv,
        name="buf",
        bus=mem.bus,
        sharing=Exporter(caps, mem, topology=topo, **{"move_notify_built": True, **kw}),  # type: ignore[arg-type]
    )
    d.get("fd")
    return d


def state(mem: MemoryManager, d: DmaBuf) -> tuple[object, ...]:
    return (mem.snapshot(), d.state(), d.refs.total)


def refused(
    mem: MemoryManager, d: DmaBuf, call: Callable[[], object], exc: type[GpuvmError], errno: int
) -> GpuvmError:
    before = state(mem, d)
    with pytest.raises(exc) as info:
        call()
    assert info.value.errno == errno
    assert state(mem, d) == before
    d.check_invariants()
    mem.check_invariants()
    return info.value


def p2p_ops(log: list[tuple[Attachment, Domain | None]] | None = None) -> ImporterOps:
    def notify(att: Attachment) -> None:
        if log is not None:
            log.append((att, att.dmabuf.backing.domain))

    return ImporterOps(notify, allow_peer2peer=True)


def dom(d: DmaBuf) -> Domain | None:
    """The exporter buffer's domain (a call, so mypy does not narrow across moves)."""
    return d.backing.domain


def pins(d: DmaBuf) -> int:
    return d.backing.pin_count


def flag(x: bool) -> bool:
    return x


DGPU2 = amdgpu_dgpu("dgpu2")
IGPU = i915_igpu("igpu")
XE = xe_igpu("igpu")


# --- attach ----------------------------------------------------------------------------------


def test_dynamic_attach_without_move_notify_einval() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    refused(mem, d, lambda: d.attach("x", DGPU2, ImporterOps(None)), InvalidValue, E.EINVAL)


def test_peer2peer_from_topology_and_importer_ops() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    a = d.attach("dgpu2", DGPU2, p2p_ops())
    b = d.attach("igpu", XE, ImporterOps(evict_importer_vms, allow_peer2peer=True))
    s = d.attach("dgpu2-static", DGPU2)
    assert (a.peer2peer, b.peer2peer, s.peer2peer) == (True, False, False)
    assert (a.dynamic, b.dynamic, s.dynamic) == (True, True, False)
    d.check_invariants()


def test_xe_exporter_refuses_vram_only_buffer_eopnotsupp() -> None:
    topo, mem, caps = world(attrs.evolve(amdgpu_dgpu("dgpu"), exporter=EXPORTERS["xe"]))
    d = shared(mem, caps, topo, allowed=(Domain.VRAM,))
    refused(mem, d, lambda: d.attach("igpu", IGPU), NotSupported, E.EOPNOTSUPP)
    # with CONFIG_DMABUF_MOVE_NOTIFY a p2p importer is fine and maps VRAM in place (without
    # it the map pins, and xe_dma_buf_pin refuses: tests/test_kernel_exact_refs.py)
    a = d.attach("dgpu2", DGPU2, p2p_ops())
    assert d.map(a) is not None and dom(d) == Domain.VRAM


def test_amdgpu_exporter_accepts_the_same_buffer() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo, allowed=(Domain.VRAM, Domain.TT))
    d.attach("igpu", IGPU)
    assert dom(d) == Domain.VRAM  # attach never moves an amdgpu BO


def test_i915_exporter_pins_at_attach_until_detach() -> None:
    topo = Topology()
    caps = i915_igpu("igpu")
    mem = MemoryManager(vram=0, name="igpu", eviction={})
    d = shared(mem, caps, topo, allowed=(Domain.TT, Domain.SYSTEM))
    assert dom(d) == Domain.TT
    a = d.attach("dgpu", amdgpu_dgpu(), p2p_ops())
    assert a.attach_pins == 1 and pins(d) == 1
    assert dom(d) == Domain.SYSTEM
    d.detach(a)
    assert pins(d) == 0


def test_i915_exporter_refuses_local_memory_only() -> None:
    topo, mem, caps = world(attrs.evolve(amdgpu_dgpu("dgpu"), exporter=EXPORTERS["i915"]))
    d = shared(mem, caps, topo, allowed=(Domain.VRAM,))
    refused(mem, d, lambda: d.attach("igpu", IGPU), NotSupported, E.EOPNOTSUPP)


# --- map / unmap / move_notify ----------------------------------------------------------------


def test_p2p_maps_vram_in_place_and_move_notify_runs_before_the_move() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    log: list[tuple[Attachment, Domain | None]] = []
    a = d.attach("dgpu2", DGPU2, p2p_ops(log))
    res = d.map(a)
    assert res is not None and res.domain == Domain.VRAM and d.moves == 0  # in place
    assert a.usable
    d.move(Domain.TT)
    assert log == [(a, Domain.VRAM)]  # called while the backing was still in VRAM
    assert flag(a.stale) and not flag(a.usable) and a.notifies == 1
    d.check_invariants()  # a stale mapping is allowed to point at the old backing
    d.remap(a)
    assert a.usable and a.mapped_resource == d.backing.resource
    assert (a.maps, a.unmaps, a.mappings) == (2, 1, 1)


def test_non_p2p_dynamic_map_migrates_to_gtt_unpinned() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    a = d.attach("igpu", XE, ImporterOps(evict_importer_vms))
    d.map(a)
    assert dom(d) == Domain.TT and pins(d) == 0
    d.check_invariants()


def test_amdgpu_notifies_only_when_leaving_non_system() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo, place=False)
    a = d.attach("dgpu2", DGPU2, p2p_ops())
    mem.validate(d.priv, Domain.SYSTEM)
    d.move(Domain.TT)  # out of SYSTEM: amdgpu does not notify
    assert a.notifies == 0
    d.move(Domain.VRAM)
    assert a.notifies == 1


def test_xe_notifies_on_every_move() -> None:
    topo, mem, caps = world(attrs.evolve(amdgpu_dgpu("dgpu"), exporter=EXPORTERS["xe"]))
    d = shared(mem, caps, topo, place=False)
    a = d.attach("dgpu2", DGPU2, p2p_ops())
    mem.validate(d.priv, Domain.SYSTEM)
    d.move(Domain.TT)
    assert a.notifies == 1


def test_static_map_pins_and_exporter_move_refused() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    s = d.attach("igpu", IGPU)
    d.map(s)
    assert dom(d) == Domain.TT and pins(d) == 1 and s.map_pins == 1
    refused(mem, d, lambda: d.move(Domain.VRAM), PinnedBuffer, E.EINVAL)
    d.unmap(s)
    assert pins(d) == 0
    d.move(Domain.VRAM)


def test_move_notify_not_built_pins_dynamic_importers() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo, move_notify_built=False)
    a = d.attach("igpu", XE, ImporterOps(evict_importer_vms))
    d.map(a)
    assert a.map_pins == 1 and pins(d) > 0


def test_deferred_allocation_at_first_map_over_all_attachments() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo, place=False)
    a = d.attach("dgpu2", DGPU2, p2p_ops())
    s = d.attach("igpu", IGPU)
    assert d.backing.resource is None
    d.map(a)
    assert dom(d) == Domain.TT  # the static iGPU attachment rules out VRAM
    d.map(s)
    assert d.moves == 1 and a.usable


# --- pin / unpin -----------------------------------------------------------------------------


def test_pin_all_p2p_vram_else_gtt() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    a = d.attach("dgpu2", DGPU2, p2p_ops())
    d.pin(a)
    assert dom(d) == Domain.VRAM and a.pins == 1
    d.pin(a)  # nests
    assert pins(d) == 2
    d.unpin(a)
    d.unpin(a)
    b = d.attach("igpu", XE, ImporterOps(evict_importer_vms))
    d.pin(b)
    assert dom(d) == Domain.TT
    d.check_invariants()


def test_pin_refusals() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    s = d.attach("igpu", IGPU)
    a = d.attach("dgpu2", DGPU2, p2p_ops())
    refused(mem, d, lambda: d.pin(s), InvalidValue, E.EINVAL)  # static importers do not pin
    refused(mem, d, lambda: d.unpin(a), NotPinned, E.EINVAL)
    refused(mem, d, lambda: d.unmap(a), InvalidValue, E.EINVAL)


# --- late attachers ---------------------------------------------------------------------------


def test_late_attach_to_pinned_vram_maps_ebusy() -> None:
    """Updated for issue 14: ``amdgpu_dma_buf_attach`` only clears ``peer2peer``, so the
    late attach succeeds and ``amdgpu_dma_buf_map`` fails ``-EBUSY`` (pinned, not in GTT);
    the old test expected the attach itself to fail."""
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    a = d.attach("dgpu2", DGPU2, p2p_ops())
    d.map(a)
    d.pin(a)
    s = d.attach("igpu", IGPU)
    refused(mem, d, lambda: d.map(s), BackingConflict, E.EBUSY)
    x = d.attach("igpu", XE, ImporterOps(evict_importer_vms))
    refused(mem, d, lambda: d.map(x), Busy, E.EBUSY)


def test_late_attach_moves_when_only_dynamic_mappings() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    a = d.attach("dgpu2", DGPU2, p2p_ops())
    d.map(a)
    s = d.attach("igpu", IGPU)
    assert dom(d) == Domain.VRAM  # the attach itself moves nothing
    d.map(s)
    assert dom(d) == Domain.TT and a.stale and a.notifies == 1
    d.remap(a)
    d.check_invariants()


def test_map_of_pinned_out_of_reach_ebusy() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    a = d.attach("dgpu2", DGPU2, p2p_ops())
    b = d.attach("igpu", XE, ImporterOps(evict_importer_vms))
    mem.pin(d.priv, Domain.VRAM)  # e.g. the exporter's own scanout
    refused(mem, d, lambda: d.map(b), BackingConflict, E.EBUSY)
    d.map(a)  # the p2p importer still reaches VRAM


# --- NO_MOVE at the dma-buf level --------------------------------------------------------------


def test_no_move_attach_refused_when_map_would_migrate() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    refused(mem, d, lambda: d.attach("igpu", IGPU, no_move=True), WouldMigrate, E.EINVAL)
    assert d.attachments == []
    a = d.attach("dgpu2", DGPU2, p2p_ops(), no_move=True)  # p2p: no move needed
    assert a in d.attachments


def test_no_move_passes_for_a_buffer_already_in_gtt() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    mem.evict(d.priv)
    s = d.attach("igpu", IGPU, no_move=True)
    d.map(s)
    assert dom(d) == Domain.TT and pins(d) > 0


# --- detach, release, lifetime ----------------------------------------------------------------


def test_detach_with_mappings_ebusy_and_teardown() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    s = d.attach("igpu", IGPU)
    d.map(s)
    refused(mem, d, lambda: d.detach(s), Busy, E.EBUSY)
    d.detach(s, teardown=True)
    assert pins(d) == 0 and d.attachments == [] and s.detached
    refused(mem, d, lambda: d.map(s), InvalidValue, E.EINVAL)


def test_no_use_after_last_reference() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    d.put("fd")
    assert d.released and d._on_move not in mem.on_move
    for call in (lambda: d.attach("igpu", IGPU), lambda: d.move(Domain.TT)):
        with pytest.raises(UseAfterFree) as info:
            call()
        assert info.value.errno == E.EFAULT
    d.check_invariants()


# --- invariants can fail ----------------------------------------------------------------------


def test_invariant_mapping_survived_a_move_without_move_notify() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    a = d.attach("dgpu2", DGPU2, p2p_ops())
    d.map(a)
    mem.on_move.remove(d._on_move)  # a broken exporter: no move callback
    mem.validate(d.priv, Domain.TT)
    mem.on_move.append(d._on_move)
    with pytest.raises(AssertionError, match="moved without move_notify"):
        d.check_invariants()


def test_invariant_pins_and_static_mappings() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    s = d.attach("igpu", IGPU)
    d.map(s)
    s.map_pins = 0
    with pytest.raises(AssertionError, match="hold 0 pins"):
        d.check_invariants()
    s.map_pins = 1
    d.violations.append("planted")
    with pytest.raises(AssertionError, match="planted"):
        d.check_invariants()


def test_invariant_pinned_backing_reached_by_every_mapped_attachment() -> None:
    """Updated for issue 14: an attachment out of reach of a pinned backing is legal (the
    kernel's attach does not check); only a *mapping* of it breaks the invariant."""
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    a = d.attach("dgpu2", DGPU2, p2p_ops())
    d.pin(a)
    late = Attachment(d, "igpu", True, caps=XE, ops=ImporterOps(evict_importer_vms))
    d.attachments.append(late)
    d.check_invariants()
    late.mappings = 1  # bypassing map's check
    with pytest.raises(AssertionError, match="cannot reach pinned"):
        d.check_invariants()


# --- PRIME integration --------------------------------------------------------------------------


def devices(importer: DeviceCaps) -> tuple[Device, Device, DrmFile, DrmFile, int]:
    topo = Topology()
    dgpu = Device(
        "nouveau",
        name="dgpu",
        display=False,
        caps=amdgpu_dgpu("dgpu"),
        topology=topo,
        dmabuf_move_notify=True,  # these tests are about move_notify (stock kernels: off)
    )
    topo.add(amdgpu_dgpu("dgpu"), root="pci0")
    other = Device("nouveau", name=importer.name, display=False, caps=importer, topology=topo)
    client, comp = dgpu.open(name="client"), other.open(name="comp")
    h = client.create_bo(SIZE)
    return dgpu, other, client, comp, h


def send(client: DrmFile, comp: DrmFile, h: int) -> int:
    fd = client.prime_handle_to_fd(h)
    return client.fds.send(fd, comp.fds)


def test_device_buffers_are_placed_and_exports_carry_the_exporter() -> None:
    dgpu, igpu, client, comp, h = devices(IGPU)
    assert dgpu.mem is not None and dgpu.mem.backing(client.bo(h)).domain == Domain.VRAM
    fd = send(client, comp, h)
    d = comp.fds.get(fd)
    assert d.sharing is not None and d.sharing.rules is EXPORTERS["amdgpu"]
    ih = comp.prime_fd_to_handle(fd)
    att = comp.bo(ih).import_attach
    assert att is not None and not att.dynamic and att.bo is comp.bo(ih)
    assert igpu.mem is not None and comp.bo(ih) not in igpu.mem  # imports have no own backing
    dgpu.check_invariants()
    igpu.check_invariants()


def test_prime_no_move_refused_unchanged() -> None:
    """Updated for issue 14: NO_MOVE is honoured only on a kernel with the RFC."""
    dgpu, igpu, client, comp, h = devices(attrs.evolve(IGPU, rfc_no_move=True))
    fd = send(client, comp, h)
    before = snapshot(dgpu, igpu)
    with pytest.raises(WouldMigrate) as info:
        comp.prime_fd_to_handle(fd, DRM_PRIME_FD_TO_HANDLE_NO_MOVE)
    assert info.value.errno == E.EINVAL
    assert snapshot(dgpu, igpu) == before
    assert comp.fds.get(fd).attachments == []


def test_prime_bad_import_flags_einval() -> None:
    """Updated for issue 14: only the NO_MOVE RFC checks the flags (mainline ignores them)."""
    dgpu, igpu, client, comp, h = devices(attrs.evolve(IGPU, rfc_no_move=True))
    fd = send(client, comp, h)
    before = snapshot(dgpu, igpu)
    with pytest.raises(InvalidValue):
        comp.prime_fd_to_handle(fd, 0x2)
    assert snapshot(dgpu, igpu) == before


def test_prime_vram_only_importer_einval() -> None:
    dgpu, vdev, client, comp, h = devices(bochs("bochs"))
    fd = send(client, comp, h)
    before = snapshot(dgpu, vdev)
    with pytest.raises(NoImportPath) as info:
        comp.prime_fd_to_handle(fd)
    assert info.value.errno == E.EINVAL and "cannot import" in str(info.value)
    assert snapshot(dgpu, vdev) == before


def test_snapshot_covers_attachment_maps_and_placement() -> None:
    dgpu, igpu, client, comp, h = devices(IGPU)
    ih = comp.prime_fd_to_handle(send(client, comp, h))
    att = comp.bo(ih).import_attach
    assert att is not None
    before = snapshot(dgpu, igpu)
    att.dmabuf.map(att)
    assert snapshot(dgpu, igpu) != before


def mapped_dynamic_import() -> tuple[Device, Device, DrmFile, int, Attachment]:
    """An amdgpu buffer imported by an xe iGPU (a dynamic importer) and mapped once:
    ``(exporter device, importer device, importing file, import handle, attachment)``."""
    dgpu, igpu, client, comp, h = devices(XE)
    ih = comp.prime_fd_to_handle(send(client, comp, h))
    att = comp.bo(ih).import_attach
    assert att is not None and att.dynamic
    att.dmabuf.map(att)
    return dgpu, igpu, comp, ih, att


def test_dynamic_import_move_notify_evicts_importer_vm() -> None:
    from gpuvm.core.events import EventLog, Mapped, Unmapped
    from gpuvm.drm.driver import DriverVm

    dgpu, igpu, comp, ih, att = mapped_dynamic_import()
    bo, d = comp.bo(ih), att.dmabuf
    vm = DriverVm(1 << 32, 1 << 40, name="igpu.ctx", bus=igpu.bus)
    vm.map(1 << 32, SIZE, bo)
    log = EventLog()
    igpu.bus.subscribe(log, [Mapped, Unmapped])
    d.move(Domain.VRAM)  # exporter re-promotes
    (vm_bo,) = bo.vm_bos
    assert flag(vm_bo.evicted) and vm_bo in vm.evict and flag(att.stale)
    assert [type(e) for e in log.events] == [Unmapped]
    from gpuvm.drm.dmabuf import revalidate_import

    vm.validate(revalidate_import)
    assert not flag(vm_bo.evicted) and flag(att.usable) and dom(d) == Domain.TT
    assert [type(e) for e in log.events] == [Unmapped, Mapped]
    dgpu.check_invariants()
    vm.check_invariants()


def test_closing_the_import_unmaps_unpins_and_detaches() -> None:
    dgpu, igpu, client, comp, h = devices(IGPU)
    ih = comp.prime_fd_to_handle(send(client, comp, h))
    att = comp.bo(ih).import_attach
    assert att is not None
    d = att.dmabuf
    d.map(att)
    assert pins(d) == 1
    comp.gem_close(ih)
    assert att.detached and d.attachments == [] and pins(d) == 0
    dgpu.check_invariants()
    comp.close()
    client.close()
    comp.fds.close_all()
    client.fds.close_all()
    assert dgpu.close() == [] and igpu.close() == []


def test_device_invariants_include_dmabufs() -> None:
    dgpu, _igpu, client, comp, h = devices(IGPU)
    ih = comp.prime_fd_to_handle(send(client, comp, h))
    att = comp.bo(ih).import_attach
    assert att is not None
    att.dmabuf.violations.append("planted violation")
    with pytest.raises(AssertionError, match="planted violation"):
        dgpu.check_invariants()


def test_access_query_has_no_side_effects() -> None:
    dgpu, igpu, client, _comp, h = devices(IGPU)
    fd = client.prime_handle_to_fd(h)
    d = client.fds.get(fd)
    before = snapshot(dgpu, igpu)
    assert not d.can_access_optimal(IGPU).ok
    ans = d.can_access_optimal(bochs("bochs"))
    assert not ans.ok and ans.reason == "no foreign import path"
    assert d.can_access_optimal(amdgpu_dgpu("dgpu")).path == "self"
    assert snapshot(dgpu, igpu) == before


def test_exec_remaps_a_moved_dynamic_import() -> None:
    """The importer's next EXEC validates its VM: the VmBo that ``move_notify`` evicted is
    mapped again, and so is its dma-buf attachment (no longer stale)."""
    from gpuvm import BindMap
    from gpuvm.core.events import EventLog, Mapped, Unmapped
    from gpuvm.drm.dmabuf import AttachmentMapped

    dgpu, igpu, comp, ih, att = mapped_dynamic_import()
    bo, d = comp.bo(ih), att.dmabuf
    comp.vm_init()
    comp.vm_bind([BindMap(igpu.context_window[0], SIZE, ih)])
    (vm_bo,) = bo.vm_bos
    d.move(Domain.VRAM)  # the exporter re-promotes: move_notify
    assert flag(vm_bo.evicted) and flag(att.stale)
    maps = att.maps
    log = EventLog()
    igpu.bus.subscribe(log, [Mapped, Unmapped])
    dgpu.bus.subscribe(log, [AttachmentMapped])
    comp.exec()
    assert not flag(vm_bo.evicted) and not flag(att.stale) and att.mappings == 1
    assert att.maps == maps + 1 and dom(d) == Domain.TT
    assert [type(e) for e in log.events] == [AttachmentMapped, Mapped]
    dgpu.check_invariants()
    igpu.check_invariants()
