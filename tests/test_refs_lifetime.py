"""Reference counts and lifetimes (drm_gpuvm.c: ``drm_gpuvm_bo_destroy``, ``drm_gpuvm_free``,
extobj / evict lists, the VmBo and VM refcount invariants, full teardown).

Destruction order (a VmBo drops its VM before its GEM, so a VM can be freed before the
buffer), ``vm_free`` called exactly once, the VM's reference on ``r_obj``, strict
teardown reporting leaks without changing anything, ``explain`` chains and cycles,
extobj/evict list semantics with and without RESV_PROTECTED, ``validate`` stopping at
the first error, and the lock sets of ``exec_lock`` and ``sm_map_exec_lock``.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
from snapshot import unchanged

from gpuvm import (
    CALLER,
    OWNER,
    EventBus,
    EventLog,
    GemObject,
    GpuVm,
    GpuVmFlags,
    Holder,
    LeakError,
    MapRequest,
    RefcountUnderflow,
    Resv,
    UseAfterFree,
    VmBo,
    explain,
    gem_evict,
)
from gpuvm.core.events import Freed, RefPut, Validated, VmBoCreated, VmBoDestroyed
from gpuvm.core.refs import cycles, holder_chains

WALK = Holder("list walk")


def freed(x: GpuVm | GemObject | VmBo) -> bool:
    """``x.freed`` through a call, so mypy does not narrow the flag across mutations."""
    return x.freed


def listed(vb: VmBo) -> bool:
    return vb.listed


def kinds(log: EventLog) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for e in log.events:
        if isinstance(e, RefPut):
            out.append(("RefPut", (e.target, e.holder)))
        elif isinstance(e, Freed):
            out.append(("Freed", e.obj))
        elif isinstance(e, VmBoDestroyed):
            out.append(("VmBoDestroyed", e.vm_bo))
    return out


# --- destruction order --------------------------------------------------------------------


def test_vm_bo_destroy_drops_vm_before_gem() -> None:
    bus = EventBus()
    log = EventLog()
    bus.subscribe(log)
    vm_freed: list[GpuVm] = []
    vm = GpuVm(0, 0x1000, bus=bus, vm_free=vm_freed.append)
    bo = GemObject(0x100, bus=bus, name="bo")
    vm.map(0, 0x10, bo, 0)
    vb = bo.vm_bos[0]
    vb.get(CALLER)  # a caller keeps the VmBo (and so the VM) alive past close
    vm.close()
    assert not freed(vm) and vm_freed == []
    bo.put(OWNER)  # the buffer lives on through the VmBo
    assert not freed(bo)
    log.clear()
    vb.put(CALLER)
    seq = kinds(log)
    # VmBo destroyed, then VM reference dropped (VM freed, vm_free called), then GEM
    i_destroy = seq.index(("VmBoDestroyed", vb))
    i_vm_put = seq.index(("RefPut", (vm, vb)))
    i_vm_freed = seq.index(("Freed", vm))
    i_gem_put = seq.index(("RefPut", (bo, vb)))
    i_gem_freed = seq.index(("Freed", bo))
    assert i_destroy < i_vm_put < i_vm_freed < i_gem_put < i_gem_freed
    assert vm_freed == [vm] and freed(vm) and freed(bo) and freed(vb)


def test_vm_freed_exactly_once_with_vm_free() -> None:
    calls: list[GpuVm] = []
    vm = GpuVm(0, 0x1000, vm_free=calls.append)
    bo = GemObject(0x100)
    vm.map(0, 0x10, bo, 0)
    vm.map(0x20, 0x10, None, 0)
    vm.get(Holder("job"))
    vm.close()  # unmaps everything, drops OWNER; the job still holds the VM
    assert calls == [] and not freed(vm) and vm.vas == [] and bo.vm_bos == []
    vm.put(Holder("job"))
    assert calls == [vm] and freed(vm)
    with pytest.raises(UseAfterFree):
        vm.put(Holder("job"))
    assert calls == [vm]
    assert bo.refcount == 1 and bo.refs.holders == {OWNER: 1}


def test_vm_without_vm_free_warns_and_leaks() -> None:
    vm = GpuVm(0, 0x1000)
    log = EventLog()
    vm.bus.subscribe(log)
    vm.close()
    assert vm.freed
    assert any("vm_free" in w for w in vm.warnings)
    assert any(isinstance(e, Freed) and e.obj is vm for e in log.events)


def test_r_obj_reference_and_private_buffers() -> None:
    r_obj = GemObject(0, name="shared-resv")
    vm = GpuVm(0, 0x1000, r_obj=r_obj, vm_free=lambda vm: None)
    assert r_obj.refs.holders == {OWNER: 1, vm: 1}
    assert vm.resv is r_obj.resv
    private = GemObject(0x100, resv=vm.resv, name="private")
    external = GemObject(0x100, name="external")
    assert not vm.is_extobj(private) and vm.is_extobj(external) and not vm.is_extobj(None)
    vm.map(0, 0x10, private, 0)
    vm.map(0x10, 0x10, external, 0)
    assert [vb.obj for vb in vm.extobj] == [external]
    vm.close()
    assert vm.freed and r_obj.refs.holders == {OWNER: 1}
    # the default r_obj is a dummy held only by its VM, freed with it
    vm2 = GpuVm(0, 0x1000, vm_free=lambda vm: None)
    dummy = vm2.r_obj
    assert dummy.refs.holders == {vm2: 1}
    vm2.close()
    assert dummy.freed


def test_gem_pinned_by_linked_va_not_by_raw_va() -> None:
    vm = GpuVm(0, 0x1000)
    linked_bo = GemObject(0x100, name="linked")
    raw_bo = GemObject(0x100, name="raw")
    vm.map(0, 0x10, linked_bo, 0)
    raw = vm.insert(0x20, 0x10, raw_bo, 0)
    linked_bo.put()
    raw_bo.put()
    assert not linked_bo.freed  # VA -> VmBo -> GEM
    assert raw_bo.freed and raw.obj is raw_bo  # an unlinked VA's pointer dangles
    sparse = vm.insert(0x40, 0x10)  # object-less VAs pin nothing but the VM
    assert vm.refs.count(sparse) == 1
    vm.check_invariants()
    vm.unmap(0, 0x10)
    assert linked_bo.freed


def test_identical_remap_keeps_vm_bo() -> None:
    """apply obtains a MAP's VmBo before the first op: re-mapping the only mapping of a
    buffer whose owner reference is gone neither frees it nor recreates its VmBo."""
    vm = GpuVm(0, 0x1000)
    log = EventLog()
    vm.bus.subscribe(log)
    bo = GemObject(0x100, bus=vm.bus)
    vm.map(0, 0x10, bo, 0)
    vb = bo.vm_bos[0]
    vb.evict(True)
    bo.put()
    log.clear()
    ops = vm.sm_map_ops(MapRequest(0, 0x10, bo, 0))
    assert ops[0].keep  # type: ignore[union-attr]
    vm.apply(ops)
    assert not bo.freed and bo.vm_bos == [vb] and vb.evicted and list(vm.evict) == [vb]
    assert log.of(VmBoDestroyed, VmBoCreated) == []
    vm.map(0, 0x10, bo, 0x10)  # a different offset: same VmBo too
    assert bo.vm_bos == [vb] and not bo.freed
    vm.check_invariants()


def test_obtain_prealloc_hit_and_miss() -> None:
    vm = GpuVm(0, 0x1000, obtain_locked=False)  # the API before drm_gpuvm_bo_obtain_locked
    bo = GemObject(0x100)
    pre = vm.bo_create(bo)
    assert not listed(pre) and bo.vm_bos == [] and bo.refs.count(pre) == 1
    got = vm.bo_obtain_prealloc(pre)
    assert got is pre and pre.listed and bo.vm_bos == [pre] and pre.kref == 1
    pre2 = vm.bo_create(bo)
    got2 = vm.bo_obtain_prealloc(pre2)
    assert got2 is pre and pre.kref == 2 and freed(pre2) and bo.refs.count(pre2) == 0
    assert vm.bo_find(bo) is pre and pre.kref == 3
    for _ in range(3):
        pre.put()
    assert pre.freed and bo.vm_bos == [] and bo.refs.holders == {OWNER: 1}
    vm.check_invariants()


# --- teardown and leak reports -------------------------------------------------------------


def test_strict_teardown_names_leaks_and_changes_nothing() -> None:
    vm = GpuVm(0, 0x1000, name="ctx")
    bo = GemObject(0x100, name="scanout")
    vm.map(0x100, 0x10, bo, 0)
    held = vm.bo_obtain(GemObject(0x100, name="held"))
    with unchanged(vm, bo, held), pytest.raises(LeakError) as ei:
        vm.teardown(strict=True)
    msg = str(ei.value)
    assert ei.value.errno == errno.EBUSY
    assert "Va[0x100+0x10 scanout@0x0] still inserted" in msg
    assert "VmBo(ctx, scanout) still alive (kref 1)" in msg
    assert "VmBo(ctx, held) still alive (kref 1)" in msg
    # non-strict: the owner reference goes, the leaks are reported, the VM lives on
    report = vm.teardown(strict=False)
    assert len(report) == 3 and not vm.freed and vm.refs.count(OWNER) == 0
    vm.check_invariants()


def test_clean_teardown_frees() -> None:
    calls: list[GpuVm] = []
    vm = GpuVm(0, 0x1000, vm_free=calls.append)
    assert vm.teardown(strict=True) == [] and vm.freed and calls == [vm]


def test_leaks_lists_foreign_holders() -> None:
    vm = GpuVm(0, 0x1000)
    vm.get(Holder("file", who="fd 3"))
    vm.get(Holder("file", who="fd 3"))
    assert vm.leaks() == ["held by Holder(kind='file', who='fd 3') x2"]
    vm.get(OWNER)  # a second owner reference is a leak too
    assert vm.leaks()[0] == "held by Holder(kind='owner', who=None)"


# --- explain -------------------------------------------------------------------------------


def test_explain_chains() -> None:
    vm = GpuVm(0, 0x1000, name="vm")
    bo = GemObject(0x100, name="bo")
    vm.map(0x10, 0x10, bo, 0)
    text = explain(bo)
    lines = text.splitlines()
    assert "GEM bo <- owner" in lines
    assert "GEM bo <- VmBo(vm, bo) <- Va[0x10+0x10 bo@0x0]" in lines
    assert len(lines) == 2
    assert "[cycle]" not in text
    lonely = GemObject(0x10, name="lonely")
    lonely.put()
    assert explain(lonely) == "GEM lonely (freed) is held by nothing"
    vm_text = explain(vm).splitlines()
    assert "GpuVm(vm) <- owner" in vm_text
    assert "GpuVm(vm) <- Va[0x10+0x10 bo@0x0]" in vm_text
    assert "GpuVm(vm) <- VmBo(vm, bo) <- Va[0x10+0x10 bo@0x0]" in vm_text


def test_explain_reports_cycles() -> None:
    """Mixing directions: a legacy-style 'buffer holds its VMA holds the
    VM' reference on top of GPUVM's VA -> VmBo -> GEM makes a loop."""
    vm = GpuVm(0, 0x1000, name="vm")
    bo = GemObject(0x100, name="bo")
    vm.map(0, 0x10, bo, 0)
    vm.get(bo)  # the buffer holds the VM (legacy: BO -> VMA -> address space) ...
    bo.get(Holder("vma", who=vm))  # ... and a mapping in that VM holds the buffer
    bo.put(OWNER)  # the handle is gone: only the loop keeps both alive
    text = explain(bo)
    assert "GEM bo <- vma of GpuVm(vm) <- GpuVm(vm) <- GEM bo  [cycle]" in text
    assert "[cycle]" in text
    assert "GEM bo <- VmBo(vm, bo) <- Va[0x0+0x10 bo@0x0]" in text
    loops = cycles(vm)
    assert loops and all(c[0] is c[-1] for c in loops)
    assert any(bo in c for c in loops)
    chains = holder_chains(vm)
    assert any(c[-1] is vm and len(c) > 2 for c in chains)


def test_underflow_names_holders() -> None:
    vm = GpuVm(0, 0x1000, name="vm")
    bo = GemObject(0x100, name="bo")
    vm.map(0, 0x10, bo, 0)
    vb = bo.vm_bos[0]
    with unchanged(vm, bo), pytest.raises(RefcountUnderflow) as ei:
        vb.put(CALLER)
    assert "held by: Va[0x0+0x10 bo@0x0]" in str(ei.value)
    assert "caller" in str(ei.value)


# --- extobj / evict --------------------------------------------------------------------------


def scene(flags: GpuVmFlags) -> tuple[GpuVm, VmBo, VmBo]:
    vm = GpuVm(0, 0x1000, flags=flags, vm_bo_validate=lambda vb: 0)
    ext = GemObject(0x100, name="ext")
    priv = GemObject(0x100, name="priv", resv=vm.resv)
    vm.map(0, 0x10, ext, 0)
    vm.map(0x10, 0x10, priv, 0)
    return vm, ext.vm_bos[0], priv.vm_bos[0]


def test_extobj_add_idempotent_and_internal_noop() -> None:
    vm, ext, priv = scene(GpuVmFlags.NONE)
    assert list(vm.extobj) == [ext]
    ext.extobj_add()
    priv.extobj_add()
    assert list(vm.extobj) == [ext]
    # leaving the list happens only when the VmBo dies
    vm.unmap(0, 0x10)
    assert list(vm.extobj) == []
    # a caller obtain alone does not list (drivers call extobj_add themselves)
    other = GemObject(0x10, name="other")
    vb = vm.bo_obtain(other)
    assert list(vm.extobj) == []
    vb.extobj_add()
    assert list(vm.extobj) == [vb]
    vm.check_invariants()


def test_evict_without_resv_protected() -> None:
    vm, ext, priv = scene(GpuVmFlags.NONE)
    ext.evict(True)
    priv.evict(True)
    assert list(vm.evict) == [ext, priv]
    ext.evict(False)
    assert list(vm.evict) == [priv]
    gem_evict(ext.obj, True)
    assert list(vm.evict) == [priv, ext]
    vm.unmap(0, 0x20)  # both VmBos die and leave the list
    assert list(vm.evict) == [] and list(vm.extobj) == []
    vm.check_invariants()


def test_evict_with_resv_protected() -> None:
    vm, ext, priv = scene(GpuVmFlags.RESV_PROTECTED)
    ext.evict(True)
    priv.evict(True)
    assert list(vm.evict) == [priv]  # external: listed only by prepare_objects
    assert vm.prepare_objects() == {ext.obj.resv}
    assert list(vm.evict) == [priv, ext]
    ext.evict(False)  # external + protected: the list is not touched here
    assert list(vm.evict) == [priv, ext] and not ext.evicted
    calls: list[VmBo] = []

    def record(vb: VmBo) -> int:
        calls.append(vb)
        return 0

    assert vm.validate(record) == 0
    assert calls == [priv, ext]
    # after a successful validate, entries no longer evicted leave the list
    assert list(vm.evict) == [priv]  # priv is still marked evicted: it stays
    priv.evict(False)
    assert list(vm.evict) == []
    vm.check_invariants()


def test_gem_evict_covers_every_vm() -> None:
    bo = GemObject(0x100)
    vms = [GpuVm(0, 0x1000, name=f"vm{i}") for i in range(3)]
    for vm in vms[:2]:
        vm.map(0, 0x10, bo, 0)
    gem_evict(bo, True)
    assert [list(vm.evict) for vm in vms] == [[bo.vm_bos[0]], [bo.vm_bos[1]], []]
    assert all(vb.evicted for vb in bo.vm_bos)


def test_validate_stops_at_first_error() -> None:
    vm = GpuVm(0, 0x1000)
    bos = [GemObject(0x10, name=n) for n in "abc"]
    for i, bo in enumerate(bos):
        vm.map(i * 0x10, 0x10, bo, 0)
    vbs = [bo.vm_bos[0] for bo in bos]
    for vb in vbs:
        vb.evict(True)
    log = EventLog()
    vm.bus.subscribe(log)
    seen: list[tuple[VmBo, int]] = []

    def cb(vb: VmBo) -> int:
        seen.append((vb, vb.refs.count(WALK)))
        if vb.obj.name == "b":
            return -errno.ENOMEM
        vb.evict(False)
        return 0

    assert vm.validate(cb) == -errno.ENOMEM
    assert seen == [(vbs[0], 1), (vbs[1], 1)]  # the walk holds a temporary reference
    assert [e.vm_bo for e in log.of(Validated)] == [vbs[0]]  # type: ignore[attr-defined]
    assert list(vm.evict) == [vbs[1], vbs[2]]
    assert all(vb.refs.count(WALK) == 0 for vb in vbs)

    # the driver's own callback, set at init, is used when none is given
    def driver_validate(vb: VmBo) -> int:
        vb.evict(False)
        return 0

    vm.vm_bo_validate = driver_validate
    assert vm.validate() == 0 and list(vm.evict) == []
    vm.check_invariants()


def test_validate_callback_exception_drops_walk_ref() -> None:
    vm = GpuVm(0, 0x1000)
    bo = GemObject(0x10)
    vm.map(0, 0x10, bo, 0)
    vb = bo.vm_bos[0]
    vb.evict(True)

    def boom(vb: VmBo) -> int:
        raise RuntimeError("driver bug")

    with pytest.raises(RuntimeError):
        vm.validate(boom)
    assert vb.refs.count(WALK) == 0 and vb.kref == 1
    vm.check_invariants()


# --- lock sets -------------------------------------------------------------------------------


def test_exec_lock_sets() -> None:
    vm = GpuVm(0, 0x1000)
    ext = GemObject(0x100, name="ext")
    ext2 = GemObject(0x100, name="ext2")
    priv = GemObject(0x100, name="priv", resv=vm.resv)
    extra = GemObject(0x100, name="extra")
    vm.map(0, 0x10, ext, 0)
    vm.map(0x10, 0x10, priv, 0)
    vm.map(0x20, 0x10, None, 0)
    vm.map(0x30, 0x10, ext2, 0)
    assert vm.prepare_vm() == {vm.resv}
    assert vm.prepare_objects() == {ext.resv, ext2.resv}
    assert vm.exec_lock() == {vm.resv, ext.resv, ext2.resv}
    assert vm.exec_lock([extra]) == {vm.resv, ext.resv, ext2.resv, extra.resv}
    assert vm.exec_lock_range(0, 0x20) == {vm.resv, ext.resv}  # priv's resv is vm.resv
    assert vm.exec_lock_range(0x30, 0x100) == {ext2.resv}  # prepare_range only


def test_sm_exec_lock_sets() -> None:
    vm = GpuVm(0, 0x1000)
    a, b, c = (GemObject(0x100, name=n) for n in "abc")
    vm.map(0, 0x10, a, 0)
    vm.map(0x10, 0x10, None, 0)
    vm.map(0x20, 0x10, b, 0)
    # the request's object first, then every object of a VA remapped or unmapped
    assert vm.sm_map_exec_lock(MapRequest(0x8, 0x20, c, 0)) == {c.resv, a.resv, b.resv}
    assert vm.sm_map_exec_lock(MapRequest(0x10, 0x10, None, 0)) == set()
    assert vm.sm_map_exec_lock(MapRequest(0x40, 0x10, c, 0)) == {c.resv}
    assert vm.sm_unmap_exec_lock(0, 0x30) == {a.resv, b.resv}
    assert vm.sm_unmap_exec_lock(0x10, 0x10) == set()
    # lock sets are computed, nothing changes
    assert len(vm.vas) == 3


def test_shared_resv_identity_decides_extobj() -> None:
    shared = Resv("shared")
    vm = GpuVm(0, 0x1000, r_obj=GemObject(0, resv=shared))
    bo = GemObject(0x10, resv=shared)
    vm.map(0, 0x10, bo, 0)
    assert list(vm.extobj) == [] and vm.exec_lock() == {shared}
