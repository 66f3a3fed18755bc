"""The lifetime checker checks itself: every place ``gpuvm/observe/checker/lifetime.py``
emits a verdict (each kind of ``verdict.py``: use-after-free, leak, cycle, underflow,
refcount, stale-import, attributes, dma-buf, stale-mapping, and the non-fatal hazard)
fires on a state corrupted directly (not through the API), with its kind and message.  One
test per emission site, named after it; a checker that stopped detecting fails here."""

from __future__ import annotations

from typing import Any

import pytest
from test_dmabuf_sharing import IGPU, devices, send

from gpuvm import Device, GemObject, GpuVm, Holder
from gpuvm.core.events import Mapped, RefPut, VaLinked
from gpuvm.core.refs import OWNER
from gpuvm.drm.driver import Bo
from gpuvm.drm.file import DrmFile, handle_holder
from gpuvm.drm.placement import Domain, Resource
from gpuvm.observe.checker import FATAL_KINDS, LifetimeChecker, Violation, attributes

P = 4096


def _dev(policy: str = "gpuvm_vma_ref") -> tuple[Device, DrmFile, LifetimeChecker]:
    dev = Device("msm", policy)
    checker = LifetimeChecker(dev)
    return dev, dev.open(name="f"), checker


def _vm_of(f: DrmFile) -> Any:
    assert f.vm is not None
    return f.vm


def _one(found: list[Violation], kind: str, text: str) -> Violation:
    hits = [v for v in found if v.kind == kind and text in v.message]
    assert hits, found
    return hits[0]


def _vm() -> tuple[GpuVm, LifetimeChecker]:
    vm = GpuVm(0, 16 * P, name="vm", vm_free=lambda vm: None)
    return vm, LifetimeChecker(vm, bus=vm.bus)


def test_fatal_kinds_are_the_documented_ones() -> None:
    assert {
        "use-after-free",
        "leak",
        "cycle",
        "underflow",
        "refcount",
        "stale-import",
        "attributes",
        "dma-buf",
        "stale-mapping",
        "unmapped-scanout",
    } == FATAL_KINDS
    assert Violation("hazard", "x").fatal is False and Violation("leak", "x").fatal
    assert str(Violation("leak", "x")) == "leak: x"


def test_allowed_kind_is_recorded_not_failed() -> None:
    checker = LifetimeChecker(allow={"leak"})
    checker.report("leak", "m")
    assert checker.ok and checker.violations and checker.failures == []
    assert checker.verdict().startswith("ok (with notes): 0 violation(s)")
    checker.report("cycle", "c")
    assert [v.kind for v in checker.failures] == ["cycle"]
    with pytest.raises(AssertionError, match="FAIL cycle: c"):
        checker.assert_ok()


def test_report_deduplicates_by_key() -> None:
    checker = LifetimeChecker()
    assert checker.report("leak", "a", key="k") is not None
    assert checker.report("leak", "b", key="k") is None
    assert checker.report("cycle", "b", key="k") is not None
    assert [v.message for v in checker.violations] == ["a", "b"]


# --- events ------------------------------------------------------------------------------


def test_event_put_on_freed() -> None:
    vm, checker = _vm()
    obj = GemObject(P, name="b", bus=vm.bus)
    obj.put(OWNER)
    vm.bus.emit(RefPut(obj, OWNER))
    _one(checker.violations, "use-after-free", "put on freed GEM b")


def test_event_put_by_non_holder() -> None:
    vm, checker = _vm()
    obj = GemObject(P, name="b", bus=vm.bus)
    vm.bus.emit(RefPut(obj, Holder("nobody")))
    v = _one(checker.violations, "underflow", "which holds none")
    assert "put on GEM b by nobody" in v.message


def test_event_page_tables_for_freed() -> None:
    vm, checker = _vm()
    obj = GemObject(P, name="b", bus=vm.bus)
    obj.put(OWNER)
    vm.bus.emit(Mapped(vm, 0, P, obj, 0))
    _one(checker.violations, "use-after-free", "page tables of GpuVm(vm) written for freed")


