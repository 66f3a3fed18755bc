"""DRM files: the handle table, GEM_CLOSE, legacy iova ioctls, VM_BIND, submits, refusals
that change nothing, and file close releasing everything the file held (a leak-free mixed
workload frees every buffer, VM and dma-buf under every leak-free policy)."""

from __future__ import annotations

import errno as E

import pytest
from flip_scenarios import FB_SIZE, freed, of

from gpuvm import EventLog
from gpuvm.core.errors import BadFd, BadHandle, Busy, GpuvmError, InvalidRange, NoSpace
from gpuvm.core.events import Ioctl, Mapped, VmaCreated, VmaDestroyed
from gpuvm.drm.device import Device, snapshot
from gpuvm.drm.driver import Bo, DriverVm
from gpuvm.drm.file import BindMap, BindUnmap
from gpuvm.drm.policies import POLICIES

LEAK_FREE = sorted(set(POLICIES) - {"gpuvm_legacy_trigger"})
MIB = 1 << 20


def test_handles_are_lowest_free_and_counted() -> None:
    dev = Device("msm", "gpuvm_vma_ref")
    f = dev.open()
    h1, h2 = f.create_bo(MIB), f.create_bo(MIB)
    assert (h1, h2) == (1, 2)
    bo1 = f.bo(h1)
    assert bo1.handle_count == 1 and f.handle_counts == {bo1: 1, f.bo(h2): 1}
    f.gem_close(h1)
    assert freed(bo1) and f.create_bo(MIB) == 1
    with pytest.raises(BadHandle) as ei:
        f.gem_close(9)
    assert ei.value.errno == E.EINVAL  # drm_gem_handle_delete
    dev.check_invariants()


def test_every_ioctl_emits_an_event() -> None:
    dev = Device("msm", "gpuvm_vma_ref")
    log = EventLog()
    dev.bus.subscribe(log)
    f = dev.open()
    h = f.create_bo(MIB)
    f.get_iova(h)
    with pytest.raises(BadHandle):
        f.gem_close(7)  # a refused ioctl still was an ioctl
    assert [e.name for e in of(log, Ioctl)] == ["GEM_NEW", "GEM_INFO", "GEM_CLOSE"]
    assert all(e.file is f for e in of(log, Ioctl))


def test_get_iova_is_lazy_and_set_iova_places() -> None:
    for policy in ("legacy_pre_6_17", "gpuvm_vma_ref"):
        dev = Device("msm", policy)
        log = EventLog()
        dev.bus.subscribe(log)
        f = dev.open()
        h, h2 = f.create_bo(MIB), f.create_bo(MIB)
        iova = f.get_iova(h)
        assert iova == dev.context_window[0] and f.get_iova(h) == iova
        assert not of(log, Mapped)
        target = iova + 16 * MIB
        f.set_iova(h2, target)
        assert f.get_iova(h2) == target
        before = snapshot(dev)
        with pytest.raises(Busy):
            f.set_iova(h2, target + MIB)  # already placed elsewhere
        with pytest.raises(Busy):
            f.set_iova(h, target)  # h already has another iova
        assert snapshot(dev) == before
        f.set_iova(h2, 0)
        with pytest.raises(NoSpace):
            f.set_iova(h2, iova)  # occupied by h
        assert snapshot(dev) != before
        f.submit([h])
        assert len(of(log, Mapped)) == 1  # mapped at the first pin
        dev.retire_all()
        dev.check_invariants()


def test_get_iova_enospc_in_a_full_context_vm_changes_nothing() -> None:
    dev = Device("msm", "gpuvm_vma_ref", context_window=(0x1_0000_0000, 2 * MIB))
    f = dev.open()
    small, big = f.create_bo(MIB), f.create_bo(3 * MIB)
    before = snapshot(dev)
    with pytest.raises(NoSpace):
        f.get_iova(big)  # fresh file: the VM would be created, but the call fails first
    with pytest.raises(NoSpace):
        f.submit([small, big])
    assert snapshot(dev) == before and f.vm is None and f.mode is None
    f.get_iova(small)
    before = snapshot(dev)
    with pytest.raises(NoSpace):
        f.submit([small, big])
    assert snapshot(dev) == before


def test_vm_bind_all_or_nothing_and_bad_handles() -> None:
    dev = Device("msm", "gpuvm_vma_ref")
    f = dev.open()
    f.set_param_vm_bind()
    h = f.create_bo(4 * MIB)
    base = dev.context_window[0]
    before = snapshot(dev)
    with pytest.raises(BadHandle):
        f.vm_bind([BindMap(base, MIB, h), BindMap(base + MIB, MIB, 99)])
    with pytest.raises(InvalidRange):
        f.vm_bind([BindMap(base, MIB, h), BindUnmap(base - MIB, MIB)])  # below the window
    assert snapshot(dev) == before and f.state.value == "vm_bind, VM not created"
    f.vm_bind([BindMap(base, 2 * MIB, h), BindMap(base + 4 * MIB, MIB, None)])
    vm = f.vm
    assert isinstance(vm, DriverVm) and len(vm.vas) == 2
    f.vm_bind([BindUnmap(base + MIB, MIB)])  # splits the first mapping
    assert [(v.addr - base, v.range) for v in vm.vas] == [(0, MIB), (4 * MIB, MIB)]
    dev.check_invariants()


