"""IMMEDIATE_MODE: deferred VmBo puts and unlinks, zombies, ``bo_deferred_cleanup``, and
fence-signalling sections (``drm_gpuvm_bo_put_deferred``, ``drm_gpuva_unlink_defer``,
``drm_gpuvm_bo_deferred_cleanup``; the model rejects a deferred call without
IMMEDIATE_MODE, where the kernel only WARNs)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from snapshot import unchanged

import gpuvm
from gpuvm import EventBus, EventLog, GemObject, GpuVm, GpuVmFlags, MapRequest, Va, VmBo
from gpuvm.core.errors import (
    FenceSignallingViolation,
    GpuvmError,
    ImmediateModeMismatch,
    NotImmediateMode,
    RefcountUnderflow,
    UseAfterFree,
)
from gpuvm.core.events import VmBoDestroyed, VmBoZombie
from gpuvm.core.refs import CALLER, OWNER, explain

P = 4096
IMM = GpuVmFlags.IMMEDIATE_MODE
PROT = GpuVmFlags.RESV_PROTECTED


def vm_with(flags: GpuVmFlags | int = IMM) -> tuple[GpuVm, EventLog, list[GpuVm]]:
    bus = EventBus()
    log = EventLog()
    bus.subscribe(log)
    freed: list[GpuVm] = []
    vm = GpuVm(0, 1 << 20, name="vm", flags=flags, bus=bus, vm_free=freed.append)
    return vm, log, freed


def external(name: str = "ext") -> GemObject:
    """A buffer with its own reservation: an extobj of any VM."""
    return GemObject(16 * P, name=name)


def mapped(vm: GpuVm, obj: GemObject, addr: int = 0, size: int = 4 * P) -> Va:
    [va] = vm.map(addr, size, obj)
    return va


def vm_bo_of(vm: GpuVm, obj: GemObject) -> VmBo:
    vb = obj.vm_bo_for(vm)
    assert vb is not None
    return vb


def test_put_deferred_above_zero_is_a_plain_put() -> None:
    vm, _, _ = vm_with()
    obj = external()
    mapped(vm, obj)
    vb = vm.bo_find(obj)
    assert vb is not None and vb.kref == 2
    assert vb.put_deferred() is False
    assert vb.kref == 1 and not vb.zombie and not vm.bo_defer
    vm.check_invariants()


@pytest.mark.parametrize("flags", [IMM, IMM | PROT], ids=["plain", "resv_protected"])
def test_last_deferred_put_makes_a_zombie_that_cleanup_frees(flags: GpuVmFlags) -> None:
    vm, log, freed = vm_with(flags)
    obj = external()
    va = mapped(vm, obj)
    vb = vm_bo_of(vm, obj)
    vm.bo_evict(vb)
    vm.prepare_objects()  # under RESV_PROTECTED, evicted extobjs are listed here
    assert vb in vm.extobj and vb in vm.evict
    with vm.fence_signalling():
        vm.remove(va)
        vm.unlink_defer(va)
    vm.free_va(va)
    # A zombie: kref 0, off the GEM's list, still holding its VM and its buffer.
    assert vb.zombie and not vb.freed and vb.kref == 0 and vm.bo_defer == [vb]
    assert obj.vm_bos == [] and vm.bo_find(obj) is None
    assert vm.refs.count(vb) == 1 and obj.refs.count(vb) == 1
    assert [e.vm_bo for e in log.of(VmBoZombie)] == [vb]
    # Unless RESV_PROTECTED, it left the extobj and evict lists at once.
    on_lists = vb in vm.extobj and vb in vm.evict
    assert on_lists == bool(flags & PROT)
    vm.check_invariants()
    # Walkers skip it, and nothing can revive it.
    assert vm.prepare_objects() == frozenset()
    seen: list[VmBo] = []
    assert vm.validate(lambda b: seen.append(b)) == 0 and seen == []
    with unchanged(vm, obj), pytest.raises(UseAfterFree):
        vb.get()
    with unchanged(vm, obj), pytest.raises(UseAfterFree):
        vb.evict(False)
    with unchanged(vm, obj), pytest.raises(RefcountUnderflow):
        vb.put_deferred()
    # Cleanup frees it: off every list, then its VM and buffer references go.
    assert vm.bo_deferred_cleanup() == [vb]
    assert vb.freed and not vb.zombie and vm.bo_defer == [] and vb not in vm.vm_bos
    assert vb not in vm.extobj and vb not in vm.evict
    assert vm.refs.count(vb) == 0 and obj.refs.count(vb) == 0
    assert [e.vm_bo for e in log.of(VmBoDestroyed)] == [vb]
    vm.check_invariants()
    vm.close()
    assert freed == [vm]
    if not gpuvm.compiled():  # mypyc keeps no docstrings (docs/compiled.md)
        assert vm.bo_deferred_cleanup.__doc__  # documented kernel name


def test_obtain_after_a_zombie_creates_a_new_vm_bo() -> None:
    vm, _, _ = vm_with()
    obj = external()
    va = mapped(vm, obj)
    old = vm_bo_of(vm, obj)
    vm.remove(va)
    vm.unlink_defer(va)
    assert old.zombie
    va2 = mapped(vm, obj, 8 * P)
    new = vm_bo_of(vm, obj)
    assert new is not old and va2.vm_bo is new and not new.zombie
    assert list(vm.vm_bos) == [old, new]
    vm.check_invariants()
    vm.bo_deferred_cleanup()
    assert list(vm.vm_bos) == [new] and old.freed


def test_cleanup_frees_newest_first_like_llist_del_all() -> None:
    vm, log, _ = vm_with()
    objs = [external(f"b{i}") for i in range(3)]
    vas = [mapped(vm, o, i * 8 * P) for i, o in enumerate(objs)]
    vbs = [vm_bo_of(vm, o) for o in objs]
    with vm.fence_signalling():
        for va in vas:
            vm.remove(va)
            vm.unlink_defer(va)
    assert vm.bo_defer == vbs
    assert vm.bo_deferred_cleanup() == vbs[::-1]
    assert [e.vm_bo for e in log.of(VmBoDestroyed)] == vbs[::-1]
    assert vm.bo_deferred_cleanup() == []  # empty list: nothing to do


def test_unlink_defer_of_an_objectless_va_is_a_no_op() -> None:
    vm, _, _ = vm_with()
    [va] = vm.map(0, 4 * P, None)
    with unchanged(vm):
        vm.unlink_defer(va)


def test_the_last_reference_can_be_a_vm_bo_put_deferred_by_its_holder() -> None:
    """A job holding the VmBo (as panthor's op contexts do) drops it in run_job."""
    vm, _, _ = vm_with()
    obj = external()
    va = mapped(vm, obj)
    vb = vm_bo_of(vm, obj)
    vb.get(CALLER)
    vm.unmap(0, 4 * P)  # the VA's reference goes, the caller's stays
    assert va.freed and vb.kref == 1
    with vm.fence_signalling():
        assert vb.put_deferred(CALLER) is True
    assert vb.zombie and vm.bo_defer == [vb]


def test_a_zombie_keeps_its_vm_alive_and_is_named_as_a_leak() -> None:
    vm, _, freed = vm_with()
    obj = external()
    va = mapped(vm, obj)
    vm.remove(va)
    vm.unlink_defer(va)
    report = vm.leaks()
    assert any("deferred list, never cleaned up" in line for line in report), report
    vm.close()
    assert not vm.freed and freed == []
    assert "deferred list of GpuVm(vm)" in explain(vm)
    vm.bo_deferred_cleanup()  # the last VM reference was the zombie's
    assert vm.freed and freed == [vm]


# --- rejections: nothing changes ---------------------------------------------------------


def _linked(flags: GpuVmFlags | int) -> tuple[GpuVm, GemObject, Va, VmBo]:
    vm, _, _ = vm_with(flags)
    obj = external()
    va = mapped(vm, obj)
    return vm, obj, va, vm_bo_of(vm, obj)


def test_deferred_calls_need_immediate_mode() -> None:
    vm, obj, va, vb = _linked(0)
    vm.remove(va)
    with unchanged(vm, obj, va), pytest.raises(NotImmediateMode) as exc:
        vm.unlink_defer(va)
    assert exc.value.errno == 22 and isinstance(exc.value, GpuvmError)
    with unchanged(vm, obj, va), pytest.raises(NotImmediateMode):
        vb.put_deferred(va)


FENCE_REFUSED: dict[str, Callable[[GpuVm, GemObject, Va, VmBo], object]] = {
    "sm_map_ops": lambda vm, obj, va, vb: vm.sm_map_ops(MapRequest(8 * P, P, obj, 0)),
    "sm_unmap_ops": lambda vm, obj, va, vb: vm.sm_unmap_ops(0, P),
    "prefetch_ops": lambda vm, obj, va, vb: vm.prefetch_ops(0, P),
    "bo_unmap_ops": lambda vm, obj, va, vb: vm.bo_unmap_ops(vb),
    "map": lambda vm, obj, va, vb: vm.map(8 * P, P, obj),
    "bind": lambda vm, obj, va, vb: vm.bind([MapRequest(8 * P, P, obj, 0)]),
    "bo_create": lambda vm, obj, va, vb: vm.bo_create(external("new")),
    "bo_obtain": lambda vm, obj, va, vb: vm.bo_obtain(obj),
    "vm_bo.put": lambda vm, obj, va, vb: vb.put(va),
    "unlink": lambda vm, obj, va, vb: vm.unlink(va),
    "validate": lambda vm, obj, va, vb: vm.validate(lambda b: 0),
    "exec_lock": lambda vm, obj, va, vb: vm.exec_lock(),
    "prepare_objects": lambda vm, obj, va, vb: vm.prepare_objects(),
    "prepare_range": lambda vm, obj, va, vb: vm.prepare_range(0, P),
    "bo_deferred_cleanup": lambda vm, obj, va, vb: vm.bo_deferred_cleanup(),
    "close": lambda vm, obj, va, vb: vm.close(),
    "teardown": lambda vm, obj, va, vb: vm.teardown(strict=False),
}


@pytest.mark.parametrize("name", FENCE_REFUSED)
def test_fence_signalling_section_refuses_what_may_sleep_or_allocate(name: str) -> None:
    vm, obj, va, vb = _linked(IMM)
    call = FENCE_REFUSED[name]
    with (
        vm.fence_signalling(),
        unchanged(vm, obj, va),
        pytest.raises(FenceSignallingViolation) as exc,
    ):
        call(vm, obj, va, vb)
    assert exc.value.errno == 35  # EDEADLK
    assert vm.fence_depth == 0
    call(vm, obj, va, vb)  # outside the section the same call is fine


def test_fence_signalling_section_allows_the_immediate_mode_path() -> None:
    vm, obj, va, vb = _linked(IMM)
    seen: list[object] = []
    with vm.fence_signalling():
        with vm.fence_signalling():  # nests, as dma_fence_begin_signalling does
            vm.sm_map(MapRequest(4 * P, P, obj, 0), seen.append)  # callbacks: no allocation
            extra = Va(32 * P, P, obj)
            vm.insert_va(extra)
            vm.link(extra, vb)
        assert vm.fence_depth == 1
        vm.remove(extra)
        vm.unlink_defer(extra)
        vm.remove(va)
        vm.unlink_defer(va)
    assert vm.fence_depth == 0 and seen and vb.zombie
    vm.check_invariants()


def test_underflow_is_reported_before_the_fence_rule() -> None:
    vm, obj, _va, vb = _linked(IMM)
    with vm.fence_signalling(), unchanged(vm, obj), pytest.raises(RefcountUnderflow):
        vb.put(OWNER)


# --- a state machine over the immediate-mode path ------------------------------------------


class DeferredMachine(RuleBasedStateMachine):
    """Maps, deferred unmaps in fence-signalling sections, caller references dropped with
    deferred puts, evictions, validation and deferred cleanup on an IMMEDIATE_MODE VM
    (RESV_PROTECTED or not); the VM's invariants hold after every step, the deferred list
    is exactly the VmBos whose last reference a deferred put dropped since the last
    cleanup, and a cleanup frees exactly those, newest first."""

    def __init__(self) -> None:
        super().__init__()
        self.vm: GpuVm
        self.objs = [external(f"e{i}") for i in range(3)]
        self.objs.append(GemObject(16 * P, name="private"))
        self.held: list[VmBo] = []
        self.expected_zombies: list[VmBo] = []

    @initialize(protected=st.booleans())
    def make_vm(self, protected: bool) -> None:
        self.vm = GpuVm(0, 64 * P, name="vm", flags=IMM | PROT if protected else IMM)
        self.objs[3] = GemObject(16 * P, name="private", resv=self.vm.resv)

    @rule(slot=st.integers(0, 15), pages=st.integers(1, 4), o=st.integers(0, 3))
    def map(self, slot: int, pages: int, o: int) -> None:
        addr = slot * 4 * P
        self.vm.map(addr, min(pages, 64 - slot * 4) * P, self.objs[o])

    @rule(slot=st.integers(0, 15), span=st.sampled_from([1, 1, 4, 16]))
    def deferred_unmap(self, slot: int, span: int) -> None:
        """run_job: take the VAs meeting ``span`` slots out and unlink them, deferred."""
        vas = self.vm.iter_range(slot * 4 * P, min(slot + span, 16) * 4 * P)
        with self.vm.fence_signalling():
            for va in vas:
                vb = va.vm_bo
                self.vm.remove(va)
                self.vm.unlink_defer(va)
                if vb is not None and vb.zombie:
                    self.expected_zombies.append(vb)
        for va in vas:
            self.vm.free_va(va)

    @rule(o=st.integers(0, 3))
    def hold(self, o: int) -> None:
        vb = self.vm.bo_find(self.objs[o])
        if vb is not None:
            self.held.append(vb)

    @rule(data=st.data())
    def drop_held(self, data: st.DataObject) -> None:
        if not self.held:
            return
        vb = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        with self.vm.fence_signalling():
            if vb.put_deferred():
                self.expected_zombies.append(vb)

    @rule(o=st.integers(0, 3), e=st.booleans())
    def evict(self, o: int, e: bool) -> None:
        vb = self.objs[o].vm_bo_for(self.vm)
        if vb is not None:
            vb.evict(e)

    @rule()
    def prepare_and_validate(self) -> None:
        self.vm.prepare_objects()

        def cb(vb: VmBo) -> int:
            assert not vb.zombie and not vb.freed
            vb.evict(False)
            return 0

        assert self.vm.validate(cb) == 0

    @rule()
    def cleanup(self) -> None:
        zombies = self.expected_zombies[::-1]
        assert self.vm.bo_deferred_cleanup() == zombies
        assert all(vb.freed for vb in zombies)
        self.expected_zombies.clear()

    @invariant()
    def consistent(self) -> None:
        if not hasattr(self, "vm"):
            return
        self.vm.check_invariants()
        assert self.vm.bo_defer == self.expected_zombies
        for vb in self.vm.bo_defer:
            assert vb not in vb.obj.vm_bos and self.vm.refs.count(vb) == 1
            assert (vb in self.vm.extobj) <= self.vm.resv_protected

    def teardown(self) -> None:
        if not hasattr(self, "vm"):
            return
        for vb in self.held:
            vb.put()
        self.vm.close()
        # Zombies hold the VM: it is freed exactly when the deferred list is drained.
        assert self.vm.freed == (not self.expected_zombies)
        if not self.vm.freed:
            assert self.vm.bo_deferred_cleanup() == self.expected_zombies[::-1]
        assert self.vm.freed


TestDeferredMachine = DeferredMachine.TestCase


def test_vms_sharing_a_gem_must_agree_on_immediate_mode() -> None:
    plain = GpuVm(0, 1 << 20, name="plain")
    imm = GpuVm(0, 1 << 20, name="imm", flags=IMM)
    shared, other = external("shared"), external("other")
    plain.map(0, P, shared)
    with unchanged(plain, imm, shared), pytest.raises(ImmediateModeMismatch) as exc:
        imm.map(0, P, shared)
    assert exc.value.errno == 22
    with unchanged(plain, imm, shared), pytest.raises(ImmediateModeMismatch):
        imm.bo_obtain(shared)
    pre = imm.bo_create(shared)
    with unchanged(plain, imm, shared), pytest.raises(ImmediateModeMismatch):
        imm.bo_obtain_prealloc(pre)
    pre.put()
    # A multi-op bind whose second request would list the shared buffer changes nothing.
    reqs = [MapRequest(0, P, other, 0), MapRequest(4 * P, P, shared, 0)]
    with unchanged(plain, imm, shared, other), pytest.raises(ImmediateModeMismatch):
        imm.bind(reqs)
    imm.map(0, P, other)  # an object only IMMEDIATE_MODE VMs use is fine
    GpuVm(0, 1 << 20, name="imm2", flags=IMM).map(0, P, other)