def test_event_va_linked_to_freed_vm_bo() -> None:
    vm, checker = _vm()
    obj = GemObject(P, name="b")
    (va,) = vm.map(0, P, obj)
    assert va.vm_bo is not None
    va.vm_bo.freed = True
    vm.bus.emit(VaLinked(va, va.vm_bo))
    _one(checker.violations, "use-after-free", "linked to freed VmBo(vm, b)")


# --- device edges ------------------------------------------------------------------------


def test_open_file_uses_freed_vm() -> None:
    _, f, checker = _dev()
    f.get_param()
    _vm_of(f).freed = True
    _one(checker.check(), "use-after-free", "open f uses freed")


def test_handle_names_freed_bo() -> None:
    _, f, checker = _dev()
    f.bo(f.create_bo(P)).freed = True
    _one(checker.check(), "use-after-free", "f handle 1 names freed")


def test_plane_shows_freed_framebuffer() -> None:
    dev, f, checker = _dev()
    fb = f.add_fb(f.create_bo(P))
    f.page_flip(dev.plane(), fb)
    assert checker.check() == []
    fb.freed = True
    _one(checker.check(), "use-after-free", "shows freed FB")


def test_framebuffer_scans_out_freed_bo() -> None:
    _, f, checker = _dev()
    h = f.create_bo(P)
    f.add_fb(h)
    f.bo(h).freed = True
    _one(checker.check(), "use-after-free", "scans out freed")


def _job(policy: str = "gpuvm_vma_ref") -> tuple[Device, DrmFile, LifetimeChecker, Bo]:
    dev, f, checker = _dev(policy)
    h = f.create_bo(P)
    f.get_param()
    f.submit([h])
    assert dev.jobs and checker.check() == []
    return dev, f, checker, f.bo(h)


def test_job_holds_freed_vm_bo() -> None:
    dev, _, checker, _ = _job()
    dev.jobs[0].vm_bos[0].freed = True
    _one(checker.check(), "use-after-free", "in-flight Job")
    assert any("holds freed VmBo" in v.message for v in checker.violations)


def test_job_uses_freed_bo() -> None:
    dev, _, checker, bo = _job()
    bo.freed = True
    _one(checker.check(), "use-after-free", f"in-flight {dev.jobs[0]!r} uses freed")


def test_job_vma_unpinned() -> None:
    _, f, checker, bo = _job()
    vma = _vm_of(f).vma_of(bo)
    vma.pin_count = 0
    _one(checker.check(), "use-after-free", "is gone or unpinned while in-flight Job")


def test_job_vma_gone() -> None:
    """The legacy path: a job's VMA closed under it (a job's VMA gone)."""
    _, f, checker, bo = _job("legacy_pre_6_17")
    vma = _vm_of(f).vma_of(bo)
    vma.pin_count = 0
    _vm_of(f).unmap_vma(vma)
    _vm_of(f).close_vma(vma)
    _one(checker.check(), "use-after-free", "is gone or unpinned while in-flight Job")


def test_job_vma_unmapped() -> None:
    _, f, checker, bo = _job()
    vma = _vm_of(f).vma_of(bo)
    vma.mapped = False
    _one(checker.check(), "use-after-free", "is gone or unpinned")


# --- driver buffers ------------------------------------------------------------------------


def test_bo_dma_buf_released() -> None:
    _, f, checker = _dev()
    h = f.create_bo(P)
    f.prime_handle_to_fd(h)
    d = f.bo(h).dma_buf
    assert d is not None
    f.fds.fds.clear()  # so only the buffer's pointer reaches it
    f.prime_cache.clear()
    d.released = True
    _one(checker.check(), "use-after-free", ".dma_buf is released")


def test_vma_ref_held_by_closed_handle() -> None:
    _, f, checker = _dev()
    h = f.create_bo(P)
    f.get_iova(h)
    bo = f.bo(h)
    assert bo.vma_ref.total == 1 and checker.check() == []
    bo.vma_ref.holders[handle_holder(f, h + 5)] = 1
    bo.vma_ref.total += 1
    v = _one(checker.check(), "refcount", "vma_ref of")
    assert "the handle is closed" in v.message


