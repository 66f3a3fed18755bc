"""The driver layer, kernel-exact: one test per deviation from the kernel found by reading
its sources (the kernel function and the tree it was read at are named in each test).  Each
test fails on the behaviour before the fix.  Every refusal is checked with a snapshot
before and after."""

from __future__ import annotations

import errno as E

import pytest

from gpuvm.core.errors import DuplicateObject, GpuvmError, ModeError
from gpuvm.drm.device import Device, snapshot
from gpuvm.drm.file import BindMap, BindUnmap, DrmFile
from gpuvm.drm.kernels import DEFAULT_KERNEL, KERNELS, KernelProfile

MIB = 1 << 20


def refused(dev: Device, errno: int, fn: object, *args: object) -> GpuvmError:
    """Call ``fn(*args)``, expect a refusal with ``errno`` that changes nothing."""
    before = snapshot(dev)
    with pytest.raises(GpuvmError) as ei:
        fn(*args)  # type: ignore[operator]
    assert ei.value.errno == errno, ei.value
    assert snapshot(dev) == before
    return ei.value


# --- kernel profiles ------------------------------------------------------------------------


def test_kernel_profiles_and_defaults() -> None:
    """Three profiles; the default is mainline, except for the pre-6.17 policy."""
    assert {"msm-pre-6.17", "6.17", "mainline"} <= set(KERNELS)
    assert DEFAULT_KERNEL == "mainline"
    assert Device("msm", "gpuvm_vma_ref").kernel.name == "mainline"
    assert Device("msm", "legacy_pre_6_17").kernel.name == "msm-pre-6.17"
    assert Device("msm", "gpuvm_vma_ref", kernel="6.17").kernel is KERNELS["6.17"]
    custom = KernelProfile("x", True, False, False, False)
    assert Device("nouveau", kernel=custom).kernel is custom
    with pytest.raises(ValueError, match="unknown kernel"):
        Device("msm", kernel="5.4")


def test_snapshot_records_the_kernel() -> None:
    a = Device("msm", "gpuvm_vma_ref", kernel="6.17", name="g")
    b = Device("msm", "gpuvm_vma_ref", kernel="mainline", name="g")
    assert snapshot(a)[0][1] == "6.17" and snapshot(b)[0][1] == "mainline"


def test_no_en_vm_bind_before_the_series() -> None:
    """``adreno_set_param`` before the 6.17 series has no ``MSM_PARAM_EN_VM_BIND``:
    ``-EINVAL``, even with a policy that would allow VM_BIND."""
    dev = Device("msm", "gpuvm_vma_ref", kernel="msm-pre-6.17")
    f = dev.open()
    err = refused(dev, E.EINVAL, f.set_param_vm_bind)
    assert isinstance(err, ModeError)
    Device("msm", "gpuvm_vma_ref", kernel="6.17").open().set_param_vm_bind()


# --- 9: errno tables -------------------------------------------------------------------------


def test_gem_close_of_unknown_handle_is_einval() -> None:
    """``drm_gem_handle_delete`` (drm_gem.c @002c6ca75289): ``idr_replace`` finds nothing
    -> ``-EINVAL`` (was ``-ENOENT``)."""
    for flavour in ("msm", "nouveau"):
        dev = Device(flavour, "gpuvm_vma_ref")
        f = dev.open()
        f.create_bo(MIB)
        refused(dev, E.EINVAL, f.gem_close, 7)


def test_msm_unknown_handle_in_submit_and_vm_bind_is_einval() -> None:
    """msm ``submit_lookup_objects`` (msm_gem_submit.c @00dfa76bdfc2) and
    ``vm_bind_job_lookup_ops`` (msm_gem_vma.c @000a45dce7ad): "invalid handle %u at index
    %u", ``-EINVAL``; nouveau's ``drm_gem_object_lookup`` callers stay ``-ENOENT``."""
    dev = Device("msm", "gpuvm_vma_ref")
    f = dev.open()
    h = f.create_bo(MIB)
    err = refused(dev, E.EINVAL, f.submit, [h, 42])
    assert "at index 1" in str(err)
    b = dev.open()
    b.set_param_vm_bind()
    hb = b.create_bo(MIB)
    base = dev.context_window[0]
    refused(dev, E.EINVAL, b.vm_bind, [BindMap(base, MIB, hb), BindMap(base + MIB, MIB, 9)])
    nv = Device("nouveau", "gpuvm_vma_ref")
    g = nv.open()
    g.channel_alloc()
    refused(nv, E.ENOENT, g.submit, [42])


