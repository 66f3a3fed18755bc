"""The xe driver flavour: GPUVM-native VM_BIND with several VMs per file, VM-private
buffers, ``DRM_XE_VM_BIND_OP_UNMAP_ALL`` and xe's unwind of a failed bind array.

``Device(flavour="xe")`` has no legacy path: a file's VMs are made with :func:`vm_create`
(``DRM_IOCTL_XE_VM_CREATE``, ids from 1 in ``xef->vm.xa``) and named by every bind
(:func:`vm_bind`), buffer creation (:func:`gem_create`) and submit (:func:`exec`).  Sources
(torvalds/linux ``drivers/gpu/drm/xe``): ``xe_vm.c`` (``xe_vm_create_ioctl``,
``xe_vm_destroy_ioctl``, ``vm_bind_ioctl_check_args``, ``xe_vm_bind_ioctl_validate_bo``,
``xe_vm_bind_ioctl``, ``vm_bind_ioctl_ops_create``, ``vm_bind_ioctl_ops_parse``,
``xe_vma_op_commit``, ``vm_bind_ioctl_ops_unwind``), ``xe_bo.c`` (``xe_gem_create_ioctl``,
``xe_ttm_bo_destroy``), ``xe_dma_buf.c`` (``xe_gem_prime_export``).

Rules modelled:

* VM_BIND of an unknown ``vm_id`` is ``-EINVAL`` (``xe_vm_lookup`` failing in
  ``xe_vm_bind_ioctl``); VM_DESTROY of one is ``-ENOENT``; GEM_CREATE naming one
  ``-ENOENT``.
* Per op (``vm_bind_ioctl_check_args``, all ops before anything else): a MAP without a
  handle is a NULL (sparse) map and must have offset 0; UNMAP_ALL needs a handle and has no
  address or range; address, range and offset 4 KiB aligned; a zero range only for
  UNMAP_ALL.  Then every op's range against the VM size, then every handle
  (``drm_gem_object_lookup``, ``-ENOENT``) with ``xe_vm_bind_ioctl_validate_bo``: the range
  inside the buffer, and 64 KiB alignment of address, range and offset for a buffer with
  ``XE_BO_FLAG_INTERNAL_64K`` on a ``XE_VRAM_FLAGS_NEED64K`` platform (flavour ``"xe-64k"``,
  VRAM buffers).  All ``-EINVAL``; nothing changes.
* The ops are then built and committed one bind op after the other, each against the VA
  tree the earlier ones left (``vm_bind_ioctl_ops_create`` + ``vm_bind_ioctl_ops_parse``);
  an UNMAP_ALL is ``drm_gpuvm_bo_unmap_ops_create`` of the buffer's VmBo in that VM (every
  VA of the buffer, in the VmBo's list order).  An empty array, or one with nothing to do,
  succeeds without change (``-ENODATA`` is turned into 0 after signalling the syncs).
* A failure part-way (``fail_at=k``: the ``vm_bind_ioctl_ops_create`` of op ``k`` fails, an
  ``ALLOW_ERROR_INJECTION`` point; xe's ``FORCE_OP_ERROR`` debug flag fails later, at
  lock/prepare, with the same unwind) runs ``vm_bind_ioctl_ops_unwind``: the committed ops
  are undone in reverse (new VMAs destroyed, removed ones re-inserted), so the VM is exactly
  as before, unlike msm (:mod:`gpuvm.drm.bind_faults`).
* A VM-private buffer (``gem_create(vm_id=...)``) shares the VM's reservation, so GPUVM
  never puts it on that VM's extobj list; it holds a VM reference (put in
  ``xe_ttm_bo_destroy``) and cannot be exported (``xe_gem_prime_export``: ``-EPERM``).  The
  kernel read does not refuse binding it into another VM of the file (no check in
  ``xe_vm_bind_ioctl`` or ``xe_vma_create``): there it is an external object.
* VM_DESTROY (``xe_vm_close_and_put``) unmaps every VMA and drops the file's reference;
  file close does the same for every VM left (``xe_file_close``).
"""

from __future__ import annotations

import errno as E
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from gpuvm.core.args import check_handle, check_instance, check_int, check_sequence, check_u32
from gpuvm.core.errors import (
    ArgumentTypeError,
    BadHandle,
    InvalidRange,
    InvalidValue,
    NoSuchObject,
)
from gpuvm.core.ops import MapRequest, OpList
from gpuvm.core.refs import Holder
from gpuvm.core.u64 import check_u64
from gpuvm.drm.bind_faults import commit_then_unwind
from gpuvm.drm.dmabuf import revalidate_import
from gpuvm.drm.driver import Bo, DriverVm, Job
from gpuvm.drm.file import MAX_BIND_OPS, BindMap, BindUnmap