def test_vma_ref_held_by_released_dmabuf() -> None:
    _, f, checker = _dev()
    h = f.create_bo(P)
    f.get_iova(h)
    fd = f.prime_handle_to_fd(h)
    d = f.fds.get(fd)
    bo = f.bo(h)
    bo.vma_ref.get(d)
    assert checker.check() == []
    d.released = True
    _one(checker.check(), "refcount", "the dma-buf is released")


def test_vma_ref_held_by_unpinned_framebuffer() -> None:
    _, f, checker = _dev()
    h = f.create_bo(P)
    fb = f.add_fb(h)
    f.bo(h).vma_ref.get(fb)
    _one(checker.check(), "refcount", "the framebuffer is not pinned")


def test_vma_ref_held_by_retired_job() -> None:
    dev, _, checker, bo = _job()
    job = dev.jobs[0]
    bo.vma_ref.get(job)
    assert checker.check() == []
    dev.jobs.remove(job)
    _one(checker.check(), "refcount", "the job retired")


def test_stale_mapping_after_unnotified_move() -> None:
    dgpu, igpu, client, comp, h = devices(IGPU)
    checker = LifetimeChecker(dgpu)
    checker.watch(igpu)
    ih = comp.prime_fd_to_handle(send(client, comp, h))
    att = comp.bo(ih).import_attach
    assert att is not None and checker.check() == []
    att.mappings = 1
    att.unnotified = Resource(Domain.VRAM)  # as an exporter move without move_notify leaves it
    v = _one(checker.check(), "stale-mapping", "still maps")
    assert "without move_notify" in v.message and not checker.ok
    assert checker.check() == []  # reported once per (attachment, old backing)


# --- VMs and buffers ------------------------------------------------------------------------


def test_freed_va_still_in_index() -> None:
    vm, checker = _vm()
    (va,) = vm.map(0, P, GemObject(P, name="b"))
    va.freed = True
    _one(checker.check(), "use-after-free", "still in vm's VA index")


def test_va_linked_to_freed_vm_bo() -> None:
    vm, checker = _vm()
    (va,) = vm.map(0, P, GemObject(P, name="b"))
    va.vm_bo.freed = True  # type: ignore[union-attr]
    _one(checker.check(), "use-after-free", "linked to freed VmBo(vm, b)")


def test_va_maps_freed_buffer() -> None:
    vm, checker = _vm()
    obj = GemObject(P, name="b")
    vm.map(0, P, obj)
    obj.freed = True
    _one(checker.check(), "use-after-free", "in vm maps freed GEM b")


def test_vm_bo_lists_freed_va() -> None:
    vm, checker = _vm()
    obj = GemObject(P, name="b")
    (va,) = vm.map(0, P, obj)
    vm.index.discard(va)  # out of the tree, still on its VmBo's list
    va.freed = True
    _one(checker.check(), "use-after-free", "VmBo(vm, b) still lists freed")


def test_freed_vm_bo_on_extobj_list() -> None:
    vm, checker = _vm()
    obj = GemObject(P, name="b")
    vm.map(0, P, obj)
    vb = obj.vm_bo_for(vm)
    assert vb is not None and vb in vm.extobj
    vb.freed = True
    _one(checker.check(), "use-after-free", "on vm's extobj list")


def test_freed_vm_bo_on_evict_list() -> None:
    vm, checker = _vm()
    obj = GemObject(P, name="b")
    vm.map(0, P, obj)
    vb = obj.vm_bo_for(vm)
    assert vb is not None
    vb.evict(True)
    del vm.extobj[vb]
    vb.freed = True
    _one(checker.check(), "use-after-free", "on vm's evict list")


def test_vm_bo_on_list_points_at_freed_buffer() -> None:
    vm, checker = _vm()
    obj = GemObject(P, name="b")
    vb = vm.bo_obtain(obj)
    vb.evict(True)
    obj.freed = True
    _one(checker.check(), "use-after-free", "on vm's evict list points at freed GEM b")


def test_legacy_vma_of_freed_buffer() -> None:
    _, f, checker = _dev("legacy_pre_6_17")
    h = f.create_bo(P)
    f.get_iova(h)
    f.bo(h).freed = True
    _one(checker.check(), "use-after-free", "of freed")


