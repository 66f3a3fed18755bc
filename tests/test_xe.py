"""The xe flavour (``drivers/gpu/drm/xe``): several VMs per file (``xe_vm_create_ioctl`` /
``xe_vm_destroy_ioctl``), VM_BIND naming a VM with xe's checks
(``vm_bind_ioctl_check_args``, ``xe_vm_bind_ioctl_validate_bo``), UNMAP_ALL of a buffer
(``drm_gpuvm_bo_unmap_ops_create``), VM-private buffers (``xe_gem_create_ioctl`` ``vm_id``,
``xe_gem_prime_export`` ``-EPERM``) and the unwind of a failed bind array
(``vm_bind_ioctl_ops_unwind``)."""

from __future__ import annotations

import errno as E

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpuvm import EventLog
from gpuvm.core.errors import (
    ArgumentTypeError,
    BadHandle,
    GpuvmError,
    InjectedFault,
    InvalidRange,
    InvalidValue,
    ModeError,
    NoSuchObject,
    PermissionDenied,
)
from gpuvm.core.events import Ioctl, Unmapped
from gpuvm.drm import xe
from gpuvm.drm.device import Device, snapshot
from gpuvm.drm.file import BindMap, BindUnmap, DrmFile
from gpuvm.drm.xe import BindUnmapAll
from gpuvm.observe.checker import LifetimeChecker

MB = 1 << 20
K64 = 0x10000


def freed(obj: object) -> bool:
    """A call, so that a check does not narrow the type for the next one."""
    return bool(getattr(obj, "freed", False))


def _file(flavour: str = "xe") -> tuple[Device, DrmFile]:
    dev = Device(flavour, planes=0)
    return dev, dev.open()


def _refused(dev: Device, err: type[GpuvmError], errno: int, call: object, *args: object) -> None:
    before = snapshot(dev)
    with pytest.raises(err) as exc:
        call(*args)  # type: ignore[operator]
    assert exc.value.errno == errno
    assert snapshot(dev) == before


def test_vm_ids_from_one_and_reused_after_destroy() -> None:
    dev, f = _file()
    assert [xe.vm_create(f) for _ in range(3)] == [1, 2, 3]
    xe.vm_destroy(f, 2)
    assert sorted(f.vms) == [1, 3]
    assert xe.vm_create(f) == 2  # xa_alloc: lowest free id
    other = dev.open()
    assert xe.vm_create(other) == 1  # ids are per file
    dev.check_invariants()


def test_vm_create_and_destroy_refusals() -> None:
    dev, f = _file()
    xe.vm_create(f)
    _refused(dev, NoSuchObject, E.ENOENT, xe.vm_destroy, f, 7)
    _refused(dev, InvalidValue, E.EINVAL, xe.vm_create, f, 1 << 5)
    _refused(dev, InvalidValue, E.EINVAL, xe.vm_create, f, xe.DRM_XE_VM_CREATE_FLAG_FAULT_MODE)


def test_xe_has_no_legacy_or_per_file_path() -> None:
    """The generic per-file calls are not xe ioctls (``-ENOTTY``); xe calls on msm likewise."""
    dev, f = _file()
    h = f.create_bo(MB)
    _refused(dev, ModeError, E.ENOTTY, f.submit, [h])
    _refused(dev, ModeError, E.ENOTTY, f.get_iova, h)
    _refused(dev, ModeError, E.ENOTTY, f.vm_bind, [BindMap(0x100000, MB, h)])
    msm = Device("msm", planes=0)
    _refused(msm, InvalidValue, E.ENOTTY, xe.vm_create, msm.open())


