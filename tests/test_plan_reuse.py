"""``legacy.path.plan_iovas`` answers a repeated question from its last plan only while the
VM's layout is unchanged: every VMA created, closed, linked or unlinked in between makes
it plan again."""

from __future__ import annotations

import pytest

from gpuvm import EventBus, GemObject
from gpuvm.core.errors import UseAfterFree
from gpuvm.drm.driver import ManagedVm
from legacy import AddressSpace, path
from legacy.vma import KernelVm

P = 4096


def vms() -> list[KernelVm]:
    return [
        AddressSpace(P, 64 * P, name="as", bus=EventBus()),
        ManagedVm(P, 64 * P, name="managed", bus=EventBus()),
    ]


@pytest.mark.parametrize("vm", vms(), ids=lambda v: v.name)
def test_a_new_vma_in_between_moves_the_plan(vm: KernelVm) -> None:
    a = GemObject(2 * P, name="a")
    b = GemObject(2 * P, name="b")
    first = path.plan_iovas(vm, [a])
    assert path.plan_iovas(vm, [a]) == first  # nothing changed: same answer
    vm.new_vma(b, first[a], 2 * P)  # b takes the hole a was planned into
    again = path.plan_iovas(vm, [a])
    assert again[a] != first[a]
    assert again[a] == first[a] + 2 * P


@pytest.mark.parametrize("vm", vms(), ids=lambda v: v.name)
def test_a_closed_vma_in_between_frees_its_hole(vm: KernelVm) -> None:
    a = GemObject(P, name="a")
    b = GemObject(P, name="b")
    vb = path.get_iova(vm, b)
    assert path.plan_iovas(vm, [a])[a] == vb.addr + P
    vm.close_vma(vb)
    assert path.plan_iovas(vm, [a])[a] == vb.addr


def test_an_unlink_in_between_is_seen_by_a_managed_vm() -> None:
    vm = ManagedVm(P, 64 * P, name="managed", bus=EventBus())
    a = GemObject(P, name="a")
    va = path.get_iova(vm, a)
    assert path.plan_iovas(vm, [a]) == {}  # a has its VMA
    vm.unlink(va)  # a direct unlink: vma_of(a) is gone though the VA stays in the tree
    assert vm.vma_of(a) is None
    assert path.plan_iovas(vm, [a]) == {a: va.addr + P}


@pytest.mark.parametrize("vm", vms(), ids=lambda v: v.name)
def test_other_objects_or_a_freed_one_are_not_served_from_the_last_plan(vm: KernelVm) -> None:
    a = GemObject(P, name="a")
    b = GemObject(3 * P, name="b")
    assert path.plan_iovas(vm, [a, b]) == {a: P, b: 2 * P}
    assert path.plan_iovas(vm, [b, a]) == {b: P, a: 4 * P}
    assert path.plan_iovas(vm, [b, a], align=4 * P) == {b: 4 * P, a: 8 * P}
    a.put()  # the creator's reference: a is freed
    with pytest.raises(UseAfterFree):
        path.plan_iovas(vm, [b, a], align=4 * P)