def test_freed_vm_bo_on_buffer_list() -> None:
    vm, checker = _vm()
    obj = GemObject(P, name="b")
    checker.watch(obj)
    vb = vm.bo_obtain(obj)
    vm.vm_bos.pop(vb)  # the VM forgot it, the buffer still lists it
    vb.freed = True
    _one(checker.check(), "use-after-free", "still on GEM b's VmBo list")


# --- recorded counts against recomputed edges ------------------------------------------------


def test_refcount_inconsistent() -> None:
    vm, checker = _vm()
    vm.refs.total += 1
    _one(checker.check(), "underflow", "refcount of GpuVm(vm) inconsistent")


def test_alive_with_refcount_zero() -> None:
    vm, checker = _vm()
    vm.refs.holders.clear()
    vm.refs.total = 0
    _one(checker.check(), "underflow", "GpuVm(vm) alive with refcount 0")


def test_transient_holder_leaked() -> None:
    vm, checker = _vm()
    vm.get(Holder("bind"))
    _one(checker.check(), "refcount", "still held by bind after the call that took it")


def test_device_buffer_keeps_creator_reference() -> None:
    _, f, checker = _dev()
    f.bo(f.create_bo(P)).get(OWNER)
    _one(checker.check(), "refcount", "keeps its creator's reference (leaked)")


def test_held_by_freed_holder() -> None:
    vm, checker = _vm()
    obj = GemObject(P, name="b")
    vb = vm.bo_obtain(obj)
    vm.vm_bos.pop(vb)  # not a live edge any more
    vb.freed = True
    obj.vm_bos.remove(vb)
    checker.watch(obj)
    _one(checker.check(), "refcount", "still held by freed VmBo(vm, b) (freed) [vm_bo]")


def test_held_without_live_edge() -> None:
    _, f, checker = _dev()
    bo = f.bo(f.create_bo(P))
    bo.get(handle_holder(f, 9))
    _one(checker.check(), "refcount", "[handle], which has no live edge to it (leaked")


def test_held_more_than_live_edges() -> None:
    _, f, checker = _dev()
    bo = f.bo(f.create_bo(P))
    bo.get(bo.handle_ref)  # the handles' one shared reference, taken twice
    v = _one(checker.check(), "refcount", "held 2x by")
    assert "but 1 live edge(s)" in v.message


def test_owner_reference_lost() -> None:
    _, f, checker = _dev()
    f.get_param()
    vm = _vm_of(f)
    vm.refs.total -= vm.refs.holders.pop(OWNER)
    _one(checker.check(), "refcount", "lost its owner reference while still in use")


def test_edge_without_reference_use_after_free_kinds() -> None:
    vm, checker = _vm()
    obj = GemObject(P, name="b")
    (va,) = vm.map(0, P, obj)
    vb = va.vm_bo
    assert vb is not None
    vb.refs.total -= vb.refs.holders.pop(va)  # the VA link without its reference
    v = _one(checker.check(), "use-after-free", "points at VmBo(vm, b) [va link] without holding")
    assert "(1 edge(s), 0 references)" in v.message


def test_edge_without_reference_refcount_kinds() -> None:
    _, f, checker = _dev()
    h = f.create_bo(P)
    f.get_iova(h)  # the context VMA keeps the buffer alive
    bo = f.bo(h)
    bo.refs.put(bo.handle_ref)
    _one(checker.check(), "refcount", "without holding a reference")


# --- close points: leaks and cycles ------------------------------------------------------------


def test_after_file_close_vm_not_freed() -> None:
    _, f, checker = _dev()
    f.set_param_vm_bind()
    f.get_param()
    _vm_of(f).get(Holder("stuck"))
    f.close()
    _one(checker.after_file_close(f), "leak", "of closed f not freed")


def test_after_file_close_legacy_vm_is_no_leak() -> None:
    _, f, checker = _dev("legacy_pre_6_17")
    f.get_iova(f.create_bo(P))
    f.close()
    assert checker.after_file_close(f) == []


