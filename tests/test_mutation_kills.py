"""Tests written against survivors of the sampled mutmut run (docs/reliability.md): each
pins a behaviour the rest of the suite left free (a message, a repr, a default, a list a
cleanup must leave), with the kernel function where there is one."""

from __future__ import annotations

import attrs
import pytest
from test_dmabuf_sharing import IGPU, shared, world

from gpuvm import GemObject, GpuVm, GpuVmFlags, Piece, RemapOp, UnmapOp, Va
from gpuvm.core.errors import InvalidValue, LockNotHeld
from gpuvm.core.events import Event, Warning
from gpuvm.core.gem import locked
from gpuvm.drm.caps import Unsat, amdgpu_dgpu, choose_backing, i915_igpu
from gpuvm.drm.device import Device, snapshot
from gpuvm.drm.placement import Domain, Place
from gpuvm.drm.policies import GpuvmEager

P = 0x1000


def test_remap_hole_starts_after_prev() -> None:
    """``drm_gpuva_op_remap_to_unmap_range``: the hole begins where ``prev`` ends."""
    obj = GemObject(4 * P, name="o")
    va = Va(0x10000, 3 * P, obj, 0)
    op = RemapOp(Piece(0x10000, P, obj, 0), Piece(0x12000, P, obj, 2 * P), UnmapOp(va))
    assert op.hole() == (0x11000, 0x12000)
    assert RemapOp(None, Piece(0x12000, P, obj, 2 * P), UnmapOp(va)).hole() == (0x10000, 0x12000)
    assert RemapOp(Piece(0x10000, P, obj, 0), None, UnmapOp(va)).hole() == (0x11000, 0x13000)


def test_va_repr_of_null_mapping() -> None:
    assert "null" in repr(Va(0x10000, P))
    assert "o@" in repr(Va(0x10000, P, GemObject(P, name="o"), 0))


def test_warning_event_carries_its_message() -> None:
    vm = GpuVm(0, 0x100000, name="vm")
    seen: list[Event] = []
    vm.bus.subscribe(seen.append, [Warning])
    va = vm.insert(0x1000, P)  # object-less
    vb = vm.bo_obtain(GemObject(P, name="o"))
    vm.link(va, vb)  # the kernel's silent no-op, a warning here
    assert [w.message for w in seen if isinstance(w, Warning)] == vm.warnings
    assert vm.warnings and "object-less" in vm.warnings[0]


def test_deferred_cleanup_takes_zombie_off_evict_list() -> None:
    """``drm_gpuvm_bo_deferred_cleanup`` under RESV_PROTECTED: the zombie stays on the evict
    list until the cleanup, which must take it off (``drm_gpuvm_bo_destroy`` lists)."""
    flags = GpuVmFlags.IMMEDIATE_MODE | GpuVmFlags.RESV_PROTECTED
    vm = GpuVm(0, 0x100000, name="vm", flags=flags)
    obj = GemObject(P, name="o", resv=vm.resv)  # VM-private: on the evict list directly
    vb = vm.bo_obtain(obj)
    vb.evict(True)
    assert vb in vm.evict
    vb.put_deferred()
    assert vb.zombie and vb in vm.evict  # protected: left for the cleanup
    vm.bo_deferred_cleanup()
    assert vb.freed and vm.evict == {} and vm.extobj == {}


def test_bo_unmap_ops_do_not_keep() -> None:
    vm = GpuVm(0, 0x100000, name="vm")
    obj = GemObject(2 * P, name="o")
    (va,) = vm.map(0x1000, P, obj, 0)
    vb = obj.vm_bo_for(vm)
    assert vb is not None
    assert vm.bo_unmap_ops(vb).ops == (UnmapOp(va, False),)


def test_find_prev_and_next() -> None:
    """``drm_gpuva_find_prev`` / ``_next`` on neighbours."""
    vm = GpuVm(0x1000, 0x100000, name="vm")
    obj = GemObject(4 * P, name="o")
    (a,) = vm.map(0x2000, P, obj, 0)
    (b,) = vm.map(0x3000, P, obj, P)
    assert vm.find_prev(0x3000) is a and vm.find_next(0x3000) is b
    assert vm.find_prev(0x2000) is a  # the quirk: nothing covers 0x1fff, the VA at 0x2000
    assert vm.find_prev(0x1000) is None and vm.find_next(0x4000) is None