def test_binds_name_their_vm() -> None:
    dev, f = _file()
    a, b = xe.vm_create(f), xe.vm_create(f)
    h = xe.gem_create(f, 2 * MB)
    xe.vm_bind(f, a, [BindMap(0x100000, MB, h)])
    xe.vm_bind(f, b, [BindMap(0x200000, 2 * MB, h), BindMap(0x800000, MB)])
    assert f.vms[a].layout() == [(0x100000, MB, f.bo(h), 0)]
    assert f.vms[b].layout() == [(0x200000, 2 * MB, f.bo(h), 0), (0x800000, MB, None, 0)]
    xe.vm_bind(f, b, [BindUnmap(0x200000, MB)])
    assert f.vms[b].layout()[0] == (0x300000, MB, f.bo(h), MB)
    dev.check_invariants()


def test_bind_refusals_change_nothing() -> None:
    dev, f = _file()
    vm = xe.vm_create(f)
    h = xe.gem_create(f, 2 * MB)
    xe.vm_bind(f, vm, [BindMap(0x100000, MB, h)])
    cases: list[tuple[type[GpuvmError], int, object]] = [
        (NoSuchObject, E.EINVAL, (9, [BindMap(0, MB, h)])),  # unknown VM: -EINVAL
        (InvalidRange, E.EINVAL, (vm, [BindMap(0x1000, MB, h), BindMap(0x1800, MB, h)])),
        (InvalidRange, E.EINVAL, (vm, [BindUnmap(0x100000, 0)])),
        (InvalidValue, E.EINVAL, (vm, [BindMap(0x400000, MB, None, 0x1000)])),
        (InvalidValue, E.EINVAL, (vm, [BindUnmapAll(0)])),
        (InvalidRange, E.EINVAL, (vm, [BindMap(xe.XE_VM_SIZE - 0x1000, MB, h)])),
        (BadHandle, E.ENOENT, (vm, [BindMap(0x400000, MB, h), BindUnmapAll(77)])),
        (InvalidRange, E.EINVAL, (vm, [BindMap(0x400000, 2 * MB, h, 0x1000)])),
        (ArgumentTypeError, E.EINVAL, (vm, [("map", 0)])),
    ]
    for err, errno, args in cases:
        assert isinstance(args, tuple)
        _refused(dev, err, errno, xe.vm_bind, f, *args)


def test_empty_and_nothing_to_do_binds_succeed() -> None:
    """``-ENODATA`` (no binds, or no ops) is turned into success after the syncs."""
    dev, f = _file()
    vm = xe.vm_create(f)
    h = xe.gem_create(f, MB)
    before = snapshot(dev)
    xe.vm_bind(f, vm, [])
    xe.vm_bind(f, vm, [BindUnmap(0x100000, MB), BindUnmapAll(h)])
    assert snapshot(dev) == before


def test_unmap_all_unmaps_every_va_of_the_buffer_in_that_vm() -> None:
    dev, f = _file()
    a, b = xe.vm_create(f), xe.vm_create(f)
    h, g = xe.gem_create(f, 4 * MB), xe.gem_create(f, MB)
    xe.vm_bind(f, a, [BindMap(0x400000, MB, h, 3 * MB), BindMap(0x100000, MB, h)])
    xe.vm_bind(f, a, [BindMap(0x200000, MB, g), BindMap(0x300000, MB, h, MB)])
    xe.vm_bind(f, b, [BindMap(0x100000, MB, h)])
    log = EventLog()
    dev.bus.subscribe(log, [Unmapped])
    xe.vm_bind(f, a, [BindUnmapAll(h)])
    # drm_gpuvm_bo_unmap_ops_create: the VmBo's VA list order (link order), one UNMAP each
    assert [e.addr for e in log.events if isinstance(e, Unmapped)] == [
        0x400000,
        0x100000,
        0x300000,
    ]
    assert f.vms[a].layout() == [(0x200000, MB, f.bo(g), 0)]
    assert f.vms[b].layout() == [(0x100000, MB, f.bo(h), 0)]  # other VMs untouched
    assert f.bo(h).vm_bo_for(f.vms[a]) is None
    dev.check_invariants()