def test_after_vm_close_deferred_list_never_drained() -> None:
    vm, checker = _vm()
    obj = GemObject(P, name="b")
    vm.map(0, P, obj)
    vb = obj.vm_bo_for(vm)
    assert vb is not None
    vm.bo_defer.append(vb)
    vm.get(Holder("stuck"))
    vm.close()
    found = checker.after_vm_close(vm)
    _one(found, "leak", "deferred VmBo list of vm never drained: VmBo(vm, b)")
    _one(found, "leak", "drm_gpuvm_bo_deferred_cleanup never ran")
    _one(found, "leak", "GpuVm(vm) not freed at close")


def test_after_vm_close_parked_vm_bo_holder() -> None:
    vm, checker = _vm()
    obj = GemObject(P, name="b")
    vb = vm.bo_obtain(obj)
    vb.get(Holder("deferred list", who=vm))
    vm.close()
    found = checker.after_vm_close(vm)
    assert [v.message for v in found if "parked on it" in v.message] == [
        "deferred VmBo list of vm never drained: VmBo(vm, b) parked on it"
    ]


def test_after_vm_close_freed_vm_is_clean() -> None:
    vm, checker = _vm()
    vm.close()
    assert vm.freed and checker.after_vm_close(vm) == []


def test_after_teardown_survivor() -> None:
    dev, f, checker = _dev()
    bo = f.bo(f.create_bo(P))
    bo.get(Holder("stuck"))
    f.close()
    dev.close()
    _one(checker.after_teardown(dev), "leak", "survives teardown")


def test_cycle_at_file_close() -> None:
    _, f, checker = _dev("gpuvm_legacy_trigger")
    f.get_iova(f.create_bo(P, name="c"))
    f.close()
    found = checker.after_file_close(f)
    v = _one(found, "cycle", "kept alive by cycle")
    assert "GEM c ->" in v.message and v.message.count("->") >= 3


def test_cycle_not_reported_when_a_root_holds() -> None:
    _, f, checker = _dev("gpuvm_legacy_trigger")
    h = f.create_bo(P, name="c")
    f.get_iova(h)
    assert checker._report_cycles(f.bo(h)) is False  # the handle still holds it


# --- operation checks -------------------------------------------------------------------------


def test_import_returned_closed_handle() -> None:
    _, f, checker = _dev()
    fd = f.prime_handle_to_fd(f.create_bo(P))
    _one(checker.check_import(f, fd, 99), "stale-import", f"import of fd {fd} returned closed")


def test_import_returned_another_buffer() -> None:
    _, f, checker = _dev()
    fd = f.prime_handle_to_fd(f.create_bo(P))
    other = f.create_bo(P)
    _one(checker.check_import(f, fd, other), "stale-import", "naming GEM")
    assert checker.check_import(f, fd, 1) == []


def test_split_lost_attributes() -> None:
    vm, checker = _vm()
    obj = GemObject(4 * P, name="b")
    (va,) = vm.map(0, 4 * P, obj)
    before = attributes(vm)
    va.user_flags = 7
    v = _one(checker.check_attributes(before, vm), "attributes", "kept its mapping but")
    assert "[0x0, 0x4000) of vm" in v.message
    assert checker.check_attributes(attributes(vm), vm) == []
    assert checker.check_attributes(before, vm, exempt=[(0, 4 * P)]) == []


def test_set_iova_zero_under_in_flight_job_is_a_hazard() -> None:
    """The deep run's finding (docs/lifetimes.md): ``MSM_INFO_SET_IOVA`` with iova 0 clears
    the VMA an in-flight submit uses; ``clear_iova`` has had no in-use check since "drm/msm:
    Remove vma use tracking" (<20230802222158.11838-5-robdclark@gmail.com>), so the model
    does it too.  The submit still holds the buffer, so nothing is freed: the checker
    reports a non-fatal ``hazard`` (the GPU faults on, or reaches whatever is mapped at,
    that iova), not a use-after-free."""
    dev, f, checker = _dev("legacy_pre_6_17")
    h = f.create_bo(P)
    f.submit([h])
    assert checker.check() == []
    f.set_iova(h, 0)  # accepted, as by the kernel
    (v,) = checker.check()
    assert checker.ok and checker.hazards == [v]
    assert v.kind == "hazard" and "MSM_INFO_SET_IOVA iova 0" in v.message
    assert "while in-flight Job" in v.message
    dev.retire_all()
    assert checker.check() == []