def test_clear_iova_has_no_pin_check() -> None:
    """msm ``clear_iova`` (msm_gem.c, 6.17+ and before): unmap and close the VMA with no pin
    check (the model refused a pinned one with ``-EBUSY``).  The job's retire then finds no
    VMA to unpin."""
    for policy in ("legacy_pre_6_17", "gpuvm_vma_ref"):
        dev = Device("msm", policy, display=False)
        f = dev.open()
        h = f.create_bo(MIB)
        bo = f.bo(h)
        f.submit([h])
        vm = f.vm
        assert vm is not None and vm.vma_of(bo) is not None
        f.set_iova(h, 0)
        assert vm.vma_of(bo) is None
        dev.retire_all()
        dev.check_invariants()


def test_set_iova_without_per_process_pgtables_is_eopnotsupp() -> None:
    """``msm_ioctl_gem_info_set_iova``: ``priv->gpu->vm == vm`` -> ``-EOPNOTSUPP``
    "requires per-process pgtables" (the model accepted it)."""
    dev = Device("msm", "gpuvm_vma_ref", per_process_pgtables=False)
    f = dev.open()
    h = f.create_bo(MIB)
    f.get_param()
    refused(dev, E.EOPNOTSUPP, f.set_iova, h, 1 << 32)


# --- 10: VM_BIND validation ------------------------------------------------------------------


def _bind_file(flavour: str, kernel: str = "mainline") -> tuple[Device, DrmFile, int, int]:
    dev = Device(flavour, "gpuvm_vma_ref", kernel=kernel)
    f = dev.open()
    if flavour == "msm":
        f.set_param_vm_bind()
    else:
        f.vm_init()
    h = f.create_bo(2 * MIB)
    return dev, f, h, dev.context_window[0]


@pytest.mark.parametrize("flavour", ["msm", "nouveau"])
def test_vm_bind_refuses_unaligned_ops(flavour: str) -> None:
    """msm ``lookup_op`` (``!PAGE_ALIGNED`` iova / obj_offset / range, then
    ``drm_gpuvm_range_valid``) and nouveau ``bind_validate_op`` /
    ``nouveau_uvmm_validate_range``: ``-EINVAL``, nothing changes (the model accepted
    unaligned ops)."""
    dev, f, h, base = _bind_file(flavour)
    refused(dev, E.EINVAL, f.vm_bind, [BindMap(base + 0x100, MIB, h)])
    refused(dev, E.EINVAL, f.vm_bind, [BindMap(base, MIB + 0x10, h)])
    refused(dev, E.EINVAL, f.vm_bind, [BindMap(base, MIB, h, 0x800)])
    refused(dev, E.EINVAL, f.vm_bind, [BindUnmap(base, 0x80)])
    # a valid op first does not run: the array is all or nothing
    refused(dev, E.EINVAL, f.vm_bind, [BindMap(base, MIB, h), BindMap(base + MIB, 100, h)])
    f.vm_bind([BindMap(base, MIB, h)])


def test_vm_bind_size_check_is_a_mainline_behaviour() -> None:
    """msm ``vm_bind_job_lookup_ops`` in the newest tree read: ``range + obj_offset >
    obj->size`` -> ``-EINVAL``; 6.17's (msm_gem_vma.c @000a45dce7ad) has no such check, so
    the profile decides.  nouveau ``bind_validate_op`` always checks."""
    dev, f, h, base = _bind_file("msm", "mainline")
    refused(dev, E.EINVAL, f.vm_bind, [BindMap(base, 4 * MIB, h)])
    refused(dev, E.EINVAL, f.vm_bind, [BindMap(base, 2 * MIB, h, MIB)])
    f.vm_bind([BindMap(base, MIB, h, MIB)])
    _old, g, hg, gbase = _bind_file("msm", "6.17")
    g.vm_bind([BindMap(gbase, 4 * MIB, hg)])  # 6.17 maps past the end of the buffer
    nv, n, hn, nbase = _bind_file("nouveau", "6.17")
    refused(nv, E.EINVAL, n.vm_bind, [BindMap(nbase, 4 * MIB, hn)])
    refused(nv, E.EINVAL, n.vm_bind, [BindMap(nbase, MIB, hn, 2 * MIB)])  # offset >= size


