"""The core's checks check themselves: every ``raise`` of ``GpuVm.check_invariants``
(``gpuvm/core/vm_invariants.py``) and of :class:`RefCount` (``gpuvm/core/refs.py``) fires
on a state corrupted directly (not through the API), with its precise complaint.  One test
per ``raise``, named after it; a check that stopped detecting fails here."""

from __future__ import annotations

import attrs
import pytest

from gpuvm import OWNER, GemObject, GpuVm, GpuVmFlags, Va, VmBo
from gpuvm.core.errors import RefcountUnderflow, UseAfterFree
from gpuvm.core.refs import RefCount


@attrs.define
class Scene:
    vm: GpuVm  # with a kernel-reserved node
    vm2: GpuVm  # without one
    ext: GemObject
    priv: GemObject
    spare: GemObject  # a VmBo of it held by a caller, no VA
    va_ext: Va
    va_ext2: Va
    va_priv: Va
    vb_ext: VmBo  # evicted
    vb_priv: VmBo
    vb_spare: VmBo
    va2: Va


def scene(flags: int = 0) -> Scene:
    vm = GpuVm(0x1000, 0x10000, reserve_start=0x1000, reserve_range=0x100, name="vm", flags=flags)
    vm2 = GpuVm(0, 0x10000, name="vm2")
    ext = GemObject(0x1000, name="ext")
    priv = GemObject(0x1000, name="priv", resv=vm.resv)
    spare = GemObject(0x1000, name="spare")
    (va_ext,) = vm.map(0x2000, 0x100, ext, 0)
    (va_ext2,) = vm.map(0x2800, 0x100, ext, 0x200)
    (va_priv,) = vm.map(0x3000, 0x100, priv, 0)
    vb_ext, vb_priv = va_ext.vm_bo, va_priv.vm_bo
    assert vb_ext is not None and vb_priv is not None
    vb_ext.evict(True)
    vb_spare = vm.bo_obtain(spare)
    (va2,) = vm2.map(0x2000, 0x100, ext, 0)
    s = Scene(vm, vm2, ext, priv, spare, va_ext, va_ext2, va_priv, vb_ext, vb_priv, vb_spare, va2)
    vm.check_invariants()
    vm2.check_invariants()
    return s


def test_clean_scene_passes() -> None:
    s = scene()
    assert s.vb_ext in s.vm.evict and s.vb_ext in s.vm.extobj
    s.vm.check_invariants()


def test_freed_vm_is_not_checked() -> None:
    s = scene()
    s.vm.freed = True
    s.vm.reserve_range = 0  # would fail the first check
    s.vm.check_invariants()


# --- check_invariants: the tree ------------------------------------------------------------


def test_kernel_node_iff_reserve_range() -> None:
    s = scene()
    s.vm.reserve_range = 0
    with pytest.raises(AssertionError, match="kernel node present iff reserve_range != 0"):
        s.vm.check_invariants()


def test_va_in_tree_but_not_inserted() -> None:
    s = scene()
    s.va_ext.inserted = False
    with pytest.raises(AssertionError, match=r"in vm's tree but va.vm is"):
        s.vm.check_invariants()


def test_va_in_tree_of_another_vm() -> None:
    s = scene()
    s.va_ext.vm = s.vm2
    with pytest.raises(AssertionError, match=r"in vm's tree but va.vm is"):
        s.vm.check_invariants()


def test_stray_kernel_node() -> None:
    s = scene()
    s.va2.kernel_node = True
    with pytest.raises(AssertionError, match="stray kernel node"):
        s.vm2.check_invariants()


def test_va_not_a_valid_range() -> None:
    s = scene()
    s.vm.range = 0x1800  # the window now ends at 0x2800, inside va_ext2
    with pytest.raises(AssertionError, match=r"is not a valid range in vm"):
        s.vm.check_invariants()


def test_freed_va_still_in_tree() -> None:
    s = scene()
    s.va_priv.freed = True
    with pytest.raises(AssertionError, match=r"freed .* still in the tree"):
        s.vm.check_invariants()


def test_va_linked_to_freed_buffer() -> None:
    s = scene()
    s.priv.freed = True
    with pytest.raises(AssertionError, match="linked to a freed buffer"):
        s.vm.check_invariants()


# --- check_invariants: VmBos (_check_vm_bo) -----------------------------------------------