def test_evict_lock_check_names_the_kernel_function() -> None:
    vm = GpuVm(0, 0x100000, name="vm", lock_checks=True)
    obj = GemObject(P, name="o")
    with locked(obj, vm.r_obj):
        vb = vm.bo_obtain(obj)
    with pytest.raises(LockNotHeld, match="drm_gpuvm_bo_evict on GEM o without"):
        vb.evict(True)


def test_choose_backing_unsat_reason() -> None:
    out = choose_backing([], [], size=P)
    assert isinstance(out, Unsat)
    assert out.reason == "no domain of the exporter's preference reaches every attachment"


def test_default_memory_of_a_device_without_vram() -> None:
    igpu = Device("nouveau", name="igpu", display=False, caps=i915_igpu("igpu"))
    dgpu = Device("nouveau", name="dgpu", display=False, caps=amdgpu_dgpu("dgpu"))
    assert igpu.mem is not None and dgpu.mem is not None
    assert igpu.mem.capacity[Domain.VRAM] == 0 and dgpu.mem.capacity[Domain.VRAM] > 0
    assert igpu.mem.bus is igpu.bus and dgpu.mem.bus is dgpu.bus


def test_snapshot_records_whether_a_vma_is_mapped() -> None:
    dev = Device("msm", "legacy_pre_6_17")
    f = dev.open()
    h = f.create_bo(P)
    f.get_iova(h)
    before = snapshot(dev)
    vma = f.vm.vma_of(f.bo(h))  # type: ignore[union-attr]
    assert vma is not None and not vma.mapped
    vma.mapped = True
    assert snapshot(dev) != before


def test_dmabuf_unmap_without_mapping_message() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    a = d.attach("igpu", IGPU)
    with pytest.raises(InvalidValue, match="which has no mapping"):
        d.unmap(a)


def test_can_access_optimal_through_system_memory() -> None:
    topo, mem, caps = world()
    d = shared(mem, caps, topo, allowed=(Domain.TT,))
    ans = d.can_access_optimal(attrs.evolve(IGPU, name="igpu"))
    assert (ans.ok, ans.path, ans.reason) == (True, "system", "DMA to system pages")


def test_job_and_backing_repr() -> None:
    dev = Device("msm", "legacy_pre_6_17")
    f = dev.open()
    h = f.create_bo(P)
    job = f.submit([h])
    assert repr(job) == f"Job{job.id}"
    dev.retire(job)
    assert repr(job) == f"Job{job.id} (retired)"
    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    assert "pinned" not in repr(d.backing)
    mem.pin(d.priv, [Place(Domain.VRAM)])
    assert repr(d.backing).endswith(", pinned x1)")


def test_vm_bind_non_op_message() -> None:
    from gpuvm.core.errors import ArgumentTypeError

    f = Device("msm", "gpuvm_vma_ref").open()
    f.set_param_vm_bind()
    with pytest.raises(ArgumentTypeError, match="not a VM_BIND op: 'x'"):
        f.vm_bind(["x"])  # type: ignore[list-item]


def test_submit_emits_its_ioctl_name() -> None:
    from gpuvm.core.events import Ioctl

    dev = Device("msm", "legacy_pre_6_17")
    f = dev.open()
    h = f.create_bo(P)
    names: list[str] = []
    dev.bus.subscribe(lambda e: names.append(e.name) if isinstance(e, Ioctl) else None, [Ioctl])
    f.submit([h])
    assert names == ["SUBMIT"]


def test_edge_kind_export() -> None:
    from gpuvm.observe.checker import edge_kind

    f = Device("msm", "gpuvm_vma_ref").open()
    h = f.create_bo(P)
    d = f.fds.get(f.prime_handle_to_fd(h))
    assert edge_kind(f.bo(h), d) == "export"


def test_checker_reports_every_freed_buffer_of_a_job() -> None:
    from gpuvm.observe.checker import LifetimeChecker

    dev = Device("msm", "legacy_pre_6_17")
    checker = LifetimeChecker(dev)
    f = dev.open()
    a, b = f.create_bo(P, name="a"), f.create_bo(P, name="b")
    f.submit([a, b])
    f.bo(a).freed = True
    f.bo(b).freed = True
    msgs = [v.message for v in checker.check() if "in-flight" in v.message]
    assert any("uses freed GEM a" in m for m in msgs) and any("uses freed GEM b" in m for m in msgs)


