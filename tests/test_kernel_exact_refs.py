"""The driver layer, kernel-exact (second part): GEM handle references, the eager unpin of
msm before 3bebfd53af0f, CONFIG_DMABUF_MOVE_NOTIFY and the newest GPUVM core API.  Each
test names the kernel function it follows and fails on the model's behaviour before the
fix; every refusal is checked with a snapshot before and after."""

from __future__ import annotations

import errno as E

import attrs
import pytest
from snapshot import unchanged
from test_dmabuf_sharing import DGPU2, p2p_ops, shared, world
from test_dmabuf_sharing import refused as refused_dmabuf

from gpuvm.core.errors import (
    GpuvmError,
    InvalidValue,
    LinkError,
    LockMisuse,
    LockNotHeld,
    NotImmediateMode,
)
from gpuvm.core.gem import GemObject, locked
from gpuvm.core.refs import Holder, explain
from gpuvm.core.vm import GpuVm, GpuVmFlags
from gpuvm.drm.caps import EXPORTERS, Topology, amdgpu_dgpu, xe_igpu
from gpuvm.drm.device import Device, snapshot
from gpuvm.drm.dmabuf import Attachment, DmaBuf
from gpuvm.drm.file import BindMap
from gpuvm.drm.kernels import KERNELS
from gpuvm.drm.placement import Domain
from gpuvm.observe.checker import LifetimeChecker

MIB = 1 << 20
P = 4096


# --- deviation 8: all handles hold one reference ----------------------------------------------


def test_all_handles_of_a_buffer_hold_one_reference() -> None:
    """``drm_gem_handle_create_tail`` (drm_gem.c @002c6ca75289) takes the buffer reference
    only when ``handle_count`` goes from 0 to 1; ``drm_gem_object_handle_put_unlocked``
    drops it when the count returns to 0.  Three handles over two files: one reference."""
    dev = Device("msm", "gpuvm_vma_ref", display=False)
    a, b = dev.open(), dev.open()
    h = a.create_bo(MIB)
    bo = a.bo(h)
    name = a.gem_flink(h)
    h1, _ = b.gem_open(name)
    h2, _ = b.gem_open(name)
    assert bo.handle_count == 3
    assert bo.refs.count(bo.handle_ref) == 1
    assert not any(isinstance(x, Holder) and x.kind.startswith("handle") for x in bo.refs.holders)
    assert bo.refs.total == 1  # nothing else holds it: no VMA, no framebuffer
    dev.check_invariants()
    a.gem_close(h)
    b.gem_close(h1)
    assert bo.refs.count(bo.handle_ref) == 1 and not bo.freed
    b.gem_close(h2)  # the last handle: the one reference goes, and with it the buffer
    assert bo.freed
    dev.check_invariants()


def test_the_handles_reference_still_names_its_handles() -> None:
    """The holder of the shared reference is kept by every open handle, so ``explain`` and
    a leak report still say which handle of which file keeps the buffer alive."""
    dev = Device("msm", "gpuvm_vma_ref", display=False)
    checker = LifetimeChecker(dev)
    a, b = dev.open(name="a"), dev.open(name="b")
    h = a.create_bo(MIB, name="shared")
    hb, _ = b.gem_open(a.gem_flink(h))
    text = explain(a.bo(h))
    assert "GEM shared <- handles of GEM shared <- handle 1 of DrmFile(a) <- DrmFile(a)" in text
    assert f"handles of GEM shared <- handle {hb} of DrmFile(b)" in text
    assert checker.check() == []
    bo = a.bo(h)
    bo.refs.get(bo.handle_ref)  # a second reference for the handles: a leak
    (v,) = checker.check()
    assert v.kind == "refcount" and "handles of GEM shared" in v.message


# --- deviation 14: drm_gpuvm_bo_obtain_locked / the locking drm_gpuvm_bo_obtain_prealloc --------


def _vm(*, immediate: bool, newest: bool = True) -> GpuVm:
    flags = GpuVmFlags.IMMEDIATE_MODE if immediate else 0
    return GpuVm(0, 1 << 20, name="vm", flags=flags, lock_checks=True, obtain_locked=newest)


def test_bo_obtain_locked_warns_in_immediate_mode() -> None:
    """The patch "drm/gpuvm: drm_gpuvm_bo_obtain() requires lock and staged mode"
    (<20260108-gpuvm-rust-v2-2-dbd014005a0b@google.com>): renamed
    ``drm_gpuvm_bo_obtain_locked``, it WARNs on an IMMEDIATE_MODE VM and goes on; the older
    ``drm_gpuvm_bo_obtain`` does not warn."""
    for newest in (True, False):
        vm = _vm(immediate=True, newest=newest)
        obj = GemObject(P, name="a")
        with locked(obj.gpuva_lock):
            vb = vm.bo_obtain_locked(obj)
        assert obj.vm_bos == [vb]
        assert len(vm.warnings) == (1 if newest else 0)
        if newest:
            assert "IMMEDIATE_MODE" in vm.warnings[0] and "prealloc" in vm.warnings[0]
    staged = _vm(immediate=False)
    obj = GemObject(P, name="b")
    with locked(obj):
        staged.bo_obtain_locked(obj)
    assert staged.warnings == []  # staged mode is what it is for