if TYPE_CHECKING:
    from gpuvm.core.gem import GemObject
    from gpuvm.core.vmbo import VmBo
    from gpuvm.drm.file import DrmFile

__all__ = [
    "DRM_XE_VM_CREATE_FLAG_FAULT_MODE",
    "DRM_XE_VM_CREATE_FLAG_LR_MODE",
    "DRM_XE_VM_CREATE_FLAG_SCRATCH_PAGE",
    "XE_64K",
    "XE_PAGE",
    "XE_VM_SIZE",
    "BindUnmapAll",
    "XeBindOp",
    "gem_create",
    "submit",
    "vm_bind",
    "vm_create",
    "vm_destroy",
]

XE_PAGE = 4096
"""``PAGE_MASK`` alignment of every bind field (``vm_bind_ioctl_check_args``)."""
XE_64K = 0x10000
"""``XE_64K_PAGE_MASK + 1``: bind alignment of ``XE_BO_FLAG_INTERNAL_64K`` buffers on
``XE_VRAM_FLAGS_NEED64K`` platforms."""
XE_VM_SIZE = 1 << 48
"""``vm->size`` (``1 << xe->info.va_bits``, 48 bits): VMs span ``[0, 2**48)``."""

DRM_XE_VM_CREATE_FLAG_SCRATCH_PAGE = 1 << 0
DRM_XE_VM_CREATE_FLAG_LR_MODE = 1 << 1
DRM_XE_VM_CREATE_FLAG_FAULT_MODE = 1 << 2
_ALL_VM_CREATE_FLAGS = (
    DRM_XE_VM_CREATE_FLAG_SCRATCH_PAGE
    | DRM_XE_VM_CREATE_FLAG_LR_MODE
    | DRM_XE_VM_CREATE_FLAG_FAULT_MODE
)

_BIND = Holder("xe VM_BIND")
_vm_names = itertools.count(1)


@attrs.frozen(slots=True)
class BindUnmapAll:
    """``DRM_XE_VM_BIND_OP_UNMAP_ALL``: unmap every VA of ``handle``'s buffer in the VM."""

    handle: int


XeBindOp = BindMap | BindUnmap | BindUnmapAll


def _private_holder(bo: Bo) -> Holder:
    """The holder of a VM-private buffer's VM reference (``bo->vm``)."""
    return Holder("private bo", who=bo)


def _require_xe(file: DrmFile, call: str) -> None:
    file._ioctl(call)
    if not file.device.flavour.name.startswith("xe"):
        raise InvalidValue(f"{call}: {file.device.flavour.name} is not xe", errno=E.ENOTTY)


def _lookup_vm(file: DrmFile, vm_id: object, errno: int) -> DriverVm:
    vm = file.vms.get(check_u32("vm_id", vm_id))
    if vm is None:
        raise NoSuchObject(f"{file.name} has no VM {vm_id}", errno=errno)
    return vm


# --- VMs ----------------------------------------------------------------------------------


def vm_create(file: DrmFile, flags: int = 0) -> int:
    """``DRM_IOCTL_XE_VM_CREATE``: a new VM of the file; returns its id (the lowest free id
    from 1).  Unknown flags, and FAULT_MODE (the model has no USM) or FAULT_MODE without
    LR_MODE, are ``-EINVAL``."""
    _require_xe(file, "XE_VM_CREATE")
    check_u32("flags", flags)
    if flags & ~_ALL_VM_CREATE_FLAGS:
        raise InvalidValue(f"XE_VM_CREATE flags {flags:#x}")
    if flags & DRM_XE_VM_CREATE_FLAG_FAULT_MODE:
        raise InvalidValue("XE_VM_CREATE: FAULT_MODE needs USM (has_usm), not modelled")
    device = file.device
    vm = DriverVm(
        0,
        XE_VM_SIZE,
        name=f"{file.name}.vm{next(_vm_names)}",
        bus=device.bus,
        tlb_kind="context_flush",
        page_size=XE_PAGE,
        role="vm_bind",
        vm_free=device.vm_freed,
        obtain_locked=device.kernel.bo_obtain_locked,
    )
    vm_id = 1
    while vm_id in file.vms:
        vm_id += 1
    file.vms[vm_id] = vm
    device.vm_created(vm)
    return vm_id