@pytest.mark.parametrize("policy", ["legacy_pre_6_17", "gpuvm_eager"])
def test_set_iova_zero_then_new_iova_under_in_flight_job(policy: str) -> None:
    """The deep run's second shape: SET_IOVA 0 under an in-flight submit, then GET_IOVA
    makes a new, unpinned VMA.  The job's own VMA is still the one userspace deleted (a
    hazard, not a use-after-free), and retiring the job does not unpin the new VMA the job
    never pinned (the kernel's submit unpin is per buffer since "drm/msm: Remove vma use
    tracking")."""
    dev, f, checker = _dev(policy)
    h = f.create_bo(P)
    f.submit([h])
    f.set_iova(h, 0)
    f.get_iova(h)
    found = checker.check()
    assert [v.kind for v in found] == ["hazard"], found
    assert "MSM_INFO_SET_IOVA iova 0" in found[0].message
    new = _vm_of(f).vma_of(f.bo(h))
    dev.retire_all()
    assert new.pin_count == 0 and _vm_of(f).vma_of(f.bo(h)) is new
    assert checker.check() == [] and checker.ok


@pytest.mark.parametrize("policy", ["legacy_pre_6_17", "gpuvm_eager"])
def test_job_vma_closed_by_the_kernel_is_not_excused(policy: str) -> None:
    """Only a VMA userspace deleted is excused: the job's VMA closed by any other path (here
    directly) is a use-after-free, even when the buffer has a new VMA since."""
    _, f, checker = _dev(policy)
    h = f.create_bo(P)
    f.get_param()
    f.submit([h])
    vm, bo = _vm_of(f), f.bo(h)
    vma = vm.vma_of(bo)
    vma.pin_count = 0
    vm.unmap_vma(vma)
    vm.close_vma(vma)
    assert not vma.user_cleared
    f.get_iova(h)
    _one(checker.check(), "use-after-free", "is gone or unpinned while in-flight Job")


# --- scanout through an unmapped iova (_scanout_mapped) ----------------------------------


def _on_plane() -> tuple[Device, LifetimeChecker, Any, Bo]:
    dev, f, checker = _dev()
    h = f.create_bo(P)
    fb = f.add_fb(h)
    f.page_flip(dev.plane(0), fb)
    assert checker.check() == [] and fb.prepare_count == 1
    return dev, checker, fb, f.bo(h)


def test_scanout_vma_unmapped() -> None:
    """The VMA exists but its page tables are gone (``mapped`` cleared directly)."""
    dev, checker, fb, bo = _on_plane()
    vma = dev.display_vm.vma_of(bo)  # type: ignore[union-attr]
    assert vma is not None
    vma.mapped = False
    v = _one(checker.check(), "unmapped-scanout", "is on a plane but")
    assert repr(fb) in v.message and "has no mapped VMA" in v.message and v.fatal


def test_scanout_vma_gone() -> None:
    """No VMA at all for the scanned-out buffer (its VmBo unlisted directly)."""
    dev, checker, _fb, bo = _on_plane()
    vm = dev.display_vm
    assert vm is not None
    saved = list(bo.vm_bos)
    bo.vm_bos.clear()
    try:
        assert vm.vma_of(bo) is None
        _one(checker.check(), "unmapped-scanout", "has no mapped VMA")
    finally:
        bo.vm_bos.extend(saved)


def test_scanout_check_skips_an_unprepared_fb() -> None:
    """A framebuffer not prepared on any plane is not scanned out: no finding."""
    dev, checker, fb, bo = _on_plane()
    vma = dev.display_vm.vma_of(bo)  # type: ignore[union-attr]
    assert vma is not None
    vma.mapped = False
    fb.prepare_count = 0
    assert [v for v in checker.check() if v.kind == "unmapped-scanout"] == []
