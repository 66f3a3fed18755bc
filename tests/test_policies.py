"""Teardown policies: the per-frame re-import table of a GPU consumer (a PRIME cache hit in
``drm_gem_prime_fd_to_handle`` returns the same handle; after the last close a foreign import
makes a new GEM object), the leak report that
names the buffer -> VMA -> VmBo -> buffer cycle, the weak-ref quirk's use-after-free, the
6.17 handle-close and ``vma_ref`` rules, eviction, and a user-written policy."""

from __future__ import annotations

import errno as E

import pytest
from flip_scenarios import FB_SIZE, FLIP_SCENARIOS, freed, of, reimport

from gpuvm import EventLog, explain
from gpuvm.core.errors import Busy, UseAfterFree
from gpuvm.core.events import Mapped, Unmapped, VmaCreated, VmaDestroyed
from gpuvm.core.refs import cycles
from gpuvm.drm.device import Device, format_cycle, snapshot
from gpuvm.drm.driver import DriverVm, ManagedVm
from gpuvm.drm.file import BindMap, BindUnmap
from gpuvm.drm.kms import Framebuffer
from gpuvm.drm.policies import (
    POLICIES,
    GpuvmVmaRef,
    TeardownPolicy,
    dangling_vm_bos,
    make_policy,
)
from legacy import path

# --- re-import: extra VA operations per frame for a GPU consumer ---------------------------

PRE = ("legacy_pre_6_17", "separate_tracker", "weak_ref_quirk")
CTX_617 = ("gpuvm_vma_ref", "gpuvm_eager")
BIND = ("gpuvm_vma_ref", "gpuvm_eager", "separate_tracker", "weak_ref_quirk")

#              (foreign, close each frame): (pre-6.17 legacy, 6.17 legacy ctx, VM_BIND ctx)
REIMPORT_TABLE = {
    (False, False): ((0, 0), (0, 0), (0, 0)),
    (True, False): ((0, 0), (0, 0), (0, 0)),
    (False, True): ((0, 0), (1, 1), (1, 1)),
    (True, True): ((1, 1), (1, 1), (1, 1)),
}


def _cases() -> list[tuple[bool, bool, str, bool, int]]:
    out = []
    for foreign, close in REIMPORT_TABLE:
        out += [(foreign, close, p, False, 0) for p in PRE]
        out += [(foreign, close, p, False, 1) for p in CTX_617]
        out += [(foreign, close, p, True, 2) for p in BIND]
    return out


@pytest.mark.parametrize(("foreign", "close", "policy", "vm_bind", "column"), _cases())
def test_section6_reimport(
    foreign: bool, close: bool, policy: str, vm_bind: bool, column: int
) -> None:
    r = reimport(policy, foreign_src=foreign, close_each_frame=close, vm_bind=vm_bind)
    assert (r.maps, r.unmaps) == REIMPORT_TABLE[(foreign, close)][column]
    assert r.tlb == r.unmaps


# --- leaks are explained ---------------------------------------------------------------------


def test_legacy_trigger_with_gpuvm_refs_leaks_through_a_named_cycle() -> None:
    dev = Device("msm", "gpuvm_legacy_trigger")
    f = dev.open(name="comp")
    h = f.create_bo(FB_SIZE, name="scanout")
    fb = f.add_fb(h)
    f.page_flip(dev.plane(), fb)
    bo = f.bo(h)
    f.close()
    report = dev.close()
    assert not freed(bo) and dev.live_bos == {bo: None}
    vm = dev.display_vm
    assert isinstance(vm, ManagedVm) and not vm.freed  # the VM leaks with its buffers
    line = next(r for r in report if r.startswith("leak: GEM scanout"))
    assert "cycle GEM scanout -> VMA(gpu0.kms" in line and line.endswith(
        "-> VmBo(gpu0.kms, scanout) -> GEM scanout"
    )
    (cyc,) = cycles(bo)
    assert [type(x).__name__ for x in cyc] == ["Bo", "VmBo", "ManagedVa", "Bo"]
    assert format_cycle(cyc).startswith("GEM scanout -> VMA(")
    assert "[cycle]" in explain(bo)
    assert any(r.startswith("leak: GpuVm(gpu0.kms)") and "cycle" in r for r in report)


def test_recreating_framebuffers_leaks_one_buffer_per_frame_with_the_legacy_trigger() -> None:
    dev, r = FLIP_SCENARIOS["recreate_every_frame"]("gpuvm_legacy_trigger")
    assert (r.maps, r.unmaps) == (1, 0)
    assert len(dev.live_bos) >= 12  # every imported buffer is still alive


