"""The lifetime checker: a clean lifecycle passes; each kind of finding is produced by the
smallest broken state that has it (use-after-free through lists, caches and tables; stale
and missing references per edge kind; transient holders; underflow; leaks at close points;
cycles); explain() labels every link with its edge kind."""

from __future__ import annotations

from gpuvm import Device, GemObject, GpuVm, Holder
from gpuvm.core.events import Mapped, RefPut
from gpuvm.core.refs import OWNER
from gpuvm.drm.file import handle_holder
from gpuvm.observe.checker import LifetimeChecker, edge_kind, explain

P = 4096


def _device(policy: str = "gpuvm_vma_ref") -> tuple[Device, LifetimeChecker]:
    dev = Device("msm", policy)
    return dev, LifetimeChecker(dev)


def test_clean_lifecycle_passes_for_every_edge_kind() -> None:
    dgpu = Device("nouveau", "gpuvm_vma_ref", name="dgpu", display=False)
    dev, checker = _device()
    checker.watch(dgpu)
    producer, comp, vk = dgpu.open(), dev.open(), dev.open()
    fd = producer.prime_handle_to_fd(producer.create_bo(4 * P))
    h = comp.prime_fd_to_handle(producer.fds.send(fd, comp.fds))
    comp.page_flip(dev.plane(), comp.add_fb(h))
    comp.get_param()
    own = comp.create_bo(2 * P)
    comp.submit([own])
    vk.set_param_vm_bind()
    hv = vk.create_bo(4 * P)
    from gpuvm.drm.file import BindMap

    vk.vm_bind([BindMap(1 << 32, 4 * P, hv)])
    vk.exec()
    assert checker.check() == []
    for f in (comp, vk, producer):
        f.close()
        assert checker.after_file_close(f) == []
    for t in (comp.fds, producer.fds):
        t.close_all()
    dev.close()
    dgpu.close()
    assert checker.after_teardown(dev) == [] and checker.after_teardown(dgpu) == []
    assert checker.ok and checker.verdict() == "ok: no lifetime violation"


def test_explain_labels_edge_kinds() -> None:
    dev, _ = _device()
    f = dev.open()
    h = f.create_bo(P, name="scanout")
    f.page_flip(dev.plane(), f.add_fb(h))
    text = explain(f.bo(h))
    assert "GEM scanout <-[handles]- handles of GEM scanout <-[handle]- handle 1 of DrmFile" in text
    assert "GEM scanout <-[framebuffer]- FB" in text
    assert "<-[plane]- plane state of plane0(gpu0)" in text
    assert "GEM scanout <-[vm_bo]- VmBo(gpu0.kms, scanout) <-[va link]- VMA(" in text


def test_cycle_reported_as_the_cycle_at_teardown() -> None:
    dev, checker = _device("gpuvm_legacy_trigger")
    f = dev.open()
    f.page_flip(dev.plane(), f.add_fb(f.create_bo(P, name="scanout")))
    f.close()
    dev.close()
    checker.after_teardown(dev)
    cyc = [v.message for v in checker.failures if v.kind == "cycle"]
    assert any(
        "cycle GEM scanout -> VMA(gpu0.kms 0x1000+0x1000 scanout mapped) -> "
        "VmBo(gpu0.kms, scanout) -> GEM scanout" in m
        for m in cyc
    ), cyc
    allowed = LifetimeChecker(allow={"cycle"})
    allowed.violations.extend(checker.violations)
    assert allowed.ok and not checker.ok


def test_stale_handle_reference_is_a_leak() -> None:
    dev, checker = _device()
    f = dev.open()
    bo = f.bo(f.create_bo(P))
    bo.get(handle_holder(f, 9))  # a handle that does not exist
    (v,) = checker.check()
    assert v.kind == "refcount" and "[handle], which has no live edge" in v.message


def test_edge_without_reference_is_flagged() -> None:
    dev, checker = _device()
    f = dev.open()
    h = f.create_bo(P)
    f.get_iova(h)  # context VMA holds a VmBo which holds the buffer
    bo = f.bo(h)
    bo.refs.put(bo.handle_ref)  # the handles lose their one reference, keep their entries
    msgs = [v.message for v in checker.check()]
    assert any("points at GEM" in m and "[handles] without holding a reference" in m for m in msgs)


