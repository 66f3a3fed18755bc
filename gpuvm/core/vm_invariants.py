"""The consistency checks of one :class:`GpuVm`, VA tree, VmBos and reference counts.

What ``drivers/gpu/drm/drm_gpuvm.c`` relies on without checking (its lists and krefs agree
with each other; ``drm_gpuvm_bo_is_zombie`` VmBos only where a deferred put leaves them),
checked in O(n) by the test suite and the state machines after every step.  These are the
bodies of the ``GpuVm`` methods of the same names (see :mod:`gpuvm.core.vm`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuvm.core.va import Va
from gpuvm.core.vmbo import VmBo

if TYPE_CHECKING:
    from gpuvm.core.vm import GpuVm


def check_invariants(vm: GpuVm) -> None:
    """Every invariant that can be checked from this VM (tree, lists, VmBos, krefs),
    O(n); raises :class:`AssertionError` naming the first broken one."""
    if vm.freed:
        return
    vm.index.check()
    kn = vm.kernel_node
    if (kn is not None) != bool(vm.reserve_range):
        raise AssertionError("kernel node present iff reserve_range != 0")
    n_vas = 0
    for va in vm.index:
        if va.vm is not vm or not va.inserted:
            raise AssertionError(f"{va!r} in {vm.name}'s tree but va.vm is {va.vm!r}")
        if va.kernel_node:
            if va is not kn:
                raise AssertionError(f"stray kernel node {va!r}")
            continue
        n_vas += 1
        if not vm.range_valid(va.addr, va.range) or va.range <= 0:
            raise AssertionError(f"{va!r} is not a valid range in {vm.name}")
        if va.freed:
            raise AssertionError(f"freed {va!r} still in the tree")
        if va.obj is not None and va.obj.freed and va.vm_bo is not None:
            raise AssertionError(f"{va!r} linked to a freed buffer")
    for vm_bo in vm.vm_bos:
        vm._check_vm_bo(vm_bo)
    for lst, name in ((vm.extobj, "extobj"), (vm.evict, "evict")):
        for vm_bo in lst:
            if vm_bo.freed or vm_bo not in vm.vm_bos:
                raise AssertionError(f"dead {vm_bo!r} on {vm.name}'s {name} list")
            if vm_bo.zombie and not vm._protected:
                raise AssertionError(f"zombie {vm_bo!r} left on {vm.name}'s {name} list")
    zombies = {vb for vb in vm.vm_bos if vb.zombie}
    if set(vm.bo_defer) != zombies or len(vm.bo_defer) != len(zombies):
        raise AssertionError(f"{vm.name}'s deferred list {vm.bo_defer} != zombies")
    for vm_bo in vm.extobj:
        if not vm_bo.is_extobj:
            raise AssertionError(f"VM-private {vm_bo!r} on the extobj list")
    if not vm._protected:
        evicted = {vb for vb in vm.vm_bos if vb.evicted and not vb.zombie}
        if evicted != set(vm.evict):
            raise AssertionError(f"evict list {list(vm.evict)} != evicted {evicted}")
    owners = sum(n for h, n in vm.refs.holders.items() if not isinstance(h, Va | VmBo))
    expected = owners + n_vas + len(vm.vm_bos)
    vm.refs.check()
    if vm.refs.total != expected:
        raise AssertionError(
            f"{vm.name} kref {vm.refs.total} != owners {owners} + VAs {n_vas} + "
            f"VmBos {len(vm.vm_bos)}"
        )
    for va in vm.index:
        if not va.kernel_node and vm.refs.count(va) != 1:
            raise AssertionError(f"{va!r} holds {vm.refs.count(va)} VM refs")


def _check_vm_bo(vm: GpuVm, vm_bo: VmBo) -> None:
    if vm_bo.freed or vm_bo.vm is not vm:
        raise AssertionError(f"{vm_bo!r} listed in {vm.name} but freed or foreign")
    obj = vm_bo.obj
    if obj.freed:
        raise AssertionError(f"{vm_bo!r} holds a freed buffer")
    if obj.refs.count(vm_bo) != int(vm_bo.holds_obj) or vm.refs.count(vm_bo) != 1:
        raise AssertionError(f"{vm_bo!r} must hold exactly one GEM and one VM reference")
    if vm_bo.listed != (vm_bo in obj.vm_bos) or obj.vm_bos.count(vm_bo) > 1:
        raise AssertionError(f"{vm_bo!r} GEM-list membership inconsistent")
    if vm_bo.zombie and (vm_bo.listed or vm_bo.refs.total or vm_bo.vas):
        raise AssertionError(f"zombie {vm_bo!r} listed, counted or with VAs")
    if vm_bo.listed and sum(1 for v in obj.vm_bos if v.vm is vm) != 1:
        raise AssertionError(f"more than one listed VmBo for ({vm.name}, {obj.name})")
    vm_bo.refs.check()
    for va in vm_bo.vas:
        if va.vm_bo is not vm_bo or va.obj is not obj or va.vm is not vm:
            raise AssertionError(f"{va!r} on {vm_bo!r}'s list but linked elsewhere")
        if vm_bo.refs.count(va) != 1:
            raise AssertionError(f"{va!r} holds {vm_bo.refs.count(va)} refs on {vm_bo!r}")
    linked_holders = sum(1 for h in vm_bo.refs.holders if isinstance(h, Va))
    if linked_holders != len(vm_bo.vas):
        raise AssertionError(f"{vm_bo!r} held by VAs not on its list")