@pytest.mark.parametrize("policy", sorted(set(POLICIES) - {"gpuvm_legacy_trigger"}))
def test_leak_free_flips_free_everything(policy: str) -> None:
    for scenario, fn in FLIP_SCENARIOS.items():
        dev, _ = fn(policy)
        tables = {id(f.fds): f.fds for f in dev.files}
        for f in list(dev.files):
            f.close()
        for t in tables.values():
            t.close_all()
        report = dev.close()
        assert report == [], (scenario, report)
        assert dev.live_vms == {} and dev.dmabufs == {}


# --- the weak-ref quirk's use-after-free -------------------------------------------------------


def test_weak_ref_quirk_use_after_free_is_detected() -> None:
    dev = Device("msm", "weak_ref_quirk")
    f = dev.open(name="app")
    h = f.create_bo(1 << 20, name="tex")
    other = f.create_bo(1 << 20, name="other")
    bo = f.bo(h)
    job = f.submit([h])  # the job holds the VmBo, which (weakly) does not hold the buffer
    vm = f.vm
    assert isinstance(vm, ManagedVm) and vm.weak_refs
    vm_bo = bo.vm_bo_for(vm)
    assert vm_bo is not None and not vm_bo.holds_obj and vm_bo in vm.extobj
    f.gem_close(h)  # legal for userspace: the kernel is supposed to keep the buffer alive
    assert freed(bo)
    assert any("use-after-free" in r and "extobj" in r for r in dev.reports), dev.reports
    assert dangling_vm_bos(vm) and dev.audit()
    with pytest.raises(AssertionError, match="freed buffer"):
        vm.check_invariants()
    before = snapshot(dev)
    with pytest.raises(UseAfterFree) as ei:
        f.submit([other])  # would lock the extobj list and touch the dead buffer
    assert ei.value.errno == E.EFAULT
    assert snapshot(dev) == before
    dev.retire(job)  # retire touches the dead buffer too, and is reported
    assert any("retire" in r for r in dev.reports)
    assert dangling_vm_bos(vm) == [] and dev.audit() == []
    f.submit([other])
    dev.retire_all()
    dev.check_invariants()


@pytest.mark.parametrize("policy", ["gpuvm_vma_ref", "gpuvm_eager", "gpuvm_legacy_trigger"])
def test_hard_vm_bo_references_keep_the_buffer_alive(policy: str) -> None:
    dev = Device("msm", policy)
    f = dev.open()
    h = f.create_bo(1 << 20)
    bo = f.bo(h)
    f.submit([h])
    f.gem_close(h)
    assert dev.reports == [] and dev.audit() == []
    if policy == "gpuvm_legacy_trigger":
        assert not freed(bo)  # its VMA's VmBo keeps it alive (and always will)
    else:
        assert freed(bo) and bo.vm_bos == []  # 6.17: close waited, then tore the VMA down
    dev.retire_all()
    dev.check_invariants()


# --- 6.17 rules -----------------------------------------------------------------------------


def test_617_handle_close_waits_idle_and_drops_the_context_vma() -> None:
    dev = Device("msm", "gpuvm_vma_ref")
    log = EventLog()
    dev.bus.subscribe(log)
    f = dev.open()
    h = f.create_bo(1 << 20)
    bo = f.bo(h)
    f.submit([h])
    assert bo.vma_ref.total == 1  # the handle only: submit_pin_objects takes no vma_ref
    ctx = f.vm
    assert isinstance(ctx, ManagedVm)
    f.gem_close(h)  # waits for the job, then unmaps and closes this file's VMA
    assert dev.jobs == [] and ctx.vma_of(bo) is None and freed(bo)
    assert len(of(log, Unmapped, ctx)) == 1 and len(of(log, VmaDestroyed, ctx)) == 1


def test_617_vm_bind_files_keep_mappings_past_handle_close() -> None:
    dev = Device("msm", "gpuvm_vma_ref")
    log = EventLog()
    dev.bus.subscribe(log)
    f = dev.open()
    f.set_param_vm_bind()
    h = f.create_bo(1 << 20)
    bo = f.bo(h)
    base = dev.context_window[0]
    f.vm_bind([BindMap(base, 1 << 20, h), BindMap(base + (2 << 20), 1 << 20, h)])
    f.gem_close(h)
    assert not freed(bo) and len(of(log, Mapped)) == 2  # the VAs hold the buffer
    f.vm_bind([BindUnmap(base, 1 << 20)])
    assert not freed(bo)
    f.close()  # VM close unmaps the rest
    assert freed(bo) and len(of(log, Unmapped)) == 2 and dev.live_vms.keys() == {dev.display_vm}