def test_checker_names_the_freed_buffer_of_a_legacy_vma() -> None:
    from gpuvm.observe.checker import LifetimeChecker

    dev = Device("msm", "legacy_pre_6_17")
    checker = LifetimeChecker(dev)
    f = dev.open()
    h = f.create_bo(P, name="gone")
    f.get_iova(h)
    f.bo(h).freed = True
    assert any(
        "of freed GEM gone (freed) in" in v.message and v.message.startswith("VMA(")
        for v in checker.check()
    ), checker.violations


def test_trace_empty_id_names_its_line() -> None:
    import json

    from test_trace import _lines

    from gpuvm.observe.trace import TraceError, replay

    lines = _lines()
    rec = json.loads(lines[4])
    rec["id"] = ""
    lines[4] = json.dumps(rec)
    with pytest.raises(TraceError) as info:
        replay("\n".join(lines))
    assert info.value.line == 5 and "id must be a non-empty string" in info.value.reason


# --- survivors of the second pass (docs/reliability.md, "Mutation score") -----------------


def test_check_int_names_a_small_lower_bound() -> None:
    """A bound below 10 is written in decimal, a larger one in hex."""
    from gpuvm.core.args import check_int
    from gpuvm.core.errors import InvalidArgument

    with pytest.raises(InvalidArgument) as info:
        check_int("planes", -1, 0, 10)
    assert str(info.value) == "EINVAL: planes=-1 is outside [0, 0xa]"
    with pytest.raises(InvalidArgument) as info:
        check_int("n", 11, 1, 9)
    assert str(info.value) == "EINVAL: n=11 is outside [1, 9]"


def test_check_sequence_names_the_wrong_type() -> None:
    from gpuvm.core.args import check_sequence
    from gpuvm.core.errors import ArgumentTypeError

    with pytest.raises(ArgumentTypeError) as info:
        check_sequence("handles", 5)
    assert str(info.value) == "EINVAL: handles must be a list or tuple, got int 5"


def test_get_of_a_freed_gem_names_the_call() -> None:
    """``drm_gem_object_get`` on a freed object: the complaint names ``get``."""
    from gpuvm.core.errors import UseAfterFree

    obj = GemObject(P, name="o")
    obj.freed = True
    with pytest.raises(UseAfterFree) as info:
        obj.get()
    assert str(info.value) == "EFAULT: get on freed GEM o (freed)"


def test_ref_got_event_names_its_target() -> None:
    from gpuvm.core.events import EventBus, RefGot
    from gpuvm.core.refs import Holder

    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(seen.append, [RefGot])
    obj = GemObject(P, name="o", bus=bus)
    who = Holder("test")
    obj.get(who)
    assert seen == [RefGot(obj, who)]
    assert isinstance(seen[0], RefGot) and seen[0].target is obj


def test_va_repr_exact() -> None:
    assert repr(Va(0x10000, P)) == "Va[0x10000+0x1000 null@0x0]"
    assert repr(Va(0x10000, P, GemObject(P, name="o"), 0)) == "Va[0x10000+0x1000 o@0x0]"


@attrs.define(eq=False)
class _Node:
    addr: int
    range: int


def test_starting_in_walks_across_sublists() -> None:
    """The direct walk continues at the first key of each following sublist."""
    from gpuvm.core.vatree import RefDirection, VaIndex

    idx: VaIndex[_Node] = VaIndex(RefDirection.VM_BO_HOLDS_GEM)
    idx._keys._reset(4)  # tiny sublists: the walk crosses several boundaries
    nodes = [_Node(i * 0x10, 8) for i in range(20)]
    for n in nodes:
        idx.add(n)
    assert len(idx._keys._lists) > 2
    assert list(idx.starting_in(0, 0x1000)) == nodes
    assert list(idx.starting_in(0x35, 0x95)) == nodes[4:10]


@pytest.mark.parametrize("portable", [False, True])
def test_range_walk_starts_at_the_node_covering_start(portable: bool) -> None:
    from gpuvm.core.vatree import RefDirection, VaIndex

    idx: VaIndex[_Node] = VaIndex(RefDirection.VM_BO_HOLDS_GEM, portable=portable)
    a, b = _Node(0x1000, 0x1000), _Node(0x3000, 0x1000)
    idx.add(a)
    idx.add(b)
    assert idx.range_walk(0x3000, 0x4000) == [b]
    assert idx.range_walk(0x3800, 0x3900) == [b]
    assert idx.range_walk(0x1800, 0x3001) == [a, b]


