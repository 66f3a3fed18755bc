"""Atomic commits of several planes in one ioctl (``drm_atomic_helper_commit``): every
``prepare_fb`` before the swap, ``cleanup_fb`` of the old states after; a prepare that fails
at plane k cleans up planes 0..k-1 and flips nothing (``drm_atomic_helper_prepare_planes``'
unwind); two framebuffers over one buffer."""

from __future__ import annotations

import errno as E

import pytest
from flip_scenarios import FB_SIZE, of

from gpuvm import EventLog
from gpuvm.core.errors import ArgumentTypeError, Busy, InjectedFault, InvalidArgument, InvalidValue
from gpuvm.core.events import Ioctl, Mapped, Unmapped
from gpuvm.drm.atomic import atomic_commit
from gpuvm.drm.device import Device, snapshot
from gpuvm.drm.file import DrmFile
from gpuvm.drm.kms import Framebuffer
from gpuvm.observe.checker import LifetimeChecker


def _setup(
    policy: str = "gpuvm_vma_ref", planes: int = 3
) -> tuple[Device, DrmFile, list[Framebuffer]]:
    dev = Device("msm", policy, planes=planes)
    f = dev.open()
    fbs = [f.add_fb(f.create_bo(FB_SIZE)) for _ in range(2 * planes)]
    return dev, f, fbs


def _pins(dev: Device, fb: Framebuffer) -> list[int]:
    vm = dev.display_vm
    assert vm is not None
    out = []
    for bo in fb.bos:
        vma = vm.vma_of(bo)
        out.append(0 if vma is None else vma.pin_count)
    return out


def test_one_ioctl_prepares_every_plane_before_the_swap() -> None:
    """All new framebuffers are mapped (prepare_fb) before any old one is unmapped
    (cleanup_planes after the swap), and the whole commit is one ATOMIC ioctl."""
    dev, f, fbs = _setup("gpuvm_eager")
    p = dev.planes
    f.atomic([(p[0], fbs[0]), (p[1], fbs[1]), (p[2], fbs[2])])
    log = EventLog()
    dev.bus.subscribe(log)
    f.atomic([(p[2], fbs[5]), (p[0], fbs[3]), (p[1], fbs[4])])
    assert [e.name for e in of(log, Ioctl)] == ["ATOMIC"]
    assert [pl.fb for pl in p] == fbs[3:6]
    maps = [i for i, e in enumerate(log.events) if isinstance(e, Mapped)]
    unmaps = [i for i, e in enumerate(log.events) if isinstance(e, Unmapped)]
    assert len(maps) == 3 and len(unmaps) == 3  # gpuvm_eager: old display VMAs torn down
    assert max(maps) < min(unmaps)
    for fb in fbs[:3]:
        assert fb.prepare_count == 0 and _pins(dev, fb) == [0]
    for fb in fbs[3:]:
        assert fb.prepare_count == 1 and _pins(dev, fb) == [1]
    dev.check_invariants()


def test_prepare_runs_in_plane_index_order() -> None:
    """``for_each_new_plane_in_state`` walks planes by index, whatever the order of the
    request: the first Mapped event is plane 0's buffer."""
    dev, f, fbs = _setup()
    p = dev.planes
    log = EventLog()
    dev.bus.subscribe(log)
    f.atomic([(p[2], fbs[2]), (p[1], fbs[1]), (p[0], fbs[0])])
    mapped = [e.obj for e in of(log, Mapped)]
    assert mapped == [fbs[0].bos[0], fbs[1].bos[0], fbs[2].bos[0]]


@pytest.mark.parametrize("k", [0, 1, 2])
def test_prepare_failure_unwinds_planes_before_it(k: int) -> None:
    """prepare_fb of plane k fails: planes 0..k-1 are cleaned up, no flip, and the model is
    exactly as before (the new framebuffers' display VMAs existed already: shown once, and
    kept mapped by the lazy pre-6.17 teardown)."""
    dev, f, fbs = _setup("legacy_pre_6_17")
    p = dev.planes
    f.atomic([(p[0], fbs[3]), (p[1], fbs[4]), (p[2], fbs[5])])
    f.atomic([(p[0], fbs[0]), (p[1], fbs[1]), (p[2], fbs[2])])
    before = snapshot(dev)
    checker = LifetimeChecker(dev)
    with pytest.raises(InjectedFault) as exc:
        atomic_commit(dev, [(p[0], fbs[3]), (p[1], fbs[4]), (p[2], fbs[5])], fail_prepare_at=k)
    assert exc.value.errno == E.ENOMEM
    assert snapshot(dev) == before
    assert [pl.fb for pl in p] == fbs[:3]
    dev.check_invariants()
    assert checker.check() == []


