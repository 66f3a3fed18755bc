"""Per-file mode choice (legacy or VM_BIND, decided once at first use) as data tables.

A DRM file's state is one of :class:`ModeState`; each driver flavour has a table mapping
``(state, call)`` to a :class:`Rule`: either an errno (the call is refused and nothing
changes) or the state the file moves to.  Calls a flavour does not have at all are refused
with ``-ENOTTY``.  Sources (torvalds/linux): msm ``adreno_set_param`` in
``drivers/gpu/drm/msm/adreno/adreno_gpu.c`` (``MSM_PARAM_EN_VM_BIND``: ``-EINVAL`` without
per-process page tables, ``-EBUSY`` once the VM exists; commit feb8ef4636a4 "drm/msm: Add
opt-in for VM_BIND"), ``msm_ioctl_vm_bind``, ``msm_ioctl_gem_info``; nouveau
``nouveau_uvmm_ioctl_vm_init``, ``nouveau_gem_ioctl_pushbuf``, ``nouveau_exec_ioctl_exec``
(``-ENOSYS`` across modes).

Calls: ``gem_new``, ``get_param``, ``en_vm_bind`` (msm ``SET_PARAM(EN_VM_BIND)``),
``vm_init`` (nouveau ``VM_INIT``), ``channel_alloc``, ``get_iova``, ``set_iova``, ``submit``
(a legacy submit with a BO table; nouveau ``PUSHBUF``), ``exec`` (a VM_BIND-mode submit
without BO table; nouveau ``EXEC``), ``vm_bind``.
"""

from __future__ import annotations

import enum
import errno as E
from collections.abc import Mapping

import attrs

__all__ = [
    "CALLS",
    "FLAVOURS",
    "MSM",
    "MSM_RULES",
    "NOUVEAU",
    "NOUVEAU_RULES",
    "XE",
    "XE_64K",
    "XE_RULES",
    "Flavour",
    "ModeState",
    "Rule",
]


class ModeState(enum.Enum):
    """Where a file is in its one-time choice of path."""

    FRESH = "fresh"
    """No per-file VM and no choice made yet."""
    LEGACY = "legacy"
    """Kernel-managed per-file VM (msm: VM created; nouveau: uvmm disabled)."""
    BIND_PENDING = "vm_bind, VM not created"
    """msm: VM_BIND enabled, the per-file VM not created yet (it will be user-managed)."""
    BIND = "vm_bind"
    """User-managed per-file VM exists."""


@attrs.frozen(slots=True)
class Rule:
    """The verdict for one ``(state, call)``: refused with ``errno``, or allowed, moving the
    file to ``to`` (None: stays)."""

    errno: int | None = None
    to: ModeState | None = None
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.errno is None


def ok(to: ModeState | None = None) -> Rule:
    return Rule(None, to)


def no(errno: int, reason: str) -> Rule:
    return Rule(errno, None, reason)


F, L, P, B = ModeState.FRESH, ModeState.LEGACY, ModeState.BIND_PENDING, ModeState.BIND

CALLS = (
    "gem_new",
    "get_param",
    "en_vm_bind",
    "vm_init",
    "channel_alloc",
    "get_iova",
    "set_iova",
    "submit",
    "exec",
    "vm_bind",
)

_VM_EXISTS = "VM already created"
_IS_BIND = "VM_BIND is enabled"
_NO_BIND = "context does not support vmbind"
_QUEUE = "Invalid queue type"

MSM_RULES: Mapping[tuple[ModeState, str], Rule] = {
    # a fresh file: the first call that needs the VM creates it as a legacy VM
    (F, "gem_new"): ok(),
    (F, "get_param"): ok(L),
    (F, "en_vm_bind"): ok(P),
    (F, "get_iova"): ok(L),
    (F, "set_iova"): ok(L),
    (F, "submit"): ok(L),
    (F, "exec"): no(E.EINVAL, _QUEUE),
    (F, "vm_bind"): no(E.EINVAL, _NO_BIND),
    # VM_BIND enabled, VM not created yet: enabling again is allowed
    (P, "gem_new"): ok(),
    (P, "get_param"): ok(B),
    (P, "en_vm_bind"): ok(),
    (P, "get_iova"): no(E.EINVAL, _IS_BIND),
    (P, "set_iova"): no(E.EINVAL, _IS_BIND),
    (P, "submit"): no(E.EINVAL, "SUBMIT with a BO table on a VM_BIND context"),
    (P, "exec"): ok(B),
    (P, "vm_bind"): ok(B),
    # legacy VM exists
    (L, "gem_new"): ok(),
    (L, "get_param"): ok(),
    (L, "en_vm_bind"): no(E.EBUSY, _VM_EXISTS),
    (L, "get_iova"): ok(),
    (L, "set_iova"): ok(),
    (L, "submit"): ok(),
    (L, "exec"): no(E.EINVAL, _QUEUE),
    (L, "vm_bind"): no(E.EINVAL, _NO_BIND),
    # VM_BIND VM exists
    (B, "gem_new"): ok(),
    (B, "get_param"): ok(),
    (B, "en_vm_bind"): no(E.EBUSY, _VM_EXISTS),
    (B, "get_iova"): no(E.EINVAL, _IS_BIND),
    (B, "set_iova"): no(E.EINVAL, _IS_BIND),
    (B, "submit"): no(E.EINVAL, "SUBMIT with a BO table on a VM_BIND context"),
    (B, "exec"): ok(),
    (B, "vm_bind"): ok(),
}
"""msm: ``MSM_PARAM_EN_VM_BIND`` only before the per-file VM exists (else ``-EBUSY``);
``GET_IOVA``/``SET_IOVA`` and BO-table submits on a VM_BIND context ``-EINVAL``; VM_BIND on
a legacy context ``-EINVAL``.  (The kernel's VM_BIND on a fresh file first creates the
legacy VM, then fails; the model refuses without creating it.)"""