def vm_destroy(file: DrmFile, vm_id: int) -> None:
    """``DRM_IOCTL_XE_VM_DESTROY``: ``-ENOENT`` for an unknown id; else the id goes and
    ``xe_vm_close_and_put`` unmaps every VMA and drops the file's reference (VM-private
    buffers still hold theirs).  (``-EBUSY`` with compute exec queues: not modelled.)"""
    _require_xe(file, "XE_VM_DESTROY")
    vm = _lookup_vm(file, vm_id, E.ENOENT)
    del file.vms[vm_id]
    vm.close()


# --- buffers ------------------------------------------------------------------------------


def gem_create(file: DrmFile, size: int, *, vm_id: int = 0, vram: bool = False) -> int:
    """``DRM_IOCTL_XE_GEM_CREATE``: a new buffer and its handle.  ``size`` must be a
    non-zero multiple of 4 KiB (``-EINVAL``).  ``vm_id`` (non-zero) makes it private to
    that VM: it shares the VM's reservation and holds a VM reference (``-ENOENT`` for an
    unknown VM).  ``vram`` on a NEED64K platform (flavour ``"xe-64k"``) sets
    ``XE_BO_FLAG_INTERNAL_64K`` (binds must be 64 KiB aligned)."""
    _require_xe(file, "XE_GEM_CREATE")
    check_u64("size", size)
    check_u32("vm_id", vm_id)
    check_instance("vram", vram, bool)
    if size == 0 or size % XE_PAGE:
        raise InvalidValue(f"XE_GEM_CREATE size {size:#x}")
    vm = _lookup_vm(file, vm_id, E.ENOENT) if vm_id else None
    file._gate("gem_new")
    device = file.device
    bo = device.new_bo(size, resv=vm.resv if vm is not None else None)
    if vm is not None:
        bo.private_vm = vm
        vm.get(_private_holder(bo))
        bo.free_hooks.append(_put_private_vm)
    if vram and device.flavour.name == "xe-64k":
        bo.bind_align = XE_64K
    h = file._new_handle(bo)
    bo.put()
    return h


def _put_private_vm(obj: GemObject) -> None:
    """``xe_ttm_bo_destroy``: a user buffer with ``bo->vm`` puts its VM reference."""
    assert isinstance(obj, Bo) and obj.private_vm is not None
    vm = obj.private_vm
    obj.private_vm = None
    vm.put(_private_holder(obj))


# --- VM_BIND ------------------------------------------------------------------------------


def _check_args(ops: object) -> tuple[XeBindOp, ...]:
    """``vm_bind_ioctl_check_args``: per op, before any lookup."""
    items = check_sequence("ops", ops, MAX_BIND_OPS)
    for i, op in enumerate(items):
        if isinstance(op, BindMap):
            check_u64("addr", op.addr)
            check_u64("range", op.range)
            check_u64("offset", op.offset)
            if op.handle is None:
                if op.offset:
                    raise InvalidValue(f"op {i}: NULL map with obj_offset {op.offset:#x}")
            else:
                check_handle("handle", op.handle)
            fields: tuple[int, ...] = (op.addr, op.range, op.offset)
        elif isinstance(op, BindUnmap):
            check_u64("addr", op.addr)
            check_u64("range", op.range)
            fields = (op.addr, op.range)
        elif isinstance(op, BindUnmapAll):
            check_handle("handle", op.handle)
            if op.handle == 0:
                raise InvalidValue(f"op {i}: UNMAP_ALL without an object")
            continue
        else:
            raise ArgumentTypeError(f"not an xe VM_BIND op: {op!r}")
        if any(v % XE_PAGE for v in fields) or op.range == 0:
            raise InvalidRange(f"vm_bind_ioctl_check_args: op {i}: unaligned or empty {op!r}")
    return items  # type: ignore[return-value]


def _lookup_bos(file: DrmFile, vm: DriverVm, ops: Sequence[XeBindOp]) -> list[Bo | None]:
    """The range checks against the VM, then each op's buffer with
    ``xe_vm_bind_ioctl_validate_bo``."""
    for i, op in enumerate(ops):
        if isinstance(op, BindUnmapAll):
            continue
        if op.range > XE_VM_SIZE or op.addr > XE_VM_SIZE - op.range:
            raise InvalidRange(f"xe_vm_bind_ioctl: op {i}: {op!r} outside the VM")
    bos: list[Bo | None] = []
    for i, op in enumerate(ops):
        handle = op.handle if isinstance(op, BindMap | BindUnmapAll) else None
        if handle is None:
            bos.append(None)
            continue
        bo = file.handles.get(handle)
        if bo is None:
            raise BadHandle(f"xe VM_BIND: op {i}: no handle {handle}")
        if isinstance(op, BindMap):
            if op.range > bo.size or op.offset > bo.size - op.range:
                raise InvalidRange(f"xe_vm_bind_ioctl_validate_bo: op {i}: outside {bo!r}")
            if bo.bind_align and any(v % bo.bind_align for v in (op.addr, op.range, op.offset)):
                raise InvalidRange(f"xe_vm_bind_ioctl_validate_bo: op {i}: {bo!r} needs 64K")
        bos.append(bo)
    return bos


