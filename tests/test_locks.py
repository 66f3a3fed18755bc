"""The optional lock-held checks (``GpuVm(lock_checks=True)``): what the kernel asserts with
lockdep (``drm_gem_gpuva_assert_lock_held``, ``drm_gpuvm_resv_assert_held``,
``dma_resv_assert_held``) is refused when not held, and nothing changes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from snapshot import unchanged

from gpuvm import GemObject, GpuVm, GpuVmFlags, Lock, MapRequest, UnmapRequest, Va, locked
from gpuvm.core.errors import LockMisuse, LockNotHeld
from gpuvm.core.vmbo import gem_evict

P = 4096
IMM = GpuVmFlags.IMMEDIATE_MODE
PROT = GpuVmFlags.RESV_PROTECTED


def checked(flags: GpuVmFlags | int = 0, *, obtain_locked: bool = True) -> GpuVm:
    return GpuVm(
        0,
        1 << 20,
        name="vm",
        flags=flags,
        lock_checks=True,
        vm_bo_validate=lambda b: 0,
        obtain_locked=obtain_locked,
    )


def test_checks_are_off_by_default() -> None:
    vm = GpuVm(0, 1 << 20)
    obj = GemObject(P)
    vm.map(0, P, obj)  # no lock held: fine, as before
    assert not vm.lock_checks


def test_map_needs_the_gem_lock_and_under_resv_protected_the_vm_resv() -> None:
    vm = checked()
    obj = GemObject(4 * P, name="a")
    with unchanged(vm, obj), pytest.raises(LockNotHeld) as exc:
        vm.map(0, P, obj)
    assert exc.value.errno == 37  # ENOLCK
    with locked(obj):
        vm.map(0, P, obj)
    assert not obj.resv.held

    pvm = checked(PROT)
    with unchanged(pvm, obj), locked(obj), pytest.raises(LockNotHeld):
        pvm.map(0, P, obj)  # extobj_add needs the VM's resv
    with locked(pvm.resv, obj):
        pvm.map(0, P, obj)
    pvm.check_invariants()


def test_immediate_mode_uses_the_gems_own_gpuva_lock() -> None:
    vm = checked(IMM)
    obj = GemObject(4 * P, name="a")
    assert vm.gem_lock(obj) is obj.gpuva_lock
    with unchanged(vm, obj), locked(obj), pytest.raises(LockNotHeld):
        vm.map(0, P, obj)  # the resv is not the lock here
    with locked(obj.gpuva_lock):
        vm.map(0, P, obj)


def test_unmapping_an_unheld_object_is_refused_even_when_the_request_has_none() -> None:
    vm = checked()
    a, b = GemObject(4 * P, name="a"), GemObject(4 * P, name="b")
    with locked(a, b):
        vm.map(0, 2 * P, a)
        vm.map(2 * P, 2 * P, b)
    with unchanged(vm, a, b), locked(a), pytest.raises(LockNotHeld):
        vm.unmap(0, 4 * P)  # touches b too
    with unchanged(vm, a, b), locked(a), pytest.raises(LockNotHeld):
        vm.bind([UnmapRequest(0, P), MapRequest(P, 2 * P, a, 0)])  # the map remaps b
    with locked(a, b):
        vm.bind([UnmapRequest(0, P), MapRequest(P, 2 * P, a, 0)])
    vm.check_invariants()


def _setup(
    flags: GpuVmFlags | int = 0, *, obtain_locked: bool = True
) -> tuple[GpuVm, GemObject, Va]:
    vm = checked(flags, obtain_locked=obtain_locked)
    obj = GemObject(4 * P, name="a")
    with locked(vm.resv, vm.gem_lock(obj)) if flags & PROT else locked(vm.gem_lock(obj)):
        [va] = vm.map(0, P, obj)
    return vm, obj, va


CALLS: dict[str, tuple[GpuVmFlags | int, Callable[[GpuVm, GemObject, Va], object], str]] = {
    "bo_find": (0, lambda vm, o, va: vm.bo_find(o), "gem"),
    "bo_obtain": (0, lambda vm, o, va: vm.bo_obtain(o), "gem"),
    "unlink (last ref)": (0, lambda vm, o, va: vm.unlink(va), "gem"),
    "bo_unmap_ops": (0, lambda vm, o, va: vm.bo_unmap_ops(va.vm_bo), "gem"),  # type: ignore[arg-type]
    "evict": (0, lambda vm, o, va: vm.bo_evict(va.vm_bo, True), "resv"),  # type: ignore[arg-type]
    "gem_evict": (0, lambda vm, o, va: gem_evict(o), "resv"),
    "validate (protected)": (PROT, lambda vm, o, va: vm.validate(), "vm"),
    "prepare_objects (protected)": (PROT, lambda vm, o, va: vm.prepare_objects(), "vm"),
    "extobj_add (protected)": (PROT, lambda vm, o, va: va.vm_bo.extobj_add(), "vm"),  # type: ignore[union-attr]
}


@pytest.mark.parametrize("name", CALLS)
def test_each_call_is_refused_without_its_lock_and_runs_with_it(name: str) -> None:
    flags, call, which = CALLS[name]
    vm, obj, va = _setup(flags)
    needed: Lock = {"gem": vm.gem_lock(obj), "resv": obj.resv, "vm": vm.resv}[which]
    with unchanged(vm, obj, va), pytest.raises(LockNotHeld):
        call(vm, obj, va)
    with locked(needed):
        call(vm, obj, va)


def test_a_put_that_cannot_destroy_needs_no_lock_the_last_one_does() -> None:
    vm, obj, va = _setup()
    with locked(obj):
        vb = vm.bo_find(obj)
    assert vb is not None and vb.kref == 2
    vb.put()  # not the last reference: no lock needed
    with locked(obj):
        vm.remove(va)
    extra = vb.get()  # a caller's reference, then drop the VA's
    with locked(obj):
        vm.unlink(va)
    with unchanged(vm, obj), pytest.raises(LockNotHeld):
        extra.put()  # the last one destroys the VmBo
    with locked(obj):
        extra.put()
    assert extra.freed


def test_deferred_calls_take_the_gpuva_lock_themselves() -> None:
    vm, obj, va = _setup(IMM)
    vm.remove(va)
    with unchanged(vm, obj, va), locked(obj.gpuva_lock), pytest.raises(LockMisuse):
        vm.unlink_defer(va)  # mutex_lock on a held mutex
    vm.unlink_defer(va)
    assert vm.bo_defer


def test_deferred_cleanup_locks_the_vm_resv_itself_under_resv_protected() -> None:
    vm, obj, va = _setup(IMM | PROT)
    vm.remove(va)
    vm.unlink_defer(va)
    with unchanged(vm, obj), locked(vm.resv), pytest.raises(LockMisuse):
        vm.bo_deferred_cleanup()
    assert len(vm.bo_deferred_cleanup()) == 1


def test_lock_misuse() -> None:
    lk = Lock("m")
    lk.lock()
    with pytest.raises(LockMisuse) as exc:
        lk.lock()
    assert exc.value.errno == 35  # EDEADLK
    lk.unlock()
    with pytest.raises(LockMisuse) as exc:
        lk.unlock()
    assert exc.value.errno == 22
    a, b = Lock("a"), Lock("b")
    b.lock()
    with pytest.raises(LockMisuse), locked(a, b):
        pass
    assert not a.held and b.held  # nothing was taken
    with locked(a, a):  # duplicates are taken once
        assert a.held
    assert not a.held


def test_resv_protected_unmap_needs_the_vm_resv_only_when_a_vm_bo_dies() -> None:
    vm = checked(PROT)
    obj = GemObject(16 * P, name="a")
    with locked(vm.resv, obj):
        vm.map(0, P, obj)
        vm.map(4 * P, P, obj)
    with locked(obj):
        vm.unmap(0, P)  # another VA keeps the VmBo: drm_gpuvm_bo_put does not destroy
    with unchanged(vm, obj), locked(obj), pytest.raises(LockNotHeld):
        vm.unmap(4 * P, P)  # the last VA: the VmBo is destroyed under the VM's resv
    with locked(vm.resv, obj):
        vm.unmap(4 * P, P)
    assert obj.vm_bo_for(vm) is None


def test_obtain_prealloc_needs_the_gem_lock() -> None:
    """The ``drm_gpuvm_bo_obtain_prealloc`` before it took the GEM lock itself (the newest
    one: tests/test_kernel_exact_refs.py)."""
    vm, obj, _va = _setup(obtain_locked=False)
    other = GemObject(4 * P, name="b")
    pre = vm.bo_create(other)  # creating is allowed unlocked: it is not listed yet
    with unchanged(vm, obj, other, pre), pytest.raises(LockNotHeld):
        vm.bo_obtain_prealloc(pre)
    with locked(other):
        assert vm.bo_obtain_prealloc(pre) is pre
    hit_pre = vm.bo_create(obj)  # obj is listed: the hit destroys hit_pre, under the locks
    with unchanged(vm, obj, hit_pre), pytest.raises(LockNotHeld):
        vm.bo_obtain_prealloc(hit_pre)
    with locked(obj):
        vb = vm.bo_obtain_prealloc(hit_pre)
    assert vb is not hit_pre and hit_pre.freed