def test_closed_file_refuses_everything() -> None:
    dev = Device("msm", "gpuvm_vma_ref")
    f = dev.open()
    f.create_bo(MIB)
    f.close()
    before = snapshot(dev)
    with pytest.raises(BadFd):
        f.create_bo(MIB)
    with pytest.raises(BadFd):
        f.close()
    assert snapshot(dev) == before


def mixed_workload(policy: str) -> tuple[Device, Device, list[Bo]]:
    """A compositor with a swapchain on screen, a same-device client sharing a buffer, a
    foreign producer, a legacy GPU client with jobs still in flight, and a VM_BIND client."""
    dev = Device("msm", policy, planes=2)
    dgpu = Device("nouveau", "gpuvm_vma_ref", name="dgpu", display=False)
    comp = dev.open(name="comp")
    client = dev.open(name="client")
    gl = dev.open(name="gl")
    producer = dgpu.open(name="producer")
    fbs = [comp.add_fb(comp.create_bo(FB_SIZE)) for _ in range(2)]
    ch = client.create_bo(FB_SIZE)
    shared = comp.prime_fd_to_handle(client.fds.send(client.prime_handle_to_fd(ch), comp.fds))
    fbs.append(comp.add_fb(shared))
    comp.gem_close(shared)
    foreign_fd = producer.fds.send(
        producer.prime_handle_to_fd(producer.create_bo(FB_SIZE)), comp.fds
    )
    fh = comp.prime_fd_to_handle(foreign_fd)
    fbs.append(comp.add_fb(fh))
    for i in range(8):
        comp.page_flip(dev.plane(0), fbs[i % 4])
        comp.page_flip(dev.plane(1), fbs[(i + 1) % 4])
    tex = gl.create_bo(MIB)
    gl.submit([tex])
    gl.submit([tex, gl.prime_fd_to_handle(client.fds.send(client.prime_handle_to_fd(ch), gl.fds))])
    if policy != "legacy_pre_6_17":
        vk = dev.open(name="vk")
        vk.set_param_vm_bind()
        vh = vk.create_bo(2 * MIB)
        vk.vm_bind([BindMap(dev.context_window[0], 2 * MIB, vh)])
        vk.exec()
    bos = list(dev.live_bos) + list(dgpu.live_bos)
    dev.check_invariants()
    return dev, dgpu, bos


@pytest.mark.parametrize("policy", LEAK_FREE)
def test_file_close_frees_every_object(policy: str) -> None:
    dev, dgpu, bos = mixed_workload(policy)
    log = EventLog()
    dev.bus.subscribe(log)
    tables = {id(f.fds): f.fds for d in (dev, dgpu) for f in d.files}
    for f in list(dev.files):
        f.close()
        dev.check_invariants()
    for t in tables.values():
        t.close_all()
    for f in list(dgpu.files):
        f.close()
    assert dev.close() == []
    assert dgpu.close() == []
    assert all(freed(b) for b in bos)
    assert dev.live_bos == {} and dgpu.live_bos == {}
    assert dev.live_vms == {} and dgpu.live_vms == {}
    assert dev.dmabufs == {} and dgpu.dmabufs == {} and dev.framebuffers == {}
    assert dev.stats["bos_created"] == dev.stats["bos_freed"]
    assert dev.stats["vms_created"] == dev.stats["vms_freed"] >= 2
    assert dev.reports == [] and dev.jobs == []


def test_leak_report_names_what_keeps_objects_alive() -> None:
    dev, _, _ = mixed_workload("gpuvm_vma_ref")
    report = dev.leak_report()  # files still open: everything is held, not leaked
    assert any("<- handle 1 of DrmFile(comp)" in line for line in report)


def test_refused_calls_on_busy_or_purged_buffers_change_nothing() -> None:
    dev = Device("msm", "gpuvm_vma_ref")
    f = dev.open()
    h = f.create_bo(MIB)
    f.submit([h])
    bo = f.bo(h)
    before = snapshot(dev)
    with pytest.raises(Busy):
        dev.evict(bo)
    assert snapshot(dev) == before
    dev.retire_all()
    dev.purge(bo)
    before = snapshot(dev)
    with pytest.raises(Busy):
        f.submit([h])
    assert snapshot(dev) == before


def test_refusals_are_gpuvm_errors_with_errnos() -> None:
    dev = Device("msm", "gpuvm_vma_ref")
    f = dev.open()
    for call in (lambda: f.bo(5), lambda: f.fds.get(40), lambda: f.exec()):
        with pytest.raises(GpuvmError) as ei:
            call()
        assert ei.value.errno in (E.ENOENT, E.EBADF, E.EINVAL)


def test_vm_bind_vmas_emit_the_same_vma_events() -> None:
    dev = Device("msm", "gpuvm_vma_ref")
    log = EventLog()
    dev.bus.subscribe(log, [VmaCreated, VmaDestroyed])
    f = dev.open()
    f.set_param_vm_bind()
    h = f.create_bo(MIB)
    base = dev.context_window[0]
    f.vm_bind([BindMap(base, MIB, h)])
    f.vm_bind([BindUnmap(base + 4096, 4096)])  # a REMAP: one VMA goes, two pieces come
    f.close()
    kinds = [type(e).__name__ for e in log.events]
    assert kinds.count("VmaCreated") == 3 and kinds.count("VmaDestroyed") == 3
