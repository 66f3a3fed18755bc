"""Fault injection in a VM_BIND array: op ``k`` fails after ops ``0..k-1`` ran, so the
driver's own failure path is modelled and can be checked.

* msm (``drivers/gpu/drm/msm/msm_gem_vma.c``, ``vm_bind_job_prepare``): the ops are applied
  to the GPUVM tree one by one while the job is prepared; when op ``i`` fails with ``i > 0``
  the earlier ops are *not* undone, the VM is marked unusable (``msm_gem_vm_unusable``) and
  the error is returned.  Every later VM_BIND and SUBMIT on that context is ``-EPIPE``
  ("context is unusable", :class:`~gpuvm.core.errors.ContextUnusable`).  A failure of op 0
  changes nothing.  (The kernel had only queued the page-table writes of ops ``0..i-1``,
  which are dropped with the job: the tree and the page tables disagree, hence "unusable".
  The model emits the page-table events of those ops as it applies them.)
* nouveau (``drivers/gpu/drm/nouveau/nouveau_uvmm.c``, ``nouveau_uvmm_bind_job_submit``):
  each op is prepared against the tree the earlier ones left (``nouveau_uvmm_sm_map_prepare``
  / ``..._unmap_prepare``: VAs inserted and removed, linking only after every op
  succeeded); a failure jumps to ``unwind``, which undoes the prepared ops in reverse
  (``nouveau_uvmm_sm_*_prepare_unwind``): the VM is exactly as before.
* xe: :func:`gpuvm.drm.xe.vm_bind` with ``fail_at`` (``vm_bind_ioctl_ops_unwind``, the same
  engine, :func:`commit_then_unwind`).

:func:`vm_bind_fault` is the msm / nouveau form: it validates the whole array exactly as
:meth:`gpuvm.drm.file.DrmFile.vm_bind` does (a validation error changes nothing), then runs
ops ``0..k-1`` and fails op ``k`` with :class:`~gpuvm.core.errors.InjectedFault`.
"""

from __future__ import annotations

import errno as E
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs

from gpuvm.core.args import check_int
from gpuvm.core.errors import GpuvmError, InjectedFault, ModeError, NotSupported
from gpuvm.core.ops import MapOp, MapRequest, OpList, RemapOp, UnmapOp
from gpuvm.core.refs import Holder
from gpuvm.core.va import Va
from gpuvm.drm.driver import DriverVm
from gpuvm.drm.file import BindMap, BindUnmap, _check_bind, _check_bind_args, _check_usable

if TYPE_CHECKING:
    from gpuvm.drm.file import DrmFile

__all__ = ["commit_then_unwind", "vm_bind_fault"]

_STAGE = Holder("bind prepare")


def vm_bind_fault(
    file: DrmFile, ops: Sequence[BindMap | BindUnmap], fail_at: int, *, errno: int = E.ENOMEM
) -> None:
    """A VM_BIND whose op ``fail_at`` fails while the job is prepared.  msm: ops before it
    stay applied and, if there were any, the VM becomes unusable.  nouveau: they are undone
    and the VM is as before.  Raises :class:`~gpuvm.core.errors.InjectedFault`
    (``errno``)."""
    file._ioctl("VM_BIND")
    _check_bind_args(ops)
    device = file.device
    flavour = device.flavour.name
    if flavour not in ("msm", "nouveau"):
        raise NotSupported(f"use gpuvm.drm.xe.vm_bind(fail_at=...) on {flavour}")
    if not device.policy.supports_vm_bind:
        raise ModeError(f"{device.policy.name} has no VM_BIND", errno=E.EINVAL)
    check_int("fail_at", fail_at, 0, max(len(ops) - 1, 0))
    check_int("errno", errno, 1, 4095)
    rule = file._gate("vm_bind")
    vm = file._vm_for(rule)
    assert isinstance(vm, DriverVm) and not vm.kernel_managed
    _check_usable(vm, "VM_BIND")
    reqs = file._bind_requests(vm, ops)
    _check_bind(vm, reqs)
    file._enter(rule, vm)
    if flavour == "nouveau":
        builders = [
            (
                (lambda r=req: vm.sm_map_ops(r))
                if isinstance(req, MapRequest)
                else (lambda r=req: vm.sm_unmap_ops(r.addr, r.range))
            )
            for req in reqs
        ]
        held = [req.obj for req in reqs if isinstance(req, MapRequest) and req.obj is not None]
        for obj in held:
            obj.get(_STAGE)
        try:
            commit_then_unwind(vm, builders, fail_at, errno, where="nouveau_uvmm_bind_job_submit")
        finally:
            for obj in held:
                obj.put(_STAGE)
    if fail_at:
        vm.bind(reqs[:fail_at])
        vm.unusable = True
    raise InjectedFault(f"vm_bind_job_prepare: op {fail_at} failed (injected)", errno=errno)