def test_unmap_all_sees_the_ops_before_it() -> None:
    """Each bind op is built on the tree the earlier ones left: a MAP then an UNMAP_ALL of
    the same buffer in one array leaves nothing."""
    _, f = _file()
    vm = xe.vm_create(f)
    h = xe.gem_create(f, MB)
    xe.vm_bind(f, vm, [BindMap(0x100000, MB, h), BindUnmapAll(h), BindMap(0x200000, MB)])
    assert f.vms[vm].layout() == [(0x200000, MB, None, 0)]


def test_vm_private_bo_shares_the_vm_resv_and_is_not_external() -> None:
    dev, f = _file()
    vm_id = xe.vm_create(f)
    vm = f.vms[vm_id]
    priv = xe.gem_create(f, MB, vm_id=vm_id)
    shared = xe.gem_create(f, MB)
    assert f.bo(priv).resv is vm.resv and f.bo(priv).private_vm is vm
    xe.vm_bind(f, vm_id, [BindMap(0x100000, MB, priv), BindMap(0x200000, MB, shared)])
    assert [vb.obj for vb in vm.extobj] == [f.bo(shared)]  # drm_gpuvm_is_extobj
    dev.check_invariants()


def test_vm_private_bo_cannot_be_exported() -> None:
    """``xe_gem_prime_export``: ``bo->vm`` -> ``-EPERM``, nothing exported or cached."""
    dev, f = _file()
    vm_id = xe.vm_create(f)
    priv = xe.gem_create(f, MB, vm_id=vm_id)
    _refused(dev, PermissionDenied, E.EPERM, f.prime_handle_to_fd, priv)
    assert f.bo(priv).dma_buf is None
    f.prime_handle_to_fd(xe.gem_create(f, MB))  # a shared buffer exports


def test_vm_private_bo_in_another_vm_is_external_there() -> None:
    """The kernel read has no check refusing it (``xe_vm_bind_ioctl``, ``xe_vma_create``):
    in a second VM the buffer does not share the resv, so it is an extobj there."""
    dev, f = _file()
    a, b = xe.vm_create(f), xe.vm_create(f)
    priv = xe.gem_create(f, MB, vm_id=a)
    xe.vm_bind(f, b, [BindMap(0x100000, MB, priv)])
    assert [vb.obj for vb in f.vms[b].extobj] == [f.bo(priv)]
    assert list(f.vms[a].extobj) == []
    dev.check_invariants()


def test_private_bo_keeps_its_vm_until_freed() -> None:
    """``xe_ttm_bo_destroy`` puts ``bo->vm``: a destroyed VM with a live private buffer is
    gone from the file but not freed; closing the buffer frees it."""
    dev, f = _file()
    vm_id = xe.vm_create(f)
    vm = f.vms[vm_id]
    priv = xe.gem_create(f, MB, vm_id=vm_id)
    xe.vm_bind(f, vm_id, [BindMap(0x100000, MB, priv)])
    xe.vm_destroy(f, vm_id)
    assert vm_id not in f.vms and not freed(vm) and vm.layout() == []
    f.gem_close(priv)
    assert freed(vm)
    dev.check_invariants()
    assert dev.close() == []


def test_gem_create_refusals() -> None:
    dev, f = _file()
    _refused(dev, InvalidValue, E.EINVAL, xe.gem_create, f, 0x1800)
    _refused(dev, InvalidValue, E.EINVAL, xe.gem_create, f, 0)
    _refused(dev, NoSuchObject, E.ENOENT, lambda: xe.gem_create(f, MB, vm_id=3))