def test_prepare_failure_with_fresh_framebuffers_keeps_planes_and_pins() -> None:
    """Fresh framebuffers: the prepares of planes 0..k-1 mapped them, their cleanup unpins
    them; the planes, framebuffer references and pin counts are as before.  Under the legacy
    policy the display VMAs stay mapped (lazy teardown, as ``msm_gem_unpin_iova`` before
    6.17: the kernel keeps the iova too); under ``gpuvm_eager`` they go at the last unpin."""
    for policy, kept in (("gpuvm_eager", False), ("legacy_pre_6_17", True)):
        dev, f, fbs = _setup(policy)
        p = dev.planes
        f.atomic([(p[0], fbs[0]), (p[1], fbs[1]), (p[2], fbs[2])])
        before = snapshot(dev)
        refs = [dict(fb.refs.holders) for fb in fbs]
        with pytest.raises(InjectedFault):
            atomic_commit(dev, [(p[0], fbs[3]), (p[1], fbs[4]), (p[2], fbs[5])], fail_prepare_at=2)
        assert snapshot(dev) != before  # the display VM's layout generation moved
        vm = dev.display_vm
        assert vm is not None
        assert [vm.vma_of(fb.bos[0]) is not None for fb in fbs[3:]] == [kept, kept, False]
        assert [pl.fb for pl in p] == fbs[:3]
        assert [dict(fb.refs.holders) for fb in fbs] == refs
        assert [fb.prepare_count for fb in fbs] == [1, 1, 1, 0, 0, 0]
        assert [_pins(dev, fb) for fb in fbs[3:]] == [[0], [0], [0]]
        dev.check_invariants()


def test_real_prepare_failure_unwinds_the_same_way() -> None:
    """A purged buffer on plane 1 fails its prepare (``-EBUSY``) after plane 0 was
    prepared: plane 0's prepare is undone."""
    dev, f, fbs = _setup("legacy_pre_6_17")
    p = dev.planes
    f.atomic([(p[0], fbs[3]), (p[1], fbs[1])])
    f.atomic([(p[0], fbs[0]), (p[1], None)])
    dev.purge(fbs[4].bos[0])
    before = snapshot(dev)
    with pytest.raises(Busy):
        f.atomic([(p[0], fbs[3]), (p[1], fbs[4])])
    assert snapshot(dev) == before


def test_moving_a_framebuffer_between_planes_keeps_it_pinned() -> None:
    """fb shown on plane 0 moves to plane 1 in one commit: its prepare on plane 1 comes
    before the cleanup of plane 0's old state, so it is never unmapped."""
    dev, f, fbs = _setup("gpuvm_eager")
    p = dev.planes
    f.atomic([(p[0], fbs[0])])
    log = EventLog()
    dev.bus.subscribe(log)
    f.atomic([(p[0], None), (p[1], fbs[0])])
    assert of(log, Unmapped) == [] and of(log, Mapped) == []
    assert p[1].fb is fbs[0] and p[0].fb is None and fbs[0].prepare_count == 1
    dev.check_invariants()


def test_same_plane_twice_keeps_the_last_value() -> None:
    dev, f, fbs = _setup()
    p = dev.planes
    f.atomic([(p[0], fbs[0]), (p[0], fbs[1])])
    assert p[0].fb is fbs[1] and fbs[0].prepare_count == 0 and fbs[1].prepare_count == 1
    dev.check_invariants()


def test_two_framebuffers_over_one_buffer() -> None:
    """Two framebuffers over one buffer on two planes: one display VMA, pinned once per
    framebuffer; taking one plane down leaves the other's scanout mapped (the mainline
    profile: ``msm_gem_unpin_iova`` only drops the VM at pin count 0 for the KMS VM)."""
    dev = Device("msm", "gpuvm_vma_ref", planes=2)
    f = dev.open()
    h = f.create_bo(FB_SIZE)
    fb1, fb2 = f.add_fb(h), f.add_fb(h)
    p = dev.planes
    f.atomic([(p[0], fb1), (p[1], fb2)])
    vm = dev.display_vm
    assert vm is not None
    vma = vm.vma_of(f.bo(h))
    assert vma is not None and vma.pin_count == 2 and vma.mapped
    f.atomic([(p[0], None)])
    assert vma.pin_count == 1 and vma.mapped and vm.vma_of(f.bo(h)) is vma
    dev.check_invariants()
    f.atomic([(p[1], None)])
    assert vma.pin_count == 0
    dev.check_invariants()


def test_refused_commits_change_nothing() -> None:
    dev, f, fbs = _setup()
    other = Device("msm", planes=1)
    p = dev.planes
    f.atomic([(p[0], fbs[0])])
    dead = f.add_fb(f.create_bo(FB_SIZE))
    f.rm_fb(dead)
    before = snapshot(dev)
    for bad, err in (
        ([], InvalidValue),
        ([(other.plane(), fbs[1])], InvalidValue),
        ([(p[1], fbs[1]), (p[2], dead)], InvalidValue),
        ([(p[1], "fb")], ArgumentTypeError),
        ([p[1]], ArgumentTypeError),
    ):
        with pytest.raises(err):
            f.atomic(bad)  # type: ignore[arg-type]
        assert snapshot(dev) == before
    with pytest.raises(InvalidArgument):
        atomic_commit(dev, [(p[1], fbs[1])], fail_prepare_at=1)
    assert snapshot(dev) == before