def test_vm_bo_freed_but_listed() -> None:
    s = scene()
    s.vb_spare.freed = True
    with pytest.raises(AssertionError, match="listed in vm but freed or foreign"):
        s.vm.check_invariants()


def test_vm_bo_foreign() -> None:
    s = scene()
    s.vm.vm_bos[s.va2.vm_bo] = None  # type: ignore[index]
    with pytest.raises(AssertionError, match="listed in vm but freed or foreign"):
        s.vm.check_invariants()


def test_vm_bo_holds_freed_buffer() -> None:
    s = scene()
    s.spare.freed = True
    with pytest.raises(AssertionError, match="holds a freed buffer"):
        s.vm.check_invariants()


def test_vm_bo_two_vm_references() -> None:
    s = scene()
    s.vm.refs.holders[s.vb_spare] += 1
    s.vm.refs.total += 1
    with pytest.raises(AssertionError, match="must hold exactly one GEM and one VM reference"):
        s.vm.check_invariants()


def test_vm_bo_no_gem_reference() -> None:
    s = scene()
    s.spare.refs.holders.pop(s.vb_spare)
    s.spare.refs.total -= 1
    with pytest.raises(AssertionError, match="must hold exactly one GEM and one VM reference"):
        s.vm.check_invariants()


def test_vm_bo_gem_list_membership() -> None:
    s = scene()
    s.vb_spare.listed = False
    with pytest.raises(AssertionError, match="GEM-list membership inconsistent"):
        s.vm.check_invariants()


def test_vm_bo_twice_on_gem_list() -> None:
    s = scene()
    s.spare.vm_bos.append(s.vb_spare)
    with pytest.raises(AssertionError, match="GEM-list membership inconsistent"):
        s.vm.check_invariants()


def test_zombie_vm_bo_listed() -> None:
    s = scene()
    s.vb_spare.zombie = True
    s.vm.bo_defer.append(s.vb_spare)
    with pytest.raises(AssertionError, match=r"zombie .* listed, counted or with VAs"):
        s.vm.check_invariants()


def test_two_listed_vm_bos_for_one_pair() -> None:
    s = scene()
    dup = s.vm.bo_create(s.spare)
    dup.listed = True
    s.spare.vm_bos.append(dup)
    with pytest.raises(AssertionError, match=r"more than one listed VmBo for \(vm, spare\)"):
        s.vm.check_invariants()


def test_vm_bo_refcount_inconsistent() -> None:
    s = scene()
    s.vb_spare.refs.total += 1
    with pytest.raises(AssertionError, match=r"refcount of VmBo\(vm, spare\): total 2 != 1"):
        s.vm.check_invariants()


def test_va_on_vm_bo_list_linked_elsewhere() -> None:
    s = scene()
    s.va_ext.vm_bo = None
    with pytest.raises(AssertionError, match=r"on VmBo\(vm, ext\)'s list but linked elsewhere"):
        s.vm.check_invariants()


def test_va_holds_two_refs_on_vm_bo() -> None:
    s = scene()
    s.vb_ext.refs.holders[s.va_ext] += 1
    s.vb_ext.refs.total += 1
    with pytest.raises(AssertionError, match=r"holds 2 refs on VmBo\(vm, ext\)"):
        s.vm.check_invariants()


def test_vm_bo_held_by_va_not_on_its_list() -> None:
    s = scene()
    stranger = Va(0x9000, 0x10, s.ext)
    s.vb_ext.refs.holders[stranger] = 1
    s.vb_ext.refs.total += 1
    with pytest.raises(AssertionError, match="held by VAs not on its list"):
        s.vm.check_invariants()


# --- check_invariants: extobj / evict / deferred lists, the VM's kref ----------------------


def test_dead_vm_bo_on_extobj_list() -> None:
    s = scene()
    s.vm.extobj[VmBo(s.vm, s.spare)] = None  # never in vm.vm_bos
    with pytest.raises(AssertionError, match=r"dead VmBo\(vm, spare\) on vm's extobj list"):
        s.vm.check_invariants()


def test_dead_vm_bo_on_evict_list() -> None:
    s = scene()
    s.vm.evict[VmBo(s.vm, s.spare)] = None
    with pytest.raises(AssertionError, match=r"dead VmBo\(vm, spare\) on vm's evict list"):
        s.vm.check_invariants()