def test_obtain_prealloc_requires_immediate_mode() -> None:
    """The newest ``drm_gpuvm_bo_obtain_prealloc`` ("drm/gpuvm: take GEM lock inside
    drm_gpuvm_bo_obtain_prealloc()", <20251128-gpuvm-rust-v1-1-ebf66bf234e0@google.com>)
    WARNs outside IMMEDIATE_MODE and takes the wrong lock; the model refuses, unchanged."""
    vm = _vm(immediate=False)
    obj = GemObject(P, name="a")
    pre = vm.bo_create(obj)
    with unchanged(vm, obj, pre), locked(obj), pytest.raises(NotImmediateMode) as ei:
        vm.bo_obtain_prealloc(pre)
    assert ei.value.errno == E.EINVAL
    old = _vm(immediate=False, newest=False)  # before that series it was staged-mode API
    pre = old.bo_create(obj)
    with locked(obj):
        assert old.bo_obtain_prealloc(pre) is pre


def test_obtain_prealloc_takes_the_gem_gpuva_lock_itself() -> None:
    """Newest: the caller must not hold the GEM's ``gpuva.lock`` (the call takes it: a
    caller holding it self-deadlocks, refused unchanged) and a hit frees the unused ``pre``
    outside every list (``drm_gpuvm_bo_destroy_not_in_lists``) after unlocking.  Older: the
    caller had to hold that lock."""
    vm = _vm(immediate=True)
    obj = GemObject(P, name="a")
    pre = vm.bo_create(obj)
    with unchanged(vm, obj, pre), locked(obj.gpuva_lock), pytest.raises(LockMisuse) as ei:
        vm.bo_obtain_prealloc(pre)
    assert ei.value.errno == E.EDEADLK
    assert vm.bo_obtain_prealloc(pre) is pre and pre.listed  # unlocked caller: fine
    assert not obj.gpuva_lock.held  # taken and released inside
    again = vm.bo_create(obj)
    assert vm.bo_obtain_prealloc(again) is pre and again.freed and pre.kref == 2
    listed_pre = pre
    with unchanged(vm, obj), pytest.raises(LinkError):
        vm.bo_obtain_prealloc(listed_pre)  # already on the GEM's list
    old = _vm(immediate=True, newest=False)
    pre = old.bo_create(obj := GemObject(P, name="b"))
    with unchanged(old, obj, pre), pytest.raises(LockNotHeld):
        old.bo_obtain_prealloc(pre)
    with locked(obj.gpuva_lock):
        assert old.bo_obtain_prealloc(pre) is pre


def test_kernel_profile_selects_the_obtain_api() -> None:
    """The driver layer passes the profile's ``bo_obtain_locked`` down to every VM it makes
    (the core does not know about profiles)."""
    for kernel, newest in (("mainline", True), ("6.17", False), ("msm-pre-6.17", False)):
        dev = Device("msm", "gpuvm_vma_ref", kernel=kernel)
        assert isinstance(dev.display_vm, GpuVm) and dev.display_vm.obtain_locked is newest
        if dev.kernel.msm_vm_bind:
            f = dev.open()
            f.set_param_vm_bind()
            f.vm_bind([BindMap(1 << 32, P, f.create_bo(P))])
            assert isinstance(f.vm, GpuVm) and f.vm.obtain_locked is newest
    from gpuvm.drm import xe

    for kernel, newest in (("mainline", True), ("6.17", False)):
        dev = Device("xe", planes=0, kernel=kernel)
        f = dev.open()
        vm = f.vms[xe.vm_create(f)]
        assert vm.obtain_locked is newest  # xe_vm_create_ioctl's VMs too


# --- deviation 6: msm_gem_unpin_iova before 3bebfd53af0f ----------------------------------------


def _two_fbs_over_one_bo(kernel: str) -> tuple[Device, LifetimeChecker, object, object]:
    dev = Device("msm", "gpuvm_eager", planes=2, kernel=kernel)
    checker = LifetimeChecker(dev)
    f = dev.open()
    h = f.create_bo(MIB, name="scanout")
    fb1, fb2 = f.add_fb(h), f.add_fb(h)
    f.page_flip(dev.plane(0), fb1)
    f.page_flip(dev.plane(1), fb2)
    f.page_flip(dev.plane(0), None)  # fb1's cleanup: msm_gem_unpin_iova
    return dev, checker, f.bo(h), fb2