# --- 11: a buffer twice in a submit -----------------------------------------------------------


def test_submit_with_a_duplicate_buffer() -> None:
    """msm ``submit_lock_objects`` (msm_gem_submit.c @00dfa76bdfc2): ``drm_exec`` without
    ``DRM_EXEC_IGNORE_DUPLICATES``, so ``[a, b, a]`` fails ``-EALREADY``; nouveau
    ``validate_init``: "multiple instances of buffer" ``-EINVAL``.  The model accepted it."""
    for policy in ("legacy_pre_6_17", "gpuvm_vma_ref"):
        dev = Device("msm", policy, display=False)
        f = dev.open()
        a, b = f.create_bo(MIB), f.create_bo(MIB)
        err = refused(dev, E.EALREADY, f.submit, [a, b, a])
        assert isinstance(err, DuplicateObject)
        f.submit([a, b])
    nv = Device("nouveau", "gpuvm_vma_ref")
    g = nv.open()
    g.channel_alloc()
    a = g.create_bo(MIB)
    refused(nv, E.EINVAL, g.submit, [a, a, 99])  # the duplicate is met before the bad handle


# --- 7: vma_ref holders, GEM_CLOSE wait ------------------------------------------------------


def test_submit_takes_no_vma_ref() -> None:
    """msm ``submit_pin_objects`` (msm_gem_submit.c @00dfa76bdfc2) holds the buffer and its
    vm_bo, never ``vma_ref``; only ``msm_gem_open`` (handles), exports and framebuffer
    prepare raise it (msm_gem.c, mainline).  The model's submit took one."""
    dev = Device("msm", "gpuvm_vma_ref")
    f = dev.open()
    h = f.create_bo(MIB)
    bo = f.bo(h)
    assert bo.vma_ref.total == 1
    f.submit([h])
    assert bo.vma_ref.total == 1  # was 2: the job held one
    f.prime_handle_to_fd(h)
    assert bo.vma_ref.total == 2
    dev.retire_all()
    assert bo.vma_ref.total == 2
    dev.check_invariants()


def test_gem_close_waits_even_without_a_vma_in_this_file() -> None:
    """``msm_gem_close`` (msm_gem.c, mainline): once the context VM exists and is not
    VM_BIND, ``dma_resv_wait_timeout(BOOKKEEP)`` waits on every fence of the buffer before
    ``put_iova_spaces``, whether or not this file maps it.  The model waited only when the
    file had a VMA.  A VM_BIND file, or a file with no VM yet, does not wait."""
    dev = Device("msm", "gpuvm_vma_ref", display=False)
    a = dev.open()
    b = dev.open(a.fds)
    ha = a.create_bo(MIB)
    hb = b.prime_fd_to_handle(a.prime_handle_to_fd(ha))
    b.get_param()  # b's context VM exists, b never maps the buffer
    assert b.vm is not None and b.vm.vma_of(b.bo(hb)) is None
    job = a.submit([ha])
    b.gem_close(hb)
    assert job.retired  # was still in flight
    c = dev.open(a.fds)
    c.set_param_vm_bind()
    hc = c.prime_fd_to_handle(a.prime_handle_to_fd(ha))
    job2 = a.submit([ha])
    c.gem_close(hc)
    assert not job2.retired  # VM_BIND: no implicit wait
    dev.check_invariants()


# --- 13: drm_gpuvm_exec_lock_range -----------------------------------------------------------


