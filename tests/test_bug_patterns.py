"""Known GPU VA lifetime bug patterns as short scenarios the lifetime checker flags (or,
for the one that is a cost rather than a bug, prices).  Each scenario also runs the
correct variant, which the checker must pass."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

import gpuvm
from gpuvm import Device, GemObject, GpuVm, GpuVmFlags
from gpuvm.core.errors import InvalidRange
from gpuvm.drm.device import snapshot
from gpuvm.drm.policies import LegacyPre617
from gpuvm.observe.checker import LifetimeChecker, attributes
from gpuvm.observe.costs import CostCounters, get_preset
from gpuvm.observe.trace import Session
from gpuvm.testing.mutants import (
    cache_imports_by_fd,
    leak_refs_on_failed_bind,
    patched,
    split_drops_attributes,
)

P = 4096
BASE = 1 << 32


def _kinds(checker: LifetimeChecker) -> set[str]:
    return {v.kind for v in checker.violations}


# 1. a bind array whose last op fails must roll back everything ------------------------------


def _bind_array_last_fails() -> tuple[bool, LifetimeChecker]:
    s = Session()
    d = s.do("device", flavour="msm", policy="gpuvm_vma_ref", display=False)
    f = s.do("open", device=d, fds=s.do("process"))
    s.do("set_param_vm_bind", file=f)
    h = s.do("create_bo", file=f, size=8 * P)
    s.do("vm_bind", file=f, ops=[["map", BASE, 2 * P, h, 0]])
    before = snapshot(s.obj(d))
    ops = [
        ["map", BASE + 4 * P, 2 * P, h, 0],
        ["unmap", BASE, P],
        ["map", BASE + 16 * P, 0, h, 0],  # refused: zero range
    ]
    with contextlib.suppress(InvalidRange):
        s.do("vm_bind", file=f, ops=ops)
    s.checker.check()
    return snapshot(s.obj(d)) == before, s.checker


def test_bind_array_last_op_fails_rolls_back_everything() -> None:
    unchanged, checker = _bind_array_last_fails()
    assert unchanged and checker.ok, checker.verdict()


def test_bind_array_without_rollback_is_flagged() -> None:
    with leak_refs_on_failed_bind():
        unchanged, checker = _bind_array_last_fails()
    assert not unchanged
    assert not checker.ok
    assert any("bind" in v.message and "after the call" in v.message for v in checker.failures)


# 2. a split that loses per-VA attributes -----------------------------------------------------


def _split_flagged_va() -> LifetimeChecker:
    vm = GpuVm(0, 64 * P, name="vm", vm_free=lambda vm: None)
    checker = LifetimeChecker(vm)
    (va,) = vm.map(0, 8 * P, None, 0)  # a null (sparse) mapping
    va.user_flags = 0b100
    va.invalidate()
    before = attributes(vm)
    vm.unmap(3 * P, P)  # split: prev [0, 3) and next [4, 8)
    checker.check_attributes(before, vm)
    checker.check()
    return checker


def test_split_keeps_per_va_attributes() -> None:
    checker = _split_flagged_va()
    assert checker.ok, checker.verdict()


def test_split_that_loses_attributes_is_flagged() -> None:
    if gpuvm.compiled():
        pytest.skip(
            "patches GpuVm.apply, which the compiled core calls natively: the mutant is "
            "pure-only (docs/compiled.md)"
        )
    with split_drops_attributes():
        checker = _split_flagged_va()
    assert _kinds(checker) == {"attributes"}
    assert "(True, True, 4) to (False, True, 4)" in checker.failures[0].message


# 3. a VMA freed while a submit still uses it ------------------------------------------------


class NoSubmitRefs(LegacyPre617):
    """Legacy teardown at buffer free, but a submit does not hold its buffers."""

    name = "no_submit_refs"
    job_holds_bos = False


def test_vma_freed_under_an_inflight_submit_is_flagged() -> None:
    dev = Device("msm", NoSubmitRefs)
    checker = LifetimeChecker(dev)
    f = dev.open()
    f.get_param()
    h = f.create_bo(4 * P)
    f.submit([h])
    f.gem_close(h)  # last reference: the buffer and its VMA die under the job
    checker.check()
    msgs = [v.message for v in checker.failures]
    assert any("in-flight Job" in m and "uses freed GEM" in m for m in msgs), msgs


def test_submit_holding_its_buffers_keeps_the_vma() -> None:
    dev = Device("msm", "legacy_pre_6_17")
    checker = LifetimeChecker(dev)
    f = dev.open()
    f.get_param()
    h = f.create_bo(4 * P)
    f.submit([h])
    f.gem_close(h)
    checker.check()
    dev.retire_all()
    checker.check()
    assert checker.ok, checker.verdict()


# 4. the deferred VmBo list never drained at VM close ---------------------------------------


def _deferred(drain: bool) -> tuple[GpuVm, LifetimeChecker]:
    """An IMMEDIATE_MODE VM whose job (run_job, a fence-signalling section) unmaps a buffer's
    last VA with the deferred unlink: the VmBo becomes a zombie on the VM's deferred list,
    still holding the VM and the buffer, until ``bo_deferred_cleanup`` runs."""
    vm = GpuVm(0, 64 * P, name="vm", flags=GpuVmFlags.IMMEDIATE_MODE, vm_free=lambda vm: None)
    checker = LifetimeChecker(vm)
    obj = GemObject(4 * P, name="bo")
    [va] = vm.map(0, 4 * P, obj)
    with vm.fence_signalling():
        vm.remove(va)
        vm.unlink_defer(va)
    vm.free_va(va)
    assert vm.bo_defer and vm.bo_defer[0].zombie
    if drain:  # drm_gpuvm_bo_deferred_cleanup, e.g. from the VM_BIND ioctl's cleanup work
        vm.bo_deferred_cleanup()
    vm.close()
    checker.after_vm_close(vm)
    return vm, checker


def test_deferred_list_drained_before_close() -> None:
    vm, checker = _deferred(drain=True)
    assert vm.freed and checker.ok, checker.verdict()


def test_deferred_list_never_drained_is_a_leak() -> None:
    vm, checker = _deferred(drain=False)
    assert not vm.freed
    msgs = [v.message for v in checker.failures]
    assert any("deferred VmBo list of vm never drained" in m for m in msgs), msgs
    cycles = [v.message for v in checker.failures if v.kind == "cycle"]
    assert any(
        "deferred list of GpuVm(vm) -> VmBo(vm, bo) (zombie) -> GpuVm(vm)" in m for m in cycles
    ), cycles


# 5. an importer that borrows the exporter's reservation without a reference -----------------


@contextlib.contextmanager
def import_without_reference() -> Iterator[None]:
    """A foreign import that shares the dma-buf's reservation but takes no dma-buf
    reference (so nothing keeps the exporter's buffer, and its resv, alive)."""
    import gpuvm.drm.prime

    orig = gpuvm.drm.prime._import_foreign

    def borrow(file: Any, d: Any, **kw: Any) -> Any:
        bo = orig(file, d, **kw)
        bo.free_hooks.remove(gpuvm.drm.prime._imported_free)
        d.refs.put(bo)  # give the reference back: only the resv pointer remains
        bo.free_hooks.append(lambda obj: d.detach(obj.import_attach))
        return bo

    with patched(gpuvm.drm.prime, "_import_foreign", borrow):
        yield


def _import(mutate: bool) -> tuple[LifetimeChecker, Any]:
    dgpu = Device("nouveau", "gpuvm_vma_ref", name="dgpu", display=False)
    dev = Device("msm", "gpuvm_vma_ref")
    checker = LifetimeChecker(dev, dgpu)
    producer, comp = dgpu.open(), dev.open()
    fd = producer.prime_handle_to_fd(producer.create_bo(4 * P))
    with import_without_reference() if mutate else contextlib.nullcontext():
        h = comp.prime_fd_to_handle(producer.fds.send(fd, comp.fds))
    checker.check()
    return checker, comp.bo(h)


def test_import_holds_the_exporters_dma_buf() -> None:
    checker, bo = _import(mutate=False)
    assert checker.ok, checker.verdict()
    assert bo.resv is bo.import_attach.dmabuf.resv


def test_import_borrowing_the_reservation_is_flagged() -> None:
    checker, _ = _import(mutate=True)
    msgs = [v.message for v in checker.failures]
    assert any("[import attachment] without holding a reference" in m for m in msgs), msgs


# 6. a cache keyed by fd number returns a stale buffer after fd reuse -------------------------


def _fd_reuse() -> LifetimeChecker:
    s = Session()
    d = s.do("device", flavour="msm", policy="gpuvm_vma_ref", display=False)
    p = s.do("process")
    client, comp = s.do("open", device=d, fds=p), s.do("open", device=d, fds=p)
    for size in (P, 2 * P):  # two buffers shared one after the other
        h = s.do("create_bo", file=client, size=size)
        fd = s.do("prime_handle_to_fd", file=client, handle=h)
        assert fd == 3  # the number is reused
        s.do("prime_fd_to_handle", file=comp, fd=fd)
        s.do("fd_close", table=p, fd=fd)
    return s.checker


def test_import_after_fd_reuse_names_the_new_buffer() -> None:
    checker = _fd_reuse()
    assert checker.ok, checker.verdict()


def test_cache_keyed_by_fd_number_is_flagged() -> None:
    with cache_imports_by_fd():
        checker = _fd_reuse()
    assert _kinds(checker) == {"stale-import"}
    assert "returned handle 1 naming GEM d0.bo1" in checker.failures[0].message


# 7. re-importing the same dma-buf every pageflip: priced, not an error -----------------------


def _reimport_flips(reimport: bool, frames: int = 6) -> tuple[LifetimeChecker, float, int]:
    dgpu = Device("nouveau", "gpuvm_vma_ref", name="dgpu", display=False)
    dev = Device("msm", "gpuvm_vma_ref")
    checker = LifetimeChecker(dev, dgpu)
    producer, comp = dgpu.open(), dev.open()
    fds = [producer.prime_handle_to_fd(producer.create_bo(1 << 20)) for _ in range(2)]
    kept = [comp.add_fb(comp.prime_fd_to_handle(producer.fds.send(fd, comp.fds))) for fd in fds]
    counters = CostCounters(dev.bus)
    old = None
    for i in range(frames):
        if reimport:  # a new import and framebuffer each frame, handle closed after ADDFB
            fd = producer.fds.send(fds[i % 2], comp.fds)
            h = comp.prime_fd_to_handle(fd)
            comp.fds.close(fd)
            fb = comp.add_fb(h)
            comp.gem_close(h)
        else:
            fb = kept[i % 2]
        comp.page_flip(dev.plane(), fb)
        if reimport and old is not None:
            comp.rm_fb(old)
        old = fb
        checker.check()
    counts = counters.vm(dev.display_vm)
    return checker, get_preset("msm-kms").cost(counts) / frames, counts.map_ops


def test_reimport_every_flip_is_priced_not_flagged() -> None:
    checker, ms_per_flip, maps = _reimport_flips(reimport=True)
    assert checker.ok, checker.verdict()
    steady_checker, steady_ms, steady_maps = _reimport_flips(reimport=False)
    assert steady_checker.ok
    assert maps == 6 and steady_maps == 2  # one map per flip vs the two first uses
    assert ms_per_flip > 2 * steady_ms > 0


# 8. a derived pointer (obj.dma_buf) cleared at last handle close while a framebuffer still
#    holds the buffer -----------------------------------------------------------------------


def test_derived_dma_buf_pointer_cleared_under_a_framebuffer_is_flagged() -> None:
    dgpu = Device("nouveau", "gpuvm_vma_ref", name="dgpu", display=False)
    dev = Device("msm", "gpuvm_vma_ref")
    checker = LifetimeChecker(dev, dgpu)
    producer, comp = dgpu.open(), dev.open()
    fd = producer.prime_handle_to_fd(producer.create_bo(4 * P))
    h = comp.prime_fd_to_handle(producer.fds.send(fd, comp.fds))
    fb = comp.add_fb(h)
    comp.page_flip(dev.plane(), fb)
    checker.check()
    assert not checker.violations
    comp.gem_close(h)  # handle_count 0: obj->dma_buf is dropped, the fb still holds the bo
    checker.check()
    (hazard,) = checker.hazards
    assert "derived pointer GEM dgpu.bo1.dmabuf@gpu0.dma_buf cleared" in hazard.message
    assert "FB" in hazard.message
    assert checker.ok  # a hazard (the kernel's behaviour), not a failure