def test_64k_alignment_on_need64k_platforms() -> None:
    """``xe_vm_bind_ioctl_validate_bo``: an ``INTERNAL_64K`` (VRAM) buffer on a NEED64K
    platform needs 64 KiB aligned address, range and offset; elsewhere 4 KiB is enough."""
    dev, f = _file("xe-64k")
    vm = xe.vm_create(f)
    vram = xe.gem_create(f, MB, vram=True)
    sysmem = xe.gem_create(f, MB)
    _refused(dev, InvalidRange, E.EINVAL, xe.vm_bind, f, vm, [BindMap(0x101000, K64, vram)])
    _refused(dev, InvalidRange, E.EINVAL, xe.vm_bind, f, vm, [BindMap(0x100000, 0x1000, vram)])
    xe.vm_bind(f, vm, [BindMap(0x110000, K64, vram, K64), BindMap(0x201000, 0x1000, sysmem)])
    _, f2 = _file("xe")
    vm2 = xe.vm_create(f2)
    xe.vm_bind(f2, vm2, [BindMap(0x101000, 0x1000, xe.gem_create(f2, MB, vram=True))])


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_failed_bind_is_unwound(k: int) -> None:
    """``fail_at=k``: ops 0..k-1 are committed (new VMAs, splits, removals), op k fails,
    ``vm_bind_ioctl_ops_unwind`` undoes them in reverse: the VM is exactly as before."""
    dev, f = _file()
    vm = xe.vm_create(f)
    h, g = xe.gem_create(f, 4 * MB), xe.gem_create(f, 4 * MB)
    xe.vm_bind(f, vm, [BindMap(0x100000, 4 * MB, h), BindMap(0x800000, MB, g)])
    ops: list[xe.XeBindOp] = [
        BindMap(0x200000, MB, g),  # REMAP of h's VA + MAP of g (g's VmBo exists)
        BindUnmapAll(g),  # removes the VAs the first op just made too
        BindMap(0x2000000, MB, xe.gem_create(f, MB)),  # a new VmBo, on the extobj list
        BindUnmap(0x100000, MB),
    ]
    before = snapshot(dev)
    layout = f.vms[vm].layout()
    checker = LifetimeChecker(dev)
    with pytest.raises(InjectedFault) as exc:
        xe.vm_bind(f, vm, ops, fail_at=k, errno=E.ENOSPC)
    assert exc.value.errno == E.ENOSPC
    assert snapshot(dev) == before and f.vms[vm].layout() == layout
    dev.check_invariants()
    assert checker.check() == []
    xe.vm_bind(f, vm, ops)  # the same array still applies afterwards
    dev.check_invariants()
    assert [e for e in f.vms[vm].layout() if e[2] is f.bo(g)] == []


def test_file_close_closes_every_vm() -> None:
    dev, f = _file()
    vms = [f.vms[xe.vm_create(f)] for _ in range(2)]
    h = xe.gem_create(f, MB)
    xe.vm_bind(f, 1, [BindMap(0x100000, MB, h)])
    xe.vm_bind(f, 2, [BindMap(0x100000, MB, h)])
    log = EventLog()
    dev.bus.subscribe(log, [Ioctl])
    f.close()
    assert all(vm.freed for vm in vms) and f.vms == {}
    assert dev.close() == []


def test_submit_names_a_vm() -> None:
    dev, f = _file()
    vm = xe.vm_create(f)
    _refused(dev, NoSuchObject, E.ENOENT, xe.submit, f, 5)
    job = xe.submit(f, vm)
    assert job in dev.jobs
    dev.retire_all()
    dev.check_invariants()


def test_xe_doc_example_runs() -> None:
    import contextlib
    import io
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parent.parent / "docs" / "xe.md"
    (code,) = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(doc), "exec"), {})
    shown = [line.removeprefix("# ") for line in code.splitlines() if line.startswith("# ")]
    assert out.getvalue().splitlines() == shown