def _op_list(vm: DriverVm, op: XeBindOp, bo: Bo | None) -> OpList | None:
    """``vm_bind_ioctl_ops_create`` against the current VA tree (None: nothing to do)."""
    if isinstance(op, BindMap):
        return vm.sm_map_ops(MapRequest(op.addr, op.range, bo, op.offset))
    if isinstance(op, BindUnmap):
        return vm.sm_unmap_ops(op.addr, op.range)
    assert bo is not None
    vm_bo = bo.vm_bo_for(vm)
    return None if vm_bo is None else vm.bo_unmap_ops(vm_bo)


def vm_bind(
    file: DrmFile,
    vm_id: int,
    ops: Sequence[XeBindOp],
    *,
    fail_at: int | None = None,
    errno: int = E.ENOMEM,
) -> None:
    """``DRM_IOCTL_XE_VM_BIND``: MAP / NULL MAP / UNMAP / UNMAP_ALL ops in order (see the
    module docstring for the checks).  ``fail_at=k`` makes the creation of op ``k``'s ops
    fail after ops ``0..k-1`` were committed: they are unwound and
    :class:`~gpuvm.core.errors.InjectedFault` (``errno``) is raised with the VM as before."""
    _require_xe(file, "XE_VM_BIND")
    vm = _lookup_vm(file, vm_id, E.EINVAL)
    items = _check_args(ops)
    if fail_at is not None:
        check_int("fail_at", fail_at, 0, max(len(items) - 1, 0))
    check_int("errno", errno, 1, 4095)
    bos = _lookup_bos(file, vm, items)
    if not items:
        return
    vm.check_alive("XE_VM_BIND")
    held = list(dict.fromkeys(b for b in bos if b is not None))
    vm.get(_BIND)
    for obj in held:
        obj.get(_BIND)
    try:
        if fail_at is None:
            for op, bo in zip(items, bos, strict=True):
                lst = _op_list(vm, op, bo)
                if lst is not None and lst.ops:
                    vm.apply(lst)
        else:
            _staged_failure(vm, items, bos, fail_at, errno)
    finally:
        for obj in held:
            obj.put(_BIND)
        vm.put(_BIND)


# --- the failure path ----------------------------------------------------------------------


def _staged_failure(
    vm: DriverVm, items: Sequence[XeBindOp], bos: Sequence[Bo | None], fail_at: int, errno: int
) -> None:
    """Commit ops ``0..fail_at-1`` one after the other (``vm_bind_ioctl_ops_parse``:
    ``xe_vma_create`` links new VMAs at creation, ``xe_vma_op_commit`` takes old ones out of
    the tree, still linked), fail op ``fail_at`` (``vm_bind_ioctl_ops_create``), then
    ``vm_bind_ioctl_ops_unwind`` (:func:`gpuvm.drm.bind_faults.commit_then_unwind`)."""
    builders = [
        (lambda op=op, bo=bo: _op_list(vm, op, bo)) for op, bo in zip(items, bos, strict=True)
    ]
    commit_then_unwind(
        vm, builders, fail_at, errno, where="vm_bind_ioctl_ops_create", _bind_holder=_BIND
    )


# --- submit -------------------------------------------------------------------------------


def submit(file: DrmFile, vm_id: int) -> Job:
    """``DRM_IOCTL_XE_EXEC`` on a queue of VM ``vm_id`` (``-ENOENT`` if unknown): lock the
    VM and its external objects, re-validate evicted buffers (an import re-maps its
    attachment first: xe is a dynamic importer, ``xe_dma_buf_move_notify`` evicts), and
    run a job that holds the VM until retired."""
    _require_xe(file, "XE_EXEC")
    vm = _lookup_vm(file, vm_id, E.ENOENT)
    vm.exec_lock()
    vm.validate(revalidate_import)
    job = Job(file, vm, (), holds_bos=False)
    vm.get(job)
    file.device.jobs.append(job)
    return job


def vm_bos(file: DrmFile, vm_id: int) -> list[VmBo]:
    """The VmBos of VM ``vm_id`` (a reading helper for tests and studies)."""
    return list(_lookup_vm(file, vm_id, E.ENOENT).vm_bos)
