"""The library's error hierarchy.

Every rejected operation raises a subclass of :class:`GpuvmError` carrying the kernel
errno it models (``errno`` attribute, a positive number as in :mod:`errno`).  Where the
kernel itself silently corrupts state (a zero-range insert, a double insert, unlinking an
unlinked VA, ...), the model raises with the errno the nearest kernel check would have
returned, so callers can still switch on it.  A raised error always leaves the model
unchanged: operations validate first and mutate after.
"""

from __future__ import annotations

import errno as _errno

_KERNEL_NAMES = {_errno.EDEADLK: "EDEADLK", _errno.EOPNOTSUPP: "EOPNOTSUPP"}
"""Where Python's ``errno.errorcode`` picks an alias (EDEADLOCK), the kernel's name."""


class GpuvmError(Exception):
    """Base of every error the model raises; ``errno`` is the kernel's positive errno."""

    errno: int = _errno.EINVAL

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        if errno is not None:
            self.errno = errno

    @property
    def errno_name(self) -> str:
        """Symbolic errno name as the kernel spells it, e.g. ``"EINVAL"``, ``"EDEADLK"``."""
        return _KERNEL_NAMES.get(self.errno) or _errno.errorcode.get(self.errno, str(self.errno))

    def __str__(self) -> str:
        return f"{self.errno_name}: {super().__str__()}"


# --- values and ranges --------------------------------------------------------------------


class InvalidValue(GpuvmError):
    """An address, range or offset that is not a u64 (negative, >= 2**64, not an int)."""

    errno = _errno.EINVAL


class InvalidArgument(InvalidValue):
    """An ioctl or core call whose argument is out of the range its uAPI struct field can
    hold (a u32 handle or flag word, a u64 address, a plane count past the device limit):
    the kernel's ``-EINVAL`` from the ioctl's argument checks.  Raised by
    :mod:`gpuvm.core.args` before anything is looked up or allocated."""

    errno = _errno.EINVAL


class ArgumentTypeError(InvalidArgument, TypeError):
    """An argument of the wrong Python type (``True`` or ``1.0`` as a handle, a list as a
    flag word, ``None`` as a buffer).  No C caller can make this mistake; the model refuses
    it as the nearest kernel check would (``-EINVAL``) and, being a :class:`TypeError` too,
    as Python code expects."""

    errno = _errno.EINVAL


class NoSuchObject(GpuvmError):
    """A KMS object that does not exist on this device (a plane index past the last plane):
    ``drm_mode_object_find`` fails and the ioctl returns ``-ENOENT``."""

    errno = _errno.ENOENT


class InvalidRange(GpuvmError):
    """``drm_gpuvm_range_valid`` failed: overflow, outside the VM window, or in the
    kernel-reserved node (``-EINVAL`` from insert, sm_map and sm_unmap)."""

    errno = _errno.EINVAL


class ZeroRange(InvalidRange):
    """A zero range, which the kernel accepts and then mishandles (inverted interval)."""


class InitOverflow(GpuvmError):
    """``drm_gpuvm_init`` with a window or reserved range that overflows u64 (kernel WARNs
    and continues with a broken VM; the model refuses)."""

    errno = _errno.EINVAL


class OutOfBounds(GpuvmError):
    """Optional check (off by default, unchecked in the kernel): a mapping that reaches past
    the end of its object."""

    errno = _errno.EINVAL


# --- the VA tree ----------------------------------------------------------------------------


class VaExists(GpuvmError):
    """``drm_gpuva_insert`` onto an occupied range (``-EEXIST``)."""

    errno = _errno.EEXIST


class AlreadyInserted(GpuvmError):
    """Inserting a VA that is already in a tree (kernel: silent tree corruption)."""

    errno = _errno.EEXIST


class NotInserted(GpuvmError):
    """Removing or linking a VA that is not in this VM's tree (kernel: corruption or a
    NULL dereference)."""

    errno = _errno.EINVAL


