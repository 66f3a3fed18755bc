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