def test_eager_unpin_detaches_the_vm_under_a_live_scanout() -> None:
    """Before 3bebfd53af0f ("drm/msm: Defer VMA unmap for fb unpins",
    <20250629140537.30850-42-robin.clark@oss.qualcomm.com>) ``msm_gem_unpin_iova`` ends with
    ``detach_vm``: the display VMA is unmapped and closed at every unpin.  Two framebuffers
    over one buffer: the first one's cleanup unmaps it under the second one's scanout, which
    the lifetime checker reports.  ``gpuvm_eager`` (those commits) defaults to that kernel."""
    assert Device("msm", "gpuvm_eager").kernel.name == "msm-pre-vma-ref"
    dev, checker, bo, fb2 = _two_fbs_over_one_bo("msm-pre-vma-ref")
    assert dev.display_vm is not None and dev.display_vm.vma_of(bo) is None  # type: ignore[arg-type]
    found = [v for v in checker.check() if v.kind == "unmapped-scanout"]
    assert len(found) == 1 and repr(fb2) in found[0].message
    assert "3bebfd53af0f" in found[0].message
    assert found[0].fatal and not checker.ok
    dev.check_invariants()  # the kernel's own state: not a model inconsistency
    f = dev.files[0]
    f.page_flip(dev.plane(1), None)  # fb2's cleanup: no VMA left, nothing to unpin
    assert dev.display_vm.vma_of(bo) is None  # type: ignore[arg-type]
    dev.check_invariants()


def test_later_kernels_keep_the_vma_while_another_fb_pins_it() -> None:
    """From 3bebfd53af0f on the display VMA outlives the unpin; ``gpuvm_eager`` under a later
    profile tears it down only at the last pin, and nothing is reported."""
    dev, checker, bo, _fb2 = _two_fbs_over_one_bo("6.17")
    vma = dev.display_vm.vma_of(bo)  # type: ignore[union-attr, arg-type]
    assert vma is not None and vma.mapped and vma.pin_count == 1
    assert checker.check() == []


# --- deviation 2: CONFIG_DMABUF_MOVE_NOTIFY ----------------------------------------------------


def test_move_notify_is_off_by_default_as_in_the_stock_kconfig() -> None:
    """``drivers/dma-buf/Kconfig``: ``DMABUF_MOVE_NOTIFY`` is ``default n``.  Every profile
    and every device defaults to it; PRIME export builds its exporter that way; the option
    can be turned on per device."""
    assert not any(p.dmabuf_move_notify for p in KERNELS.values())
    dev = Device("nouveau", display=False, caps=amdgpu_dgpu("gpu0"))
    assert dev.dmabuf_move_notify is False
    assert Device("msm", dmabuf_move_notify=True).dmabuf_move_notify is True
    with pytest.raises(GpuvmError):
        Device("msm", dmabuf_move_notify=1)  # type: ignore[arg-type]
    f = dev.open()
    h = f.create_bo(MIB)
    d = f.fds.get(f.prime_handle_to_fd(h))
    assert d.sharing is not None and d.sharing.move_notify_built is False


def _prime_to_xe(move_notify: bool) -> tuple[Device, DmaBuf, Attachment]:
    topo = Topology()
    dgpu = Device(
        "nouveau",
        name="dgpu",
        display=False,
        caps=amdgpu_dgpu("dgpu"),
        topology=topo,
        dmabuf_move_notify=move_notify,
    )
    topo.add(amdgpu_dgpu("dgpu"), root="pci0")
    igpu = Device("nouveau", name="igpu", display=False, caps=xe_igpu("igpu"), topology=topo)
    client, comp = dgpu.open(), igpu.open()
    h = client.create_bo(8 * MIB)
    ih = comp.prime_fd_to_handle(client.fds.send(client.prime_handle_to_fd(h), comp.fds))
    att = comp.bo(ih).import_attach
    assert att is not None and att.dynamic
    return dgpu, att.dmabuf, att


def test_without_move_notify_dma_buf_pin_on_map_pins_dynamic_importers() -> None:
    """``dma_buf_pin_on_map``: the exporter has ``pin`` and (the importer is static OR
    ``CONFIG_DMABUF_MOVE_NOTIFY`` is off).  Through PRIME, an xe (dynamic) import of an
    amdgpu buffer: stock kernel, the first map pins it (in GTT) and it cannot move; with
    the option built, the map only migrates and the buffer stays movable."""
    dev, d, att = _prime_to_xe(move_notify=False)
    d.map(att)
    assert att.map_pins == 1 and d.backing.pin_count == 1 and d.backing.domain == Domain.TT
    before = snapshot(dev)
    with pytest.raises(GpuvmError):
        d.move(Domain.VRAM)  # pinned: the exporter cannot move it back
    assert snapshot(dev) == before
    _dev, d2, att2 = _prime_to_xe(move_notify=True)
    d2.map(att2)
    assert att2.map_pins == 0 and d2.backing.pin_count == 0
    d2.move(Domain.VRAM)  # movable: move_notify tells the importer
    assert att2.stale


