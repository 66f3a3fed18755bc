"""KMS: framebuffers hold their buffers, per-framebuffer pin counts, RMFB / CLOSEFB, atomic
flips that validate first, and the per-flip map/unmap table (``msm_framebuffer_prepare`` /
``msm_framebuffer_cleanup``, with and without commit 3bebfd53af0f's ``vma_ref``) for every
policy."""

from __future__ import annotations

import errno as E

import pytest
from flip_scenarios import FB_SIZE, FLIP_SCENARIOS, N_BUFFERS, freed, of

from gpuvm import EventLog
from gpuvm.core.errors import BadHandle, Busy, InvalidValue, NoSpace
from gpuvm.core.events import Mapped, TlbInvalidated, Unmapped
from gpuvm.drm.device import Device, snapshot

# (maps, unmaps) per flip in steady state
#                         pre-6.17   intermediate   6.17 final
TABLE = {
    "swapchain": ((0, 0), (1, 1), (0, 0)),
    "same_device_client": ((0, 0), (1, 1), (0, 0)),
    "foreign_handle_closed": ((0, 0), (1, 1), (1, 1)),
    "foreign_handle_kept": ((0, 0), (1, 1), (0, 0)),
    "recreate_every_frame": ((1, 1), (1, 1), (1, 1)),
}
COLUMNS = ("legacy_pre_6_17", "gpuvm_eager", "gpuvm_vma_ref")


@pytest.mark.parametrize("scenario", list(TABLE))
@pytest.mark.parametrize("column", range(3))
def test_section5_per_flip_counts(scenario: str, column: int) -> None:
    policy = COLUMNS[column]
    dev, r = FLIP_SCENARIOS[scenario](policy)
    assert (r.maps, r.unmaps) == TABLE[scenario][column]
    assert r.tlb == r.unmaps  # every display unmap invalidates its range
    assert dev.display_vm is not None and dev.display_vm.tlb_kind == "per_page"


@pytest.mark.parametrize("scenario", list(TABLE))
@pytest.mark.parametrize("policy", ["weak_ref_quirk", "separate_tracker"])
def test_lazy_policies_flip_like_pre_6_17(scenario: str, policy: str) -> None:
    """Options 2 and 3 keep lazy display teardown: their flips cost what pre-6.17 flips
    did."""
    _, r = FLIP_SCENARIOS[scenario](policy)
    assert (r.maps, r.unmaps) == TABLE[scenario][0]


def test_swapchain_maps_each_buffer_once_on_first_use() -> None:
    for policy in ("legacy_pre_6_17", "gpuvm_vma_ref"):
        _, r = FLIP_SCENARIOS["swapchain"](policy)
        assert r.warmup_maps == N_BUFFERS


def test_framebuffer_holds_its_buffer() -> None:
    dev = Device("msm", "legacy_pre_6_17")
    f = dev.open()
    h = f.create_bo(FB_SIZE)
    bo = f.bo(h)
    fb = f.add_fb(h)
    f.gem_close(h)
    assert not freed(bo) and bo.refs.count(fb) == 1
    f.page_flip(dev.plane(), fb)
    f.page_flip(dev.plane(), None)
    assert not freed(bo)  # still held by the framebuffer, and mapped (lazy teardown)
    assert dev.display_vm is not None and dev.display_vm.vma_of(bo) is not None
    f.rm_fb(fb)
    assert freed(bo, fb)
    assert dev.display_vm.vma_of(bo) is None


def test_one_framebuffer_on_two_planes_is_pinned_once() -> None:
    dev = Device("msm", "gpuvm_eager", planes=2)
    log = EventLog()
    dev.bus.subscribe(log)
    f = dev.open()
    fb = f.add_fb(f.create_bo(FB_SIZE))
    p0, p1 = dev.planes
    f.page_flip(p0, fb)
    f.page_flip(p1, fb)
    assert fb.prepare_count == 2 and len(of(log, Mapped)) == 1
    vm = dev.display_vm
    assert vm is not None
    vma = vm.vma_of(fb.bos[0])
    assert vma is not None and vma.pin_count == 1
    f.page_flip(p0, None)
    assert not of(log, Unmapped)  # the other plane still shows it
    f.page_flip(p1, None)
    assert len(of(log, Unmapped)) == 1 and len(of(log, TlbInvalidated)) == 1
    dev.check_invariants()


def test_flip_to_the_same_framebuffer_costs_nothing() -> None:
    for policy in COLUMNS:
        dev = Device("msm", policy)
        f = dev.open()
        fb = f.add_fb(f.create_bo(FB_SIZE))
        f.page_flip(dev.plane(), fb)
        log = EventLog()
        dev.bus.subscribe(log)
        for _ in range(3):
            f.page_flip(dev.plane(), fb)
        assert not of(log, Mapped) and not of(log, Unmapped), policy


def test_rmfb_disables_planes_closefb_does_not() -> None:
    dev = Device("msm", "gpuvm_vma_ref")
    f = dev.open()
    fb1 = f.add_fb(f.create_bo(FB_SIZE))
    fb2 = f.add_fb(f.create_bo(FB_SIZE))
    plane = dev.plane()
    f.page_flip(plane, fb1)
    f.close_fb(fb1)
    assert plane.fb is fb1 and not freed(fb1) and fb1.file is None
    f.page_flip(plane, fb2)
    assert freed(fb1)  # the plane state held the last reference
    f.rm_fb(fb2)
    assert dev.plane().fb is None and freed(fb2)
    with pytest.raises(BadHandle):
        f.rm_fb(fb2)
    dev.check_invariants()


def test_multi_planar_framebuffer_pins_each_buffer() -> None:
    dev = Device("msm", "gpuvm_vma_ref")
    log = EventLog()
    dev.bus.subscribe(log)
    f = dev.open()
    y, uv = f.create_bo(FB_SIZE), f.create_bo(FB_SIZE // 2)
    fb = f.add_fb(y, uv)
    f.page_flip(dev.plane(), fb)
    assert len(of(log, Mapped)) == 2
    with pytest.raises(InvalidValue):
        f.add_fb()
    with pytest.raises(InvalidValue):
        f.add_fb(y, y, y, y, y)


def test_flip_that_does_not_fit_the_display_vm_changes_nothing() -> None:
    for policy in COLUMNS:
        dev = Device("msm", policy, display_window=(0x1000, 3 * FB_SIZE // 2))
        f = dev.open()
        a = f.add_fb(f.create_bo(FB_SIZE))
        both = f.add_fb(f.create_bo(FB_SIZE // 2), f.create_bo(FB_SIZE // 2 + 4096))
        f.page_flip(dev.plane(), a)
        before = snapshot(dev)
        with pytest.raises(NoSpace) as ei:
            f.page_flip(dev.plane(), both)  # the first plane would fit, the second not
        assert ei.value.errno == E.ENOSPC
        assert snapshot(dev) == before, policy
        dev.check_invariants()


def test_scanout_of_a_purged_buffer_is_refused() -> None:
    dev = Device("msm", "legacy_pre_6_17")
    f = dev.open()
    h = f.create_bo(FB_SIZE)
    fb = f.add_fb(h)
    dev.purge(f.bo(h))
    before = snapshot(dev)
    with pytest.raises(Busy):
        f.page_flip(dev.plane(), fb)
    assert snapshot(dev) == before


def test_render_only_device_has_no_display() -> None:
    dev = Device("nouveau", "gpuvm_vma_ref", display=False)
    f = dev.open()
    h = f.create_bo(FB_SIZE)
    assert dev.display_vm is None and dev.planes == []
    with pytest.raises(InvalidValue):
        f.add_fb(h)