_DISABLED = "uvmm disabled by a legacy call before VM_INIT"
_NO_UVMM = "VM_INIT not called"

NOUVEAU_RULES: Mapping[tuple[ModeState, str], Rule] = {
    # fresh: GEM_NEW and CHANNEL_ALLOC disable uvmm for good
    (F, "gem_new"): ok(L),
    (F, "channel_alloc"): ok(L),
    (F, "vm_init"): ok(B),
    (F, "submit"): no(E.ENOENT, "PUSHBUF without a channel"),
    (F, "exec"): no(E.ENOSYS, _NO_UVMM),
    (F, "vm_bind"): no(E.ENOSYS, _NO_UVMM),
    # legacy (uvmm disabled)
    (L, "gem_new"): ok(),
    (L, "channel_alloc"): ok(),
    (L, "vm_init"): no(E.ENOSYS, _DISABLED),
    (L, "submit"): ok(),
    (L, "exec"): no(E.ENOSYS, _NO_UVMM),
    (L, "vm_bind"): no(E.ENOSYS, _NO_UVMM),
    # uvmm initialised
    (B, "gem_new"): ok(),
    (B, "channel_alloc"): ok(),
    (B, "vm_init"): no(E.EBUSY, "VM_INIT twice (the kernel does not check; the model refuses)"),
    (B, "submit"): no(E.ENOSYS, "legacy PUSHBUF after VM_INIT"),
    (B, "exec"): ok(),
    (B, "vm_bind"): ok(),
}
"""nouveau: the first GEM_NEW or CHANNEL_ALLOC before VM_INIT disables uvmm (a later
VM_INIT ``-ENOSYS``); after VM_INIT legacy PUSHBUF ``-ENOSYS``; VM_BIND and EXEC without
VM_INIT ``-ENOSYS``.  nouveau has no GET_IOVA / SET_IOVA / SET_PARAM(EN_VM_BIND)."""


@attrs.frozen(slots=True)
class Flavour:
    """A driver flavour: its name and mode-choice table, plus its errno for an unknown
    handle per call (``lookup_errno``; default ``-ENOENT``, ``drm_gem_object_lookup``'s
    callers) and for a buffer twice in a submit's BO table (``duplicate_errno``)."""

    name: str
    rules: Mapping[tuple[ModeState, str], Rule] = attrs.field(repr=False)
    lookup_errno: Mapping[str, int] = attrs.field(factory=dict, repr=False)
    duplicate_errno: int = E.EINVAL

    def bad_handle_errno(self, call: str) -> int:
        """The errno of ``call`` naming a handle the file does not have."""
        return self.lookup_errno.get(call, E.ENOENT)

    def rule(self, state: ModeState, call: str) -> Rule:
        """The verdict for ``call`` in ``state``: ``-ENOTTY`` if the driver has no such
        ioctl."""
        r = self.rules.get((state, call))
        if r is None:
            return no(E.ENOTTY, f"{self.name} has no {call} ioctl")
        return r

    @property
    def calls(self) -> frozenset[str]:
        return frozenset(c for _, c in self.rules)


MSM = Flavour(
    "msm",
    MSM_RULES,
    lookup_errno={"submit": E.EINVAL, "vm_bind": E.EINVAL},
    duplicate_errno=E.EALREADY,
)
"""msm: ``submit_lookup_objects`` and ``vm_bind_job_lookup_ops`` look handles up in the idr
directly ("invalid handle %u at index %u", ``-EINVAL``); ``submit_lock_objects`` uses
``drm_exec`` without ``DRM_EXEC_IGNORE_DUPLICATES`` (a duplicate is ``-EALREADY``)."""
NOUVEAU = Flavour("nouveau", NOUVEAU_RULES, duplicate_errno=E.EINVAL)
"""nouveau: ``validate_init`` (``PUSHBUF``) and ``bind_job_op_from_uop`` (``VM_BIND``) use
``drm_gem_object_lookup`` (``-ENOENT``); a duplicate in ``PUSHBUF`` is ``-EINVAL``."""
XE_RULES: Mapping[tuple[ModeState, str], Rule] = {(F, "gem_new"): ok()}
"""xe: GPUVM-native only.  A file never enters a legacy or per-file-VM state: its VMs are
created and named explicitly (``DRM_IOCTL_XE_VM_CREATE``, :mod:`gpuvm.drm.xe`), so the
generic per-file calls (GET_IOVA, BO-table SUBMIT, the per-file VM_BIND / EXEC) are
``-ENOTTY`` and only buffer creation goes through this table."""
XE = Flavour("xe", XE_RULES, duplicate_errno=E.EINVAL)
"""xe: ``drm_gem_object_lookup`` for every handle (``-ENOENT``)."""
XE_64K = Flavour("xe-64k", XE_RULES, duplicate_errno=E.EINVAL)
"""xe on a platform with ``XE_VRAM_FLAGS_NEED64K`` (DG2, PVC): VRAM buffers get
``XE_BO_FLAG_INTERNAL_64K`` and must be bound 64 KiB aligned
(``xe_vm_bind_ioctl_validate_bo``)."""
FLAVOURS: Mapping[str, Flavour] = {"msm": MSM, "nouveau": NOUVEAU, "xe": XE, "xe-64k": XE_64K}