def test_amdgpu_pin_masks_vram_out_without_move_notify() -> None:
    """``amdgpu_dma_buf_pin``: without ``CONFIG_DMABUF_MOVE_NOTIFY`` VRAM is masked out of
    the pin domains even when every attachment is p2p (with it, only a non-p2p attachment
    masks it)."""
    for built, where in ((False, Domain.TT), (True, Domain.VRAM)):
        topo, mem, caps = world()
        d = shared(mem, caps, topo, move_notify_built=built)
        a = d.attach("dgpu2", DGPU2, p2p_ops())
        assert a.peer2peer
        d.pin(a)
        assert d.backing.domain == where and d.backing.pin_count == 1


def test_xe_pin_is_tt_only_and_refuses_a_vram_only_buffer() -> None:
    """``xe_dma_buf_pin`` (xe_dma_buf.c @0131514f9789): it migrates to TT
    (``xe_bo_migrate(bo, XE_PL_TT)``) and pins there: a VRAM|SYSTEM buffer moves to TT; a
    VRAM-only buffer cannot go there, ``-EINVAL``, and since a stock kernel pins at map the
    p2p importer's first map is refused, the model unchanged."""
    xe_caps = attrs.evolve(amdgpu_dgpu("dgpu"), exporter=EXPORTERS["xe"])
    topo, mem, caps = world(xe_caps)
    d = shared(mem, caps, topo, allowed=(Domain.VRAM, Domain.SYSTEM), move_notify_built=False)
    a = d.attach("dgpu2", DGPU2, p2p_ops())
    assert d.backing.domain == Domain.VRAM
    d.map(a)  # pin on map: migrated to TT
    assert d.backing.domain == Domain.TT and a.map_pins == 1
    topo, mem, caps = world(xe_caps)
    d = shared(mem, caps, topo, allowed=(Domain.VRAM,), move_notify_built=False)
    a = d.attach("dgpu2", DGPU2, p2p_ops())  # p2p: the attach accepts a VRAM-only buffer
    err = refused_dmabuf(mem, d, lambda: d.map(a), InvalidValue, E.EINVAL)
    assert "xe_bo_migrate" in str(err)
    b = d.attach("dgpu2", DGPU2, p2p_ops())
    refused_dmabuf(mem, d, lambda: d.pin(b), InvalidValue, E.EINVAL)


def test_traces_and_scenarios_record_the_kernel_configuration() -> None:
    """A ``device`` trace op takes ``dmabuf_move_notify``; the recorded line keeps it when
    it differs from the profile, so a replay builds the same exporter.  Every dma-buf
    scenario result names its kernel profile and the option."""
    from gpuvm.observe.trace import replay
    from gpuvm.study.dmabuf_scenarios import run

    head = '{"format": "gpuvm-trace", "version": 1}\n'
    line = '{"op": "device", "id": "d0", "flavour": "msm", "policy": "gpuvm_vma_ref"'
    r = replay(head + line + ', "dmabuf_move_notify": true}\n')
    assert r.session.obj("d0").dmabuf_move_notify is True
    assert '"dmabuf_move_notify": true' in r.session.dumps()
    assert "dmabuf_move_notify" not in replay(head + line + "}\n").session.dumps()
    (res,) = run("S2")
    assert res.kernel == "mainline" and res.move_notify is True
    assert res.as_dict()["kernel"] == "mainline"
    (stock,) = run("S2", move_notify=False)
    assert stock.move_notify is False


def test_cli_dmabuf_stock_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    """``gpuvm dmabuf --stock-kernel`` runs the scenarios without the option and says so (and
    the default run says it has the option built):
    the ping-pong of S5 is gone, the import being pinned in GTT at its first map."""
    from gpuvm.study.cli import main

    assert main(["dmabuf", "--scenario", "S5", "--stock-kernel"]) == 0
    out = capsys.readouterr().out
    assert "[CONFIG_DMABUF_MOVE_NOTIFY=n]" in out and "pins 1 (GTT" in out
    assert main(["dmabuf", "--scenario", "S5"]) == 0
    # the default (the option built, what the scenarios study) is labelled too
    out = capsys.readouterr().out
    assert "[CONFIG_DMABUF_MOVE_NOTIFY=y, not the stock default]" in out
    assert "=n]" not in out