@pytest.mark.parametrize("portable", [False, True])
def test_range_walk_of_an_empty_range_at_the_top(portable: bool) -> None:
    """``drm_gpuvm_for_each_va_range(va, vm, U64_MAX, U64_MAX)``: the kernel looks up
    ``[U64_MAX, U64_MAX - 1]`` and finds the VA that ends at the top of the space."""
    from gpuvm.core.vatree import RefDirection, VaIndex

    top = (1 << 64) - 1
    idx: VaIndex[_Node] = VaIndex(RefDirection.VM_BO_HOLDS_GEM, portable=portable)
    n = _Node(top - 0xF, 0x10)
    idx.add(n)
    assert idx.range_walk(top, top) == [n]


def test_kernel_node_sits_at_the_reserved_range() -> None:
    """``drm_gpuvm_init``'s kernel-reserved node covers ``[reserve_offset, +reserve_range)``."""
    vm = GpuVm(0, 0x100000, 0x4000, 0x2000, name="vm")
    node = vm.kernel_node
    assert node is not None and (node.addr, node.range) == (0x4000, 0x2000)
    assert repr(node) == "Va[kernel 0x4000+0x2000]"


def test_apply_of_issued_ops_names_map_on_a_freed_object() -> None:
    """An op list built here, whose object was freed since: the re-check names MAP."""
    from gpuvm import MapRequest
    from gpuvm.core.errors import UseAfterFree

    vm = GpuVm(0, 0x100000, name="vm")
    obj = GemObject(4 * P, name="o")
    ops = vm.sm_map_ops(MapRequest(0x1000, P, obj, 0))
    obj.freed = True
    with pytest.raises(UseAfterFree) as info:
        vm.apply(ops)
    assert str(info.value) == "EFAULT: map on freed GEM o (freed)"
    assert list(vm) == []


def test_remap_piece_of_another_object_message() -> None:
    from gpuvm.core.errors import InvalidRange

    vm = GpuVm(0, 0x100000, name="vm")
    obj, other = GemObject(4 * P, name="o"), GemObject(4 * P, name="x")
    (va,) = vm.map(0x10000, 2 * P, obj, 0)
    with pytest.raises(InvalidRange) as info:
        vm.apply([RemapOp(Piece(0x10000, P, other, 0), None, UnmapOp(va))])
    assert str(info.value) == (
        "EINVAL: REMAP prev piece Piece(addr=65536, range=4096, obj=GEM x, offset=0) "
        "does not fit Va[0x10000+0x2000 o@0x0]"
    )
    assert list(vm) == [va]


def test_fence_section_messages_name_the_call() -> None:
    """``apply`` and ``drm_gpuvm_sm_map_ops_create`` refused in a fence-signalling
    section, each naming itself."""
    from gpuvm import MapRequest
    from gpuvm.core.errors import FenceSignallingViolation

    vm = GpuVm(0, 0x100000, name="vm")
    obj = GemObject(4 * P, name="o")
    (va,) = vm.map(0x10000, P, obj, 0)
    tail = " in a fence-signalling section of vm (it may allocate, sleep or take reservation locks)"
    with vm.fence_signalling():
        with pytest.raises(FenceSignallingViolation) as info:
            vm.apply([UnmapOp(va)])
        assert str(info.value) == "EDEADLK: apply (bo_obtain and VmBo puts)" + tail
        with pytest.raises(FenceSignallingViolation) as info:
            vm.sm_map_ops(MapRequest(0x20000, P, obj, 0))
        assert str(info.value) == "EDEADLK: drm_gpuvm_sm_map_ops_create" + tail
    assert list(vm) == [va]


def test_unlink_defer_without_immediate_mode_names_the_call() -> None:
    from gpuvm.core.errors import NotImmediateMode

    vm = GpuVm(0, 0x100000, name="vm")
    (va,) = vm.map(0x10000, P, GemObject(P, name="o"), 0)
    with pytest.raises(NotImmediateMode) as info:
        vm.unlink_defer(va)
    assert str(info.value) == "EINVAL: drm_gpuva_unlink_defer on vm, which is not in IMMEDIATE_MODE"
    assert va.vm_bo is not None