# --- prepare / commit / unwind -------------------------------------------------------------


@attrs.define(slots=True)
class _Committed:
    """What the prepare (commit) of one bind op did to the tree, for its unwind."""

    inserted: list[Va] = attrs.field(factory=list)
    """New VAs (MAP, REMAP prev/next), inserted and linked."""
    removed: list[Va] = attrs.field(factory=list)
    """VAs taken out of the tree (UNMAP, REMAP's old VA), still linked."""


def _commit(vm: DriverVm, lst: OpList, holder: object) -> _Committed:
    """Apply one op list to the tree only: new VAs are inserted and linked to their VmBo
    (xe's ``xe_vma_create`` links at creation; nouveau links after the whole array, which
    no one can observe before the unwind), old VAs leave the tree but stay linked (their
    unlink is the bind's completion)."""
    done = _Committed()
    for op in lst.ops:
        if isinstance(op, MapOp):
            va = Va(op.addr, op.range, op.obj, op.offset, sparse=op.obj is None)
            vm._insert(va)
            if op.obj is not None:
                vm_bo = vm.bo_obtain(op.obj, holder)
                vm_bo.extobj_add()
                vm.link(va, vm_bo)
                vm_bo.put(holder)
            done.inserted.append(va)
        elif isinstance(op, RemapOp):
            old = op.unmap.va
            vm._remove(old)
            done.removed.append(old)
            for piece in (op.prev, op.next):
                if piece is None:
                    continue
                nva = Va(
                    piece.addr,
                    piece.range,
                    piece.obj,
                    piece.offset,
                    sparse=old.sparse,
                    invalidated=old.invalidated,
                    user_flags=old.user_flags,
                )
                vm._insert(nva)
                if old.vm_bo is not None:
                    vm.link(nva, old.vm_bo)
                done.inserted.append(nva)
        elif isinstance(op, UnmapOp) and op.va.inserted:  # not one an earlier op removed
            vm._remove(op.va)
            done.removed.append(op.va)
    return done


def _unwind(vm: DriverVm, done: _Committed) -> None:
    """The unwind of one op: its new VAs go (removed, unlinked: a VmBo made for them dies
    again), the VAs it removed are inserted again."""
    for va in reversed(done.inserted):
        vm._remove(va)
        if va.vm_bo is not None:
            vm.unlink(va)
        va.freed = True
    for va in reversed(done.removed):
        vm._insert(va)


def commit_then_unwind(
    vm: DriverVm,
    builders: Sequence[Callable[[], OpList | None]],
    fail_at: int,
    errno: int,
    *,
    where: str,
    _bind_holder: object = _STAGE,
) -> None:
    """Build and commit the op lists of binds ``0..fail_at-1`` one after the other (each on
    the tree the earlier ones left; ``None``: nothing to do), fail bind ``fail_at`` with
    :class:`~gpuvm.core.errors.InjectedFault`, then undo every commit in reverse.  The tree,
    VmBos and extobj list are as before, and so is the VM's layout generation, so op lists
    built before the bind stay valid, as the kernel's would."""
    generation = vm.generation
    committed: list[_Committed] = []
    try:
        for i, build in enumerate(builders):
            if i == fail_at:
                raise InjectedFault(f"{where}: op {i} failed (injected)", errno=errno)
            lst = build()
            if lst is not None:
                committed.append(_commit(vm, lst, _bind_holder))
    except GpuvmError:
        for done in reversed(committed):
            _unwind(vm, done)
        vm.generation = generation
        vm._issued.clear()
        raise