class VaInUse(GpuvmError):
    """The driver freed a VA still inserted or linked (kernel: dangling pointers)."""

    errno = _errno.EBUSY


# --- links and VmBos ------------------------------------------------------------------------


class LinkError(GpuvmError):
    """``drm_gpuva_link``/``unlink`` misuse: object mismatch (kernel WARNs and links anyway),
    VM mismatch, double link, or unlink of an unlinked VA."""

    errno = _errno.EINVAL


class NoObject(GpuvmError):
    """An operation that needs a GEM object got an object-less (sparse / NULL) VA."""

    errno = _errno.EINVAL


class StaleOps(GpuvmError):
    """An op list applied to a VM whose VA space changed since the list was built, or to a
    different VM (kernel: undefined behaviour)."""

    errno = _errno.ESTALE


class NotSupported(GpuvmError):
    """A driver callback the operation needs is missing (``-EOPNOTSUPP``)."""

    errno = _errno.EOPNOTSUPP


class NotModelled(NotSupported):
    """The kernel supports this, but the model does not (for example KMS on an ``xe``
    device, whose display is the i915 display code with GGTT pinning): refused rather than
    answered with another driver's semantics.  ``errno`` is the model's choice
    (``-EOPNOTSUPP``), not a kernel errno."""


class CallbackError(GpuvmError):
    """A driver callback returned a negative errno; the operation stopped there."""


class NotImmediateMode(GpuvmError):
    """A deferred put or unlink (``drm_gpuvm_bo_put_deferred``, ``drm_gpuva_unlink_defer``)
    on a VM without ``DRM_GPUVM_IMMEDIATE_MODE``: the kernel WARNs and takes a GEM lock the
    VM does not use; the model refuses."""

    errno = _errno.EINVAL


class ImmediateModeMismatch(GpuvmError):
    """A GEM listed by VMs that disagree on IMMEDIATE_MODE: its VmBo list would be guarded
    by its ``gpuva.lock`` in one and its ``resv`` in the other (kernel: documented, not
    checked)."""

    errno = _errno.EINVAL


class FenceSignallingViolation(GpuvmError):
    """Something that may sleep, allocate or take a reservation lock (a non-deferred VmBo
    put, an op-list allocation, ``exec_lock``/``validate``) inside a fence-signalling
    section.  The kernel only notices through lockdep (a splat, a deadlock in reclaim); the
    model refuses.  No errno exists for it; ``EDEADLK`` names the hazard."""

    errno = _errno.EDEADLK


class LockNotHeld(GpuvmError):
    """A GPUVM call whose lock is not held: the GEM's gpuva lock (its ``resv``, or its own
    ``gpuva.lock`` under IMMEDIATE_MODE) for find / obtain / link / unlink / a put that may
    destroy the VmBo, the VM's ``resv`` under RESV_PROTECTED for the lists, a buffer's
    ``resv`` for eviction.  The kernel only asserts it (lockdep); the model checks it when
    the VM was made with ``lock_checks=True``.  No errno exists; ``ENOLCK`` names it."""

    errno = _errno.ENOLCK


class LockMisuse(GpuvmError):
    """Locking a lock already held (a self-deadlock, ``EDEADLK``) or unlocking one that is
    not held (``EINVAL``)."""

    errno = _errno.EDEADLK


# --- reference counts and lifetimes ---------------------------------------------------------


class RefcountUnderflow(GpuvmError):
    """A put by a holder that holds no reference (kernel: refcount WARN, then use-after-free)."""

    errno = _errno.EINVAL


class UseAfterFree(GpuvmError):
    """An access to an object whose last reference is gone."""

    errno = _errno.EFAULT


class LeakError(GpuvmError):
    """A teardown that would leave objects alive (VAs, VmBos, buffers); the message names
    them and the chain of holders that keeps each alive."""

    errno = _errno.EBUSY