def test_unlink_of_a_va_that_holds_no_reference_is_refused_unchanged() -> None:
    """A corrupted link (the VA on its VmBo but holding no reference): the unlink's put
    is validated first and refused with the underflow, nothing unlinked."""
    from gpuvm.core.errors import RefcountUnderflow

    vm = GpuVm(0, 0x100000, name="vm")
    (va,) = vm.map(0x10000, P, GemObject(P, name="o"), 0)
    vb = va.vm_bo
    assert vb is not None
    del vb.refs.holders[va]  # the corruption: the link without its reference
    with pytest.raises(RefcountUnderflow, match="which holds no reference"):
        vm.unlink(va)
    assert va.vm_bo is vb and va in vb.vas


def test_zombie_vm_bo_refuses_bo_unmap_ops() -> None:
    from gpuvm.core.errors import UseAfterFree

    vm = GpuVm(0, 0x100000, name="vm", flags=GpuVmFlags.IMMEDIATE_MODE)
    vb = vm.bo_obtain(GemObject(P, name="o"))
    vb.put_deferred()
    assert vb.zombie and not vb.freed
    with pytest.raises(UseAfterFree) as info:
        vm.bo_unmap_ops(vb)
    assert str(info.value) == f"EFAULT: bo_unmap_ops on zombie {vb!r}"


def test_vm_bo_put_in_a_fence_section() -> None:
    """``drm_gpuvm_bo_put`` may sleep: refused in a fence-signalling section, unless the
    put itself is an underflow (validated first)."""
    from gpuvm.core.errors import FenceSignallingViolation, RefcountUnderflow
    from gpuvm.core.refs import Holder

    vm = GpuVm(0, 0x100000, name="vm")
    vb = vm.bo_obtain(GemObject(P, name="o"))
    with vm.fence_signalling():
        with pytest.raises(FenceSignallingViolation, match="drm_gpuvm_bo_put of"):
            vb.put()
        with pytest.raises(RefcountUnderflow):
            vb.put(Holder("stranger"))
    assert vb.refs.total == 1 and not vb.freed
    vb.put()
    assert vb.freed


def test_device_name_type_message() -> None:
    from gpuvm.core.errors import ArgumentTypeError

    with pytest.raises(ArgumentTypeError) as info:
        Device("msm", name=5)  # type: ignore[arg-type]
    assert str(info.value) == "EINVAL: name must be a str, got int 5"


def test_no_move_refusal_names_the_buffer_move() -> None:
    """The NO_MOVE refusal says what would move: ``it`` for the exported buffer itself."""
    from gpuvm.core.errors import WouldMigrate

    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    with pytest.raises(WouldMigrate) as info:
        d.attach("igpu", IGPU, no_move=True)
    assert str(info.value) == (
        "EINVAL: NO_MOVE import of DmaBuf buf on igpu would migrate: it VRAM->TT"
    )


def test_weak_ref_report_lists_every_holder() -> None:
    """The weak-ref quirk's use-after-free report names every job still holding the VmBo."""
    dev = Device("msm", "weak_ref_quirk")
    f = dev.open(name="app")
    h = f.create_bo(1 << 20, name="tex")
    j1, j2 = f.submit([h]), f.submit([h])
    f.gem_close(h)
    assert dev.reports == [
        f"use-after-free: GEM tex (freed) freed while VmBo(app.ctx, tex) (held by {j1}, {j2}) "
        "is still on app.ctx's extobj list"
    ]


@pytest.mark.parametrize("ref", ["gpuvm.drm.policies:", ":GpuvmEager"])
def test_policy_reference_without_module_or_class(ref: str) -> None:
    from gpuvm.drm.policies import UnknownPolicy, resolve_policy

    with pytest.raises(UnknownPolicy) as info:
        resolve_policy(ref)
    assert str(info.value) == f"EINVAL: policy {ref!r}: expected module:Class"