def test_exec_lock_range_prepares_only_the_range() -> None:
    """``drm_gpuvm_exec_lock_range`` (drm_gpuvm.c @000a45dce7ad) runs only
    ``drm_gpuvm_prepare_range`` in its ``drm_exec`` loop, unlike ``drm_gpuvm_exec_lock``
    which starts with ``drm_gpuvm_prepare_vm``.  The model added the VM's reservation."""
    from gpuvm.core.gem import GemObject
    from gpuvm.core.vm import GpuVm

    vm = GpuVm(0, 0x1000)
    ext = GemObject(0x100, name="ext")
    vm.map(0x30, 0x10, ext, 0)
    assert vm.exec_lock_range(0x30, 0x10) == {ext.resv}  # was {vm.resv, ext.resv}
    assert vm.exec_lock_range(0x100, 0x10) == frozenset()  # an empty range locks nothing
    assert vm.exec_lock() == {vm.resv, ext.resv}


# --- 5: msm purge before 6.17 ------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["legacy_pre_6_17", "gpuvm_vma_ref"])
def test_purge_before_617_frees_the_vmas(policy: str) -> None:
    """``msm_gem_purge`` before the 6.17 series (msm_gem.c @001ddc857c5b): after the unmap
    (``put_iova_spaces(obj, false)``) it calls ``put_iova_vmas``, closing every VMA and
    freeing its iova.  "Don't close VMAs on purge" (6.17 and mainline) keeps them.  The
    model kept them under every kernel."""
    for kernel, kept in (("msm-pre-6.17", False), ("6.17", True), ("mainline", True)):
        if policy == "gpuvm_vma_ref" and kernel == "msm-pre-6.17":
            continue  # vma_ref is the 6.17 series itself
        dev = Device("msm", policy, kernel=kernel, display=False)
        f = dev.open()
        h = f.create_bo(MIB)
        bo = f.bo(h)
        f.get_iova(h)
        vm = f.vm
        assert vm is not None and vm.vma_of(bo) is not None
        dev.purge(bo)
        vma = vm.vma_of(bo)
        assert (vma is not None) == kept, kernel
        if vma is not None:
            assert not vma.mapped
        dev.check_invariants()
        f.gem_close(h)
        dev.check_invariants()


# --- GEM_FLINK / GEM_OPEN ----------------------------------------------------------------------


def test_gem_flink_and_gem_open() -> None:
    """``drm_gem_flink_ioctl`` / ``drm_gem_open_ioctl`` (drm_gem.c @002c6ca75289): one name
    per buffer, lowest free id from 1, holding no reference; GEM_OPEN makes a new handle
    every time and returns the size; unknown handle or name ``-ENOENT``; the name goes at
    the buffer's last handle close (``drm_gem_object_handle_free``)."""
    dev = Device("msm", "gpuvm_vma_ref", display=False)
    a, b = dev.open(), dev.open()
    h = a.create_bo(MIB)
    bo = a.bo(h)
    refs = bo.refs.total
    name = a.gem_flink(h)
    assert name == 1 and a.gem_flink(h) == 1 and bo.refs.total == refs
    h1, size = b.gem_open(name)
    h2, _ = b.gem_open(name)
    assert size == MIB and h1 != h2 and b.bo(h1) is b.bo(h2) is bo
    assert bo.vma_ref.total == 3  # msm_gem_open per handle
    refused(dev, E.ENOENT, a.gem_flink, 99)
    refused(dev, E.ENOENT, b.gem_open, 2)
    dev.check_invariants()
    a.gem_close(h)
    b.gem_close(h1)
    assert b.gem_open(name)[1] == MIB  # b's h2 still names it
    b.close()
    assert dev.flink_names == {}
    refused(dev, E.ENOENT, a.gem_open, name)
    dev.check_invariants()


def test_traces_record_the_kernel_profile() -> None:
    """A ``device`` trace op takes an optional ``kernel``; the recorded line always names
    the profile the device ran under, so a replay runs under the same kernel."""
    from gpuvm.observe.trace import replay

    head = '{"format": "gpuvm-trace", "version": 1}\n'
    text = head + '{"op": "device", "id": "d0", "flavour": "msm", "policy": "legacy_pre_6_17"}\n'
    assert '"kernel": "msm-pre-6.17"' in replay(text).session.dumps()
    text = head + (
        '{"op": "device", "id": "d0", "flavour": "msm", "policy": "gpuvm_vma_ref", '
        '"kernel": "6.17"}\n'
    )
    r = replay(text)
    assert '"kernel": "6.17"' in r.session.dumps()
    assert r.session.obj("d0").kernel.name == "6.17"