def test_transient_holder_left_behind_is_flagged() -> None:
    vm = GpuVm(0, 16 * P, name="vm", vm_free=lambda vm: None)
    checker = LifetimeChecker(vm)
    vm.get(Holder("apply"))
    (v,) = checker.check()
    assert "still held by apply after the call that took it" in v.message


def test_use_after_free_through_the_extobj_list() -> None:
    vm = GpuVm(0, 16 * P, name="vm", vm_free=lambda vm: None)
    obj = GemObject(P, name="ext")
    checker = LifetimeChecker(vm)
    vm.map(0, P, obj)
    vm_bo = obj.vm_bo_for(vm)
    assert vm_bo is not None and vm_bo in vm.extobj
    vm_bo.drop_obj_ref()  # the weak-reference quirk
    obj.put(OWNER)  # freed while mapped and listed
    msgs = [v.message for v in checker.check()]
    assert "VmBo(vm, ext) on vm's extobj list points at freed GEM ext (freed)" in msgs
    assert any("maps freed GEM ext" in m for m in msgs)


def test_use_after_free_through_prime_cache_and_fd_table() -> None:
    dev, checker = _device()
    f = dev.open()
    fd = f.prime_handle_to_fd(f.create_bo(P))
    f.fds.get(fd).released = True  # as if released behind the cache's and fd's back
    msgs = [v.message for v in checker.check() if v.kind == "use-after-free"]
    assert any("PRIME cache names released" in m for m in msgs)
    assert any(f"fd {fd} of" in m and "names released" in m for m in msgs)


def test_broken_dma_buf_rule_is_reported_once_wherever_the_dma_buf_is_reached() -> None:
    dgpu = Device("nouveau", "gpuvm_vma_ref", name="dgpu", display=False)
    dev, checker = _device()
    checker.watch(dgpu)
    producer, comp = dgpu.open(), dev.open()
    fd = producer.prime_handle_to_fd(producer.create_bo(4 * P))
    comp.prime_fd_to_handle(producer.fds.send(fd, comp.fds))
    d = producer.fds.get(fd)
    assert checker.check() == []
    # As a buggy exporter would leave it: a mapping kept across a move.
    d.violations.append("attachment mapped across a move without move_notify")
    found = checker.check()
    assert [v.kind for v in found] == ["dma-buf"] and "move_notify" in found[0].message
    assert not checker.ok and checker.check() == []  # reported once


def test_underflow_and_freed_page_tables_from_events() -> None:
    vm = GpuVm(0, 16 * P, name="vm", vm_free=lambda vm: None)
    checker = LifetimeChecker(vm, bus=vm.bus)
    obj = GemObject(P, name="b", bus=vm.bus)
    vm.bus.emit(RefPut(obj, Holder("nobody")))
    obj.put(OWNER)
    vm.bus.emit(Mapped(vm, 0, P, obj, 0))
    kinds = [v.kind for v in checker.violations]
    assert kinds == ["underflow", "use-after-free"]
    assert "which holds none" in checker.violations[0].message


def test_vm_close_leak_explained() -> None:
    vm = GpuVm(0, 16 * P, name="vm", vm_free=lambda vm: None)
    checker = LifetimeChecker(vm)
    vm.get(Holder("forgotten"))
    vm.close()
    (v,) = checker.after_vm_close(vm)
    assert v.kind == "leak" and "GpuVm(vm) <-[forgotten]- forgotten" in v.message


def test_file_close_leaves_its_vm_bind_vm_alive() -> None:
    dev, checker = _device()
    f = dev.open()
    f.set_param_vm_bind()
    f.get_param()
    assert f.vm is not None
    f.vm.get(Holder("driver bug"))
    f.close()
    msgs = [v.message for v in checker.after_file_close(f)]
    assert any("of closed" in m and "not freed" in m and "driver bug" in m for m in msgs), msgs


def test_edge_kind_names() -> None:
    dev, _ = _device()
    f = dev.open()
    bo = f.bo(f.create_bo(P))
    assert edge_kind(bo, handle_holder(f, 1)) == "handle"
    assert edge_kind(bo, OWNER) == "owner"
    assert edge_kind(bo, Holder("bind")) == "transient bind"
    assert edge_kind(bo, Holder("deferred list")) == "deferred list"