def test_known_policies_appends_only_new_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry point named like a built-in is not listed twice; a new name is listed
    after the built-ins."""
    from gpuvm.drm import policies

    fake = {"zz_mine": object(), "gpuvm_eager": object()}
    monkeypatch.setattr(policies, "_entry_points", lambda: fake)
    assert policies.known_policies() == [*policies.POLICIES, "zz_mine"]


class _MyPolicy(GpuvmEager):
    name = "my_policy"


def test_policy_ref_of_classes_and_instances() -> None:
    """Built-ins by name, others as ``module:Class`` (what a trace or study row records)."""
    from gpuvm.drm.policies import UnknownPolicy, policy_ref, resolve_policy

    assert policy_ref(GpuvmEager) == "gpuvm_eager"
    assert policy_ref(GpuvmEager()) == "gpuvm_eager"
    ref = policy_ref(_MyPolicy)
    assert ref == f"{__name__}:_MyPolicy" and policy_ref(_MyPolicy()) == ref
    assert resolve_policy(ref) is _MyPolicy
    with pytest.raises(UnknownPolicy) as info:
        policy_ref(int)  # type: ignore[arg-type]
    assert str(info.value) == (
        "EINVAL: policy \"<class 'int'>\" is <class 'int'>, not a TeardownPolicy subclass"
    )


# --- survivors of the fresh run on the current code (docs/reliability.md) ---------------


def test_iter_counted_yields_the_reference_counts() -> None:
    from gpuvm.core.refs import iter_counted

    a, b = GemObject(P, name="a"), GemObject(P, name="b")
    assert list(iter_counted([a, 5, b, None])) == [a.refs, b.refs]


def test_unmap_of_a_tail_keeps_the_vm_bo_without_the_vm_resv() -> None:
    """RESV_PROTECTED with lock checks: a REMAP keeps a piece linked to the VmBo, so the
    apply destroys no VmBo and needs only the object's gpuva lock, not the VM's resv."""
    from gpuvm.core.errors import LockNotHeld

    vm = GpuVm(0, 0x100000, name="vm", flags=GpuVmFlags.RESV_PROTECTED, lock_checks=True)
    obj = GemObject(4 * P, name="o")
    with locked(obj, vm.r_obj):
        vm.map(0x10000, 2 * P, obj, 0)
    with locked(obj):
        vm.unmap(0x11000, P)  # REMAP with prev only
        vm.unmap(0x20000, P)  # nothing there
    (piece,) = list(vm)
    assert (piece.addr, piece.range) == (0x10000, P)
    with locked(obj), pytest.raises(LockNotHeld):
        vm.unmap(0x10000, P)  # the last VA: the VmBo goes, the VM's resv is needed
    assert list(vm) == [piece]


def test_obtain_prealloc_with_the_locking_variant() -> None:
    """The newest ``drm_gpuvm_bo_obtain_prealloc`` (it takes the gpuva lock itself): a
    miss lists the preallocated VmBo with the caller's reference."""
    from gpuvm.core.refs import CALLER

    vm = GpuVm(0, 0x100000, name="vm", flags=GpuVmFlags.IMMEDIATE_MODE, obtain_locked=True)
    obj = GemObject(P, name="o")
    pre = vm.bo_create(obj)
    vb = vm.bo_obtain_prealloc(pre)
    assert vb is pre and pre.listed and obj.vm_bo_for(vm) is pre
    assert pre.refs.holders == {CALLER: 1}


def test_bo_unmap_ops_in_a_fence_section_names_the_call() -> None:
    from gpuvm.core.errors import FenceSignallingViolation

    vm = GpuVm(0, 0x100000, name="vm")
    obj = GemObject(P, name="o")
    vm.map(0x10000, P, obj, 0)
    vb = obj.vm_bo_for(vm)
    assert vb is not None
    with vm.fence_signalling(), pytest.raises(FenceSignallingViolation) as info:
        vm.bo_unmap_ops(vb)
    assert str(info.value).startswith(
        "EDEADLK: drm_gpuvm_bo_unmap_ops_create in a fence-signalling section of vm"
    )


def test_atomic_commit_errno_out_of_range_names_it() -> None:
    from gpuvm import atomic_commit
    from gpuvm.core.errors import InvalidArgument

    dev = Device("msm", "gpuvm_vma_ref")
    f = dev.open()
    fb = f.add_fb(f.create_bo(1 << 20))
    with pytest.raises(InvalidArgument) as info:
        atomic_commit(dev, [(dev.plane(0), fb)], errno=0)
    assert str(info.value) == "EINVAL: errno=0 is outside [1, 0xfff]"