# --- driver layer (files, PRIME, KMS) -------------------------------------------------------


class BadHandle(GpuvmError):
    """A GEM handle that is not open in this file (``-ENOENT``)."""

    errno = _errno.ENOENT


class BadFd(GpuvmError):
    """A file descriptor that is not open (``-EBADF``)."""

    errno = _errno.EBADF


class Busy(GpuvmError):
    """The operation conflicts with existing state (``-EBUSY``)."""

    errno = _errno.EBUSY


class ModeError(GpuvmError):
    """A DRM file used in the path (legacy or VM_BIND) it did not choose; carries the driver
    flavour's errno (msm ``-EINVAL``/``-EBUSY``, nouveau ``-ENOSYS``)."""


class DuplicateObject(GpuvmError):
    """The same buffer twice in one submit's BO table: msm's ``submit_lock_objects`` locks
    with ``drm_exec`` without ``DRM_EXEC_IGNORE_DUPLICATES`` (``-EALREADY``); nouveau's
    ``validate_init`` finds "multiple instances of buffer" (``-EINVAL``)."""

    errno = _errno.EALREADY


class NoSpace(GpuvmError):
    """The iova allocator has no hole that fits (``-ENOSPC``, drm_mm)."""

    errno = _errno.ENOSPC


class NoMemory(GpuvmError):
    """No room to place or migrate a buffer (``-ENOMEM``)."""

    errno = _errno.ENOMEM


class PermissionDenied(GpuvmError):
    """The exporter refuses (``-EPERM``)."""

    errno = _errno.EPERM


# --- placement (TTM) ------------------------------------------------------------------------


class PinnedBuffer(GpuvmError):
    """The buffer is pinned and the request would move it or drop its backing
    (``ttm_bo_validate`` ``-EINVAL``; amdgpu_bo_pin_restricted pinned elsewhere)."""

    errno = _errno.EINVAL


class NotPinned(GpuvmError):
    """Unpin of a buffer whose pin count is already zero (kernel: WARN in ttm_bo_unpin)."""

    errno = _errno.EINVAL


class NotManaged(GpuvmError):
    """A buffer that has no backing state in this memory manager (or already has one)."""

    errno = _errno.EINVAL


# --- dma-buf sharing ------------------------------------------------------------------------


class BackingConflict(Busy):
    """A late attacher (or its first map, or a pin) needs a backing the exporter cannot
    give it: the current one is out of its reach and pinned or statically mapped
    (``-EBUSY``, the documented convention of dma-buf attach constraints)."""

    errno = _errno.EBUSY


class WouldMigrate(InvalidValue):
    """A ``NO_MOVE`` import (Simon Ser's 2024 RFC, ``DMA_BUF_ATTACH_NO_MOVE``) that would
    migrate the buffer (``-EINVAL``); nothing was attached, pinned or moved."""

    errno = _errno.EINVAL


class NoImportPath(InvalidValue):
    """The importing driver has no path for this buffer (no ``gem_prime_import_sg_table``:
    bochs/qxl-style VRAM-only devices), ``-EINVAL``."""

    errno = _errno.EINVAL


# --- fault injection and unusable contexts ----------------------------------------------------


class InjectedFault(GpuvmError):
    """A failure injected on purpose at one step of a multi-step ioctl (the kernel's
    ``ALLOW_ERROR_INJECTION`` points and debug knobs such as xe's ``FORCE_OP_ERROR``), so the
    driver's unwind path runs; ``errno`` is the one asked for (default ``-ENOMEM``)."""

    errno = _errno.ENOMEM


class ContextUnusable(GpuvmError):
    """The VM was marked unusable by an earlier failure part-way through a VM_BIND (msm
    ``msm_gem_vm_unusable``): later SUBMIT / VM_BIND are ``-EPIPE`` ("context is
    unusable")."""

    errno = _errno.EPIPE