def test_study_reimport_runs_on_xe_like_msm_vm_bind() -> None:
    """The reimport workload with a VM_BIND consumer runs on xe (its VM from VM_CREATE,
    binds and submits naming it) and costs what msm's VM_BIND consumer costs in map / unmap
    work; xe's ioctls are its own.  Other xe workloads are refused up front."""
    from gpuvm.study.workloads import WorkloadError, pageflip, reimport

    runs = {
        fl: reimport(
            source="foreign",
            pattern="close_each_frame",
            consumer="vm_bind",
            flavour=fl,
            frames=6,
            check=True,
        )
        for fl in ("msm", "xe")
    }
    assert runs["xe"].status == "ok" and runs["msm"].status == "ok"
    keys = ("map_ops", "unmap_ops", "pages_mapped", "tlb_flushes", "vmas_created")
    for key in keys:
        assert getattr(runs["xe"].steady, key) == getattr(runs["msm"].steady, key)
    assert dict(runs["xe"].steady.ioctls_by_name)["XE_VM_BIND"] == 8
    with pytest.raises(WorkloadError):
        reimport(consumer="legacy", flavour="xe", frames=4)
    with pytest.raises(WorkloadError):
        pageflip(flavour="xe", frames=4)


def test_study_sweep_skips_what_xe_cannot_run() -> None:
    from gpuvm.study.spec import loads_spec

    spec = loads_spec(
        '[study]\npolicies = ["gpuvm_vma_ref"]\nflavour = ["xe"]\nworkloads = ["reimport"]\n'
    )
    tasks = list(spec.runs())
    skipped = {t.spec.consumer: t.skipped for t in tasks}
    assert skipped == {"legacy": "xe runs VM_BIND re-imports only", "vm_bind": None}


_PAGE = 0x10000  # the generated ops use a 64 KiB grid over a 1 MiB window


@st.composite
def _arrays(draw: st.DrawFn) -> tuple[list[tuple[str, int, int, int, int]], int]:
    """Random xe bind arrays (MAP of buffer 0..2 or NULL, UNMAP, UNMAP_ALL) and a failing
    op index."""
    n = draw(st.integers(1, 6))
    ops = []
    for _ in range(n):
        kind = draw(st.sampled_from(["map", "null", "unmap", "unmap_all"]))
        start = draw(st.integers(0, 15))
        length = draw(st.integers(1, 16 - start))
        ops.append((kind, start, length, draw(st.integers(0, 2)), draw(st.integers(0, 3))))
    return ops, draw(st.integers(0, n - 1))


def _build(handles: list[int], ops: list[tuple[str, int, int, int, int]]) -> list[xe.XeBindOp]:
    out: list[xe.XeBindOp] = []
    for kind, start, length, which, off in ops:
        addr, rng = 0x100000 + start * _PAGE, length * _PAGE
        if kind == "map":
            out.append(BindMap(addr, rng, handles[which], off * _PAGE))
        elif kind == "null":
            out.append(BindMap(addr, rng))
        elif kind == "unmap":
            out.append(BindUnmap(addr, rng))
        else:
            out.append(BindUnmapAll(handles[which]))
    return out


@given(_arrays(), _arrays())
def test_any_failed_bind_array_is_unwound_exactly(
    setup: tuple[list[tuple[str, int, int, int, int]], int],
    case: tuple[list[tuple[str, int, int, int, int]], int],
) -> None:
    """Whatever the VM holds and whatever the array does, a failure at any op leaves the
    model exactly as before (snapshot, invariants, checker), and the array then applies as
    it would have."""
    dev, f = _file()
    vm = xe.vm_create(f)
    handles = [xe.gem_create(f, 2 * MB), xe.gem_create(f, 2 * MB, vm_id=vm), xe.gem_create(f, MB)]
    xe.vm_bind(f, vm, _build(handles, setup[0]))
    ops = _build(handles, case[0])
    before = snapshot(dev)
    checker = LifetimeChecker(dev)
    with pytest.raises(InjectedFault):
        xe.vm_bind(f, vm, ops, fail_at=case[1])
    assert snapshot(dev) == before
    dev.check_invariants()
    assert checker.check() == []
    xe.vm_bind(f, vm, ops)
    dev.check_invariants()