def test_amdgpu_dma_mask_is_44_bits() -> None:
    """amdgpu sets a 44-bit DMA mask (``DMA_BIT_MASK(44)``, ``amdgpu_gmc`` dma_bits)."""
    assert amdgpu_dgpu("d").dma_mask == (1 << 44) - 1


def test_choose_backing_dma_mask_holds_exactly_mask_plus_one_bytes() -> None:
    """A non-IOMMU attacher with a 32-bit mask reaches 4 GiB of system memory: a buffer
    of exactly that size fits, one byte more does not."""
    from gpuvm.drm.caps import bochs

    @attrs.frozen
    class View:
        caps: object
        peer2peer: bool = False

    caps = bochs("b")
    assert not caps.has_iommu and caps.dma_mask == (1 << 32) - 1
    ok = choose_backing([View(caps)], [Domain.SYSTEM], size=1 << 32, ram_top=1 << 40)
    assert not isinstance(ok, Unsat) and ok.max_phys == (1 << 32) - 1
    bad = choose_backing([View(caps)], [Domain.SYSTEM], size=(1 << 32) + 1, ram_top=1 << 40)
    assert isinstance(bad, Unsat)
    assert bad.tried == ("SYSTEM: dma_mask 0xffffffff cannot hold 4294967297 B",)


def test_default_places_follow_the_device_domains() -> None:
    igpu = Device("nouveau", name="igpu", display=False, caps=i915_igpu("igpu"))
    plain = Device("nouveau", name="plain", display=False)
    assert [p.domain for p in igpu.default_places()[0]] == [Domain.TT]
    assert [p.domain for p in igpu.default_places()[1]] == [Domain.TT, Domain.SYSTEM]
    assert [p.domain for p in plain.default_places()[0]] == [Domain.VRAM]


def test_dmabuf_map_counts_and_reports_its_domain() -> None:
    """``dma_buf_map_attachment``: one map counted, and the event names the domain the
    mapping points at (a plain dma-buf, with no placement, counts its map too)."""
    from gpuvm.drm.dmabuf import DmaBuf
    from gpuvm.drm.dmabuf.attachment import AttachmentMapped

    topo, mem, caps = world()
    d = shared(mem, caps, topo)
    seen: list[Event] = []
    d.bus.subscribe(seen.append, [AttachmentMapped])
    a = d.attach("igpu", IGPU)
    d.map(a)
    assert seen == [AttachmentMapped(a, "TT", d.size, False)] and a.maps == 1
    obj = GemObject(P, name="plain")
    plain = DmaBuf(obj, "x", P, obj.resv, name="plain")
    b = plain.attach("imp", IGPU)
    plain.map(b)
    assert (b.maps, b.mappings) == (1, 1)


def test_freeing_a_pinned_buffer_drops_its_pins() -> None:
    from gpuvm.drm.placement import MemoryManager, amdgpu_domains

    mem = MemoryManager(name="m")
    obj = GemObject(P, name="g")
    mem.add(obj, *amdgpu_domains([Domain.VRAM]))
    mem.validate(obj)
    mem.pin(obj, [Place(Domain.VRAM)])
    b = mem.backing(obj)
    obj.put()
    assert obj.freed and b.pin_count == 0 and not b.pinned and b.resource is None


def test_mode_rule_keeps_its_reason() -> None:
    from gpuvm.drm.modes import Rule, no

    assert no(22, "why") == Rule(22, None, "why")


def test_unlink_defer_with_the_gpuva_lock_held_names_the_call() -> None:
    """``drm_gpuva_unlink_defer`` takes the GEM's gpuva lock itself: held already is a
    self-deadlock, named after the call."""
    from gpuvm.core.errors import LockMisuse

    vm = GpuVm(0, 0x100000, name="vm", flags=GpuVmFlags.IMMEDIATE_MODE, lock_checks=True)
    obj = GemObject(4 * P, name="o")
    with locked(obj.gpuva_lock, obj, vm.r_obj):
        (va,) = vm.map(0x10000, P, obj, 0)
    with locked(obj.gpuva_lock), pytest.raises(LockMisuse) as info:
        vm.unlink_defer(va)
    assert str(info.value) == (
        "EDEADLK: drm_gpuva_unlink_defer takes Lock(o.gpuva), which is already held"
    )
    assert va.vm_bo is not None