def _zombie_on_extobj(s: Scene) -> VmBo:
    """Make ``vb_spare`` a zombie as a deferred put leaves it (unlisted, kref 0, on the
    deferred list) but still on the extobj list."""
    vb = s.vb_spare
    s.spare.vm_bos.remove(vb)
    vb.listed = False
    vb.refs.holders.clear()
    vb.refs.total = 0
    vb.zombie = True
    s.vm.bo_defer.append(vb)
    s.vm.extobj[vb] = None
    return vb


def test_zombie_left_on_extobj_list() -> None:
    s = scene()
    _zombie_on_extobj(s)
    with pytest.raises(AssertionError, match=r"zombie .* left on vm's extobj list"):
        s.vm.check_invariants()


def test_zombie_on_extobj_list_allowed_when_resv_protected() -> None:
    """A resv-protected VM cleans its lists under the resv lock: a zombie may stay on them
    until then (the check above is skipped, the rest still holds)."""
    s = scene(flags=GpuVmFlags.RESV_PROTECTED)
    _zombie_on_extobj(s)
    s.vm.check_invariants()


def test_deferred_list_not_the_zombies() -> None:
    s = scene()
    s.vm.bo_defer.append(s.vb_spare)  # not a zombie
    with pytest.raises(AssertionError, match=r"vm's deferred list .* != zombies"):
        s.vm.check_invariants()


def test_deferred_list_zombie_twice() -> None:
    s = scene()
    vb = _zombie_on_extobj(s)
    del s.vm.extobj[vb]
    s.vm.check_invariants()
    s.vm.bo_defer.append(vb)
    with pytest.raises(AssertionError, match=r"vm's deferred list .* != zombies"):
        s.vm.check_invariants()


def test_private_vm_bo_on_extobj_list() -> None:
    s = scene()
    s.vm.extobj[s.vb_priv] = None
    with pytest.raises(AssertionError, match=r"VM-private VmBo\(vm, priv\) on the extobj list"):
        s.vm.check_invariants()


def test_evict_list_not_the_evicted() -> None:
    s = scene()
    s.vb_ext.evicted = False
    with pytest.raises(AssertionError, match=r"evict list .* != evicted"):
        s.vm.check_invariants()


def test_evicted_vm_bo_missing_from_evict_list() -> None:
    s = scene()
    s.vb_priv.evicted = True
    with pytest.raises(AssertionError, match=r"evict list .* != evicted"):
        s.vm.check_invariants()


def test_vm_kref_not_owners_vas_vm_bos() -> None:
    s = scene()
    s.vm.refs.holders[Va(0x9000, 0x10)] = 1  # a VA holder not in the tree
    s.vm.refs.total += 1
    with pytest.raises(AssertionError, match=r"vm kref 8 != owners 1 \+ VAs 3 \+ VmBos 3"):
        s.vm.check_invariants()


def test_vm_refcount_inconsistent() -> None:
    s = scene()
    s.vm.refs.total += 1
    with pytest.raises(AssertionError, match=r"refcount of .*: total"):
        s.vm.check_invariants()


def test_va_holds_two_vm_refs() -> None:
    s = scene()
    s.vm.refs.holders[s.va_ext] += 1
    del s.vm.refs.holders[s.va_ext2]  # the total stays right
    with pytest.raises(AssertionError, match="holds 2 VM refs"):
        s.vm.check_invariants()


# --- RefCount ----------------------------------------------------------------------------


def test_refcount_get_on_released() -> None:
    r = RefCount("target")
    r.get(OWNER)
    assert r.put(OWNER)
    with pytest.raises(UseAfterFree, match="get on released 'target' by"):
        r.get(OWNER)
    assert r.total == 0 and r.holders == {}


def test_refcount_put_by_non_holder() -> None:
    r = RefCount("target")
    r.get(OWNER)
    with pytest.raises(RefcountUnderflow, match=r"put on 'target' by .*held by: owner"):
        r.put("stranger")
    assert r.total == 1 and r.holders == {OWNER: 1}


def test_refcount_check_negative_holder() -> None:
    r = RefCount("target")
    r.get(OWNER)
    r.get("x")
    r.holders["x"] = -1
    r.holders[OWNER] = 3  # the sum still equals the total
    with pytest.raises(AssertionError, match="refcount of 'target': total 2 != 2"):
        r.check()


def test_refcount_check_zero_holder() -> None:
    r = RefCount("target")
    r.get(OWNER)
    r.holders["x"] = 0
    with pytest.raises(AssertionError, match="refcount of 'target': total 1 != 1"):
        r.check()