def test_617_display_vma_lives_while_vma_ref_is_held() -> None:
    dev = Device("msm", "gpuvm_vma_ref")
    f = dev.open()
    h = f.create_bo(FB_SIZE)
    bo = f.bo(h)
    fb = f.add_fb(h)
    f.page_flip(dev.plane(), fb)
    f.page_flip(dev.plane(), None)
    vm = dev.display_vm
    assert vm is not None
    vma = vm.vma_of(bo)
    assert vma is not None and vma.mapped  # the handle still holds vma_ref: lazy teardown
    assert bo.vma_ref.total == 1
    holder_names = [str(x) for x in vma.keepers()]  # type: ignore[attr-defined]
    assert holder_names == [f"handle {h} of {f!r}"]
    f.gem_close(h)  # vma_ref reaches 0: unmapped and closed, though the FB still holds bo
    assert vm.vma_of(bo) is None and not freed(bo)
    f.rm_fb(fb)
    assert freed(bo)


def test_eviction_remaps_at_next_use() -> None:
    dev = Device("msm", "gpuvm_vma_ref")
    log = EventLog()
    dev.bus.subscribe(log)
    legacy_f, bind_f = dev.open(), dev.open()
    h = legacy_f.create_bo(1 << 20)
    legacy_f.submit([h])
    with pytest.raises(Busy):
        dev.evict(legacy_f.bo(h))
    dev.retire_all()
    bind_f.set_param_vm_bind()
    hb = bind_f.create_bo(1 << 20)
    bind_f.vm_bind([BindMap(dev.context_window[0], 1 << 20, hb)])
    for bo in (legacy_f.bo(h), bind_f.bo(hb)):
        dev.evict(bo)
    assert len(of(log, Unmapped)) == 2
    bvm = bind_f.vm
    assert isinstance(bvm, DriverVm)
    vb = bind_f.bo(hb).vm_bo_for(bvm)
    assert vb is not None and vb in bvm.evict
    bind_f.exec()  # drm_gpuvm_validate re-maps the evicted buffer
    assert vb not in bvm.evict and len(of(log, Mapped, bvm)) == 2
    legacy_f.submit([h])  # the legacy path re-maps at the next pin, same iova
    ctx_maps = of(log, Mapped, legacy_f.vm)
    assert len(ctx_maps) == 2 and ctx_maps[0].addr == ctx_maps[1].addr
    dev.retire_all()
    dev.check_invariants()


# --- a policy of one's own --------------------------------------------------------------------


class KeepSwapchainMapped(GpuvmVmaRef):
    """A user policy in a few lines: 6.17 rules, but a buffer with an open handle in the
    compositor's own file is never unmapped from the display at cleanup."""

    name = "keep_swapchain_mapped"


class EagerDisplayOnly(TeardownPolicy):
    """Legacy contexts, but the display unmaps at every last cleanup."""

    name = "eager_display_only"

    def on_fb_cleanup(self, fb: Framebuffer) -> None:
        vm = fb.device.require_display()
        for bo in fb.bos:
            if path.unpin(vm, bo).pin_count == 0:
                path.close_vma(vm, bo)


def test_user_policies_plug_in() -> None:
    assert make_policy(EagerDisplayOnly).name == "eager_display_only"
    _, r = FLIP_SCENARIOS["swapchain"](EagerDisplayOnly)
    assert (r.maps, r.unmaps) == (1, 1)
    _, r = FLIP_SCENARIOS["swapchain"](KeepSwapchainMapped())
    assert (r.maps, r.unmaps) == (0, 0)
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("nope")


def test_every_policy_emits_the_same_event_kinds() -> None:
    """A buffer shown once and then freed: every leak-free policy reports the same kinds of
    facts (map, unmap, invalidation, VMA create/destroy, references, frees, ioctls)."""
    wanted = {
        "Mapped",
        "Unmapped",
        "TlbInvalidated",
        "VmaCreated",
        "VmaDestroyed",
        "RefGot",
        "RefPut",
        "Freed",
        "Ioctl",
    }
    for policy in sorted(set(POLICIES) - {"gpuvm_legacy_trigger"}):
        dev = Device("msm", policy)
        log = EventLog()
        dev.bus.subscribe(log)
        comp = dev.open()
        h = comp.create_bo(FB_SIZE)
        fb = comp.add_fb(h)
        comp.gem_close(h)
        comp.page_flip(dev.plane(), fb)
        comp.rm_fb(fb)
        assert {type(e).__name__ for e in log.events} >= wanted, policy
        assert len(of(log, VmaCreated)) == len(of(log, VmaDestroyed)) == 1
        assert len(of(log, Mapped)) == len(of(log, Unmapped)) == 1