def test_prefetch_and_unmap_op_lists() -> None:
    from gpuvm.core.errors import ZeroRange

    vm = GpuVm(0, 0x100000, name="vm")
    assert vm.prefetch_ops(0, P).vm is vm
    with pytest.raises(ZeroRange) as info:
        vm.sm_unmap_ops(0x10000, 0)
    assert str(info.value) == "EINVAL: sm_unmap with range 0 at 0x10000 (the kernel mishandles it)"


def test_device_window_type_message() -> None:
    from gpuvm.core.errors import ArgumentTypeError

    with pytest.raises(ArgumentTypeError) as info:
        Device("msm", context_window=5)  # type: ignore[arg-type]
    assert str(info.value) == "EINVAL: context_window must be a tuple, got int 5"


def test_edge_kind_of_a_legacy_vma() -> None:
    from gpuvm.observe.checker import edge_kind

    dev = Device("msm", "legacy_pre_6_17")
    f = dev.open()
    h = f.create_bo(P)
    f.get_iova(h)
    vma = f.vm.vma_of(f.bo(h))  # type: ignore[union-attr]
    assert edge_kind(f.bo(h), vma) == "vma"


def test_map_with_a_range_outside_u64_names_the_range() -> None:
    from gpuvm.core.errors import InvalidArgument

    vm = GpuVm(0, 0x100000, name="vm")
    with pytest.raises(InvalidArgument) as info:
        vm.map(0x1000, -1)
    assert str(info.value) == "EINVAL: range=-1 is not a u64"


def test_vm_init_and_map_u64_messages_name_the_field() -> None:
    from gpuvm.core.errors import InvalidArgument

    with pytest.raises(InvalidArgument) as info:
        GpuVm(0, 0x100000, 0, -1, name="vm")
    assert str(info.value) == "EINVAL: reserve_range=-1 is not a u64"
    vm = GpuVm(0, 0x100000, name="vm")
    with pytest.raises(InvalidArgument) as info:
        vm.map(0x1000, P, GemObject(P, name="o"), -1)
    assert str(info.value) == "EINVAL: offset=-1 is not a u64"
    assert list(vm) == []


def test_managed_vm_defaults_and_obtain_variant_of_the_kernel() -> None:
    """A kernel-managed VM flushes as a context by default; it follows its kernel's
    ``drm_gpuvm_bo_obtain`` variant (the locking one only on mainline)."""
    from gpuvm.core.events import EventBus
    from gpuvm.drm.driver import ManagedVm

    vm = ManagedVm(0, 1 << 20, name="m", bus=EventBus())
    assert vm.tlb_kind == "context_flush" and vm.obtain_locked
    for kernel, want in (("6.17", False), ("mainline", True)):
        f = Device("msm", "gpuvm_vma_ref", kernel=kernel).open()
        f.get_iova(f.create_bo(P))
        assert isinstance(f.vm, ManagedVm) and f.vm.obtain_locked is want


def test_xe_vm_bos_reads_a_vms_buffers() -> None:
    from gpuvm.drm import xe
    from gpuvm.drm.file import BindMap

    dev = Device("xe", planes=0)
    f = dev.open()
    a = xe.vm_create(f)
    h = xe.gem_create(f, 1 << 20)
    assert xe.vm_bos(f, a) == []
    xe.vm_bind(f, a, [BindMap(0x100000, 1 << 20, h)])
    assert [vb.obj for vb in xe.vm_bos(f, a)] == [f.bo(h)]


def test_vm_bind_map_at_an_aligned_offset() -> None:
    """VM_BIND (msm and nouveau): a MAP from a page-aligned offset inside the buffer is
    accepted."""
    from gpuvm.drm.file import BindMap

    for flavour in ("msm", "nouveau"):
        dev = Device(flavour, "gpuvm_vma_ref", display=False)
        f = dev.open()
        if flavour == "msm":
            f.set_param_vm_bind()
        else:
            f.vm_init()
        h = f.create_bo(4 * P)
        base = dev.context_window[0]
        f.vm_bind([BindMap(base, 2 * P, h, 2 * P)])
        assert f.vm is not None
        assert f.vm.layout() == [(base, 2 * P, f.bo(h), 2 * P)]  # type: ignore[attr-defined]
