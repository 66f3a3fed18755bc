"""Teardown policies: where the mappings of kernel-managed VMs are torn down.

The driver layer (:mod:`gpuvm.drm.device`, :mod:`gpuvm.drm.file`, :mod:`gpuvm.drm.prime`,
:mod:`gpuvm.drm.kms`) calls a policy's hooks at the points the kernel does: a handle opened
or closed, a dma-buf exported or released, a framebuffer prepared or cleaned up, a submit
pinned or retired, a buffer freed, a file closed.  The policy also picks the type of each
VM: a legacy :class:`~legacy.aspace.AddressSpace` (the buffer owns its VMAs) or a
GPUVM-backed :class:`~gpuvm.drm.driver.ManagedVm` (a VMA holds its VmBo, which holds the
buffer).  Every policy emits the same events (``Mapped``, ``Unmapped``,
``TlbInvalidated``, ``VmaCreated``, ``VmaDestroyed``, ``RefGot``/``RefPut``, ``Freed``), so
cost observers count them alike.

Built in.  "Option N" is Danilo Krummrich's list of ways forward for msm's legacy VMs, in
order of preference, in his reply to "[PATCH v4 01/40] drm/gpuvm: Don't require obj lock in
destructor path" (dri-devel, May 2025, Message-ID ``aCb-72KH-NrzvGXy@pollux``): (1) rework
msm's legacy code to follow GPUVM's lifetime rules, (2) keep legacy VMs out of GPUVM, (3) an
explicit msm-only quirk flag with no lifetime guarantees.  msm took option 1 (commits
111fdd2198e6, the drm_gpuvm conversion, and 3bebfd53af0f, ``vma_ref``; mainline 6.17):

* ``legacy_pre_6_17``: legacy address spaces; VMAs live until buffer free; handle close does
  nothing; no VM_BIND.
* ``separate_tracker`` (Danilo's option 2): as above for legacy files and the display; only
  VM_BIND files use GPUVM objects.
* ``gpuvm_eager``: GPUVM references everywhere; the display VMA is mapped at framebuffer
  prepare and torn down at the last cleanup; legacy contexts drop a VMA at handle close
  (the intermediate commits, option 1 done naively).
* ``gpuvm_vma_ref`` (msm 6.17): per-buffer ``vma_ref`` counts handles, dma-buf exports and
  pins; the display VMA is torn down when it reaches 0; legacy contexts drop a VMA at
  handle close (after waiting for idle); submits hold VmBo and buffer references.
* ``weak_ref_quirk`` (option 3, ``DRM_GPUVM_VA_WEAK_REF``): GPUVM objects whose VmBos do not
  hold their buffer, VMAs torn down at buffer free; a submit holds only VmBo references,
  which no longer keep the buffer alive, so a buffer can be freed while its VmBo is still on
  a VM's extobj / evict list: reported as a use-after-free.
* ``gpuvm_legacy_trigger``: the naive conversion (GPUVM references, teardown only at buffer
  free): every mapped buffer leaks through the cycle buffer -> VMA -> VmBo -> buffer.

A new policy is a subclass overriding a few hooks; see ``docs/policies.md``.  Everything
that takes a policy (:class:`~gpuvm.drm.device.Device`, the workloads, ``gpuvm study`` /
``flip`` / ``replay``, the :mod:`gpuvm.testing` machines) resolves it with
:func:`resolve_policy`: a built-in name, ``"module:Class"`` (imported), or the name of an
entry point in the ``gpuvm.policies`` group (a third-party package registering its
policies); anything else raises :class:`UnknownPolicy`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, ClassVar, TypeAlias

from gpuvm.core.errors import InvalidValue, UseAfterFree
from gpuvm.core.refs import OWNER, Holder
from gpuvm.drm.driver import Bo, DriverVm, Job, ManagedVa, ManagedVm
from legacy import path
from legacy.aspace import AddressSpace
from legacy.vma import KernelVm

if TYPE_CHECKING:
    from gpuvm.drm.device import Device
    from gpuvm.drm.dmabuf import DmaBuf
    from gpuvm.drm.file import DrmFile
    from gpuvm.drm.kms import Framebuffer

OwnerFn: TypeAlias = "Callable[[ManagedVa], Iterable[object]]"

__all__ = [
    "ENTRY_POINT_GROUP",
    "POLICIES",
    "GpuvmEager",
    "GpuvmLegacyTrigger",
    "GpuvmVmaRef",
    "LegacyPre617",
    "PolicyArg",
    "SeparateTracker",
    "TeardownPolicy",
    "UnknownPolicy",
    "WeakRefQuirk",
    "dangling_vm_bos",
    "known_policies",
    "make_policy",
    "policy_ref",
    "resolve_policy",
]


class TeardownPolicy:
    """The base policy: hooks with the legacy behaviour (pin maps, unpin only counts,
    nothing at handle close, VMAs die with their buffer) and the VM factories.

    Class attributes: ``name``; ``supports_vm_bind`` (False refuses VM_BIND with
    ``-EINVAL``); ``gpuvm_kernel_vms`` (kernel-managed VMs are GPUVM-backed
    :class:`~gpuvm.drm.driver.ManagedVm` instead of legacy address spaces); ``bo_owns_vmas`` and
    ``weak_refs`` (passed to those ManagedVms); ``job_holds_bos`` / ``job_holds_vm_bos``
    (what a submit holds until retire); ``default_kernel`` (the
    :mod:`~gpuvm.drm.kernels` profile a device with this policy runs under unless told).
    """

    name: ClassVar[str] = "base"
    default_kernel: ClassVar[str] = "mainline"
    supports_vm_bind: ClassVar[bool] = True
    gpuvm_kernel_vms: ClassVar[bool] = False
    bo_owns_vmas: ClassVar[bool] = True
    weak_refs: ClassVar[bool] = False
    job_holds_bos: ClassVar[bool] = True
    job_holds_vm_bos: ClassVar[bool] = False

    def __repr__(self) -> str:
        return f"<policy {self.name}>"

    # --- VM factories --------------------------------------------------------------------

    def make_kernel_vm(
        self, device: Device, *, name: str, window: tuple[int, int], tlb_kind: str, role: str
    ) -> KernelVm:
        """A kernel-managed VM of the kind this policy uses."""
        start, size = window
        if self.gpuvm_kernel_vms:
            return ManagedVm(
                start,
                size,
                name=name,
                bus=device.bus,
                tlb_kind=tlb_kind,
                role=role,
                page_size=device.page_size,
                bo_owns_vmas=self.bo_owns_vmas,
                weak_refs=self.weak_refs,
                vma_owner=self.vma_owner(device, role),
                vm_free=device.vm_freed,
                obtain_locked=device.kernel.bo_obtain_locked,
            )
        return AddressSpace(
            start,
            size,
            name=name,
            bus=device.bus,
            tlb_kind=tlb_kind,
            align=device.page_size,
            page_size=device.page_size,
            on_free=device.vm_freed,
        )

    def vma_owner(
        self, device: Device, role: str
    ) -> Callable[[ManagedVa], Iterable[object]] | None:
        """What owns a VMA of a GPUVM-backed kernel VM (for holder chains); None: the
        ManagedVm default (the buffer when ``bo_owns_vmas``, else nobody)."""
        return None

    def make_display_vm(self, device: Device) -> KernelVm:
        """The device's KMS VM (an IOMMU domain: per-page TLB invalidation)."""
        return self.make_kernel_vm(
            device,
            name=f"{device.name}.kms",
            window=device.display_window,
            tlb_kind="per_page",
            role="display",
        )

    def make_legacy_vm(self, file: DrmFile) -> KernelVm:
        """A legacy file's per-file context VM (per-process page tables)."""
        return self.make_kernel_vm(
            file.device,
            name=f"{file.name}.ctx",
            window=file.device.context_window,
            tlb_kind="context_flush",
            role="context",
        )

    def make_bind_vm(self, file: DrmFile) -> DriverVm:
        """A VM_BIND file's user-managed context VM (plain GPUVM rules)."""
        start, size = file.device.context_window
        return DriverVm(
            start,
            size,
            name=f"{file.name}.vm_bind",
            bus=file.device.bus,
            tlb_kind="context_flush",
            page_size=file.device.page_size,
            role="vm_bind",
            vm_free=file.device.vm_freed,
            obtain_locked=file.device.kernel.bo_obtain_locked,
        )

    # --- handles and dma-bufs -----------------------------------------------------------

    def on_handle_open(self, file: DrmFile, handle: int, bo: Bo) -> None:
        """A handle to ``bo`` was created in ``file`` (``gem_open``)."""

    def on_handle_close(self, file: DrmFile, handle: int, bo: Bo) -> None:
        """A handle is being closed (``gem_close``), before the PRIME cache entry and the
        handle's reference go."""

    def on_export(self, bo: Bo, dmabuf: DmaBuf) -> None:
        """``bo`` was exported as a new dma-buf."""

    def on_release(self, bo: Bo, dmabuf: DmaBuf) -> None:
        """The dma-buf exported from ``bo`` was released (before it drops ``bo``)."""

    # --- display ------------------------------------------------------------------------

    def check_fb_prepare(self, fb: Framebuffer) -> None:
        """Validation of :meth:`on_fb_prepare` (iovas fit): raise, change nothing."""
        path.plan_iovas(fb.device.require_display(), fb.bos)

    def on_fb_prepare(self, fb: Framebuffer) -> None:
        """The first prepare of ``fb`` (``msm_framebuffer_prepare``): pin its buffers in
        the display VM, mapping them if needed."""
        path.pin_all(fb.device.require_display(), fb.bos)

    def on_fb_cleanup(self, fb: Framebuffer) -> None:
        """The last cleanup of ``fb``: unpin its buffers."""
        vm = fb.device.require_display()
        for bo in fb.bos:
            path.unpin(vm, bo)

    # --- submits ------------------------------------------------------------------------

    def check_submit(self, file: DrmFile, vm: KernelVm, bos: tuple[Bo, ...]) -> None:
        """Validation of a legacy submit in ``vm`` (iovas fit)."""
        path.plan_iovas(vm, bos)

    def on_submit(self, job: Job) -> None:
        """Pin the job's buffers in its VM and take the references a submit holds."""
        vm: KernelVm = job.vm  # type: ignore[assignment]
        job.vmas = tuple(path.pin_all(vm, job.bos))
        job.pinned = True
        if job.holds_bos:
            for bo in job.bos:
                bo.get(job)
        if self.submit_vm_bos(vm, job.bos):
            vm_bos = [bo.vm_bo_for(vm) for bo in dict.fromkeys(job.bos)]
            job.vm_bos = tuple(vb for vb in vm_bos if vb is not None)
            for vm_bo in job.vm_bos:
                vm_bo.get(job)
        for bo in job.bos:
            bo.busy += 1

    def on_retire(self, job: Job) -> None:
        """Unpin and drop the job's references (``msm_submit_retire``)."""
        vm: KernelVm = job.vm  # type: ignore[assignment]
        for bo in job.bos:
            bo.busy -= 1
        for bo in job.bos:
            if bo.freed:
                job_device(job).report(
                    f"use-after-free: retire of {job!r} touches freed {bo!r} "
                    f"(its VMA in {vm.name} died with it)"
                )
                continue
            vma = vm.vma_of(bo) if job.pinned else None
            if vma is not None and (not job.vmas or vma in job.vmas):
                path.unpin(vm, bo)  # not a VMA made after SET_IOVA 0 deleted the job's
        if job.holds_bos:
            for bo in job.bos:
                bo.put(job)
        for vm_bo in job.vm_bos:
            vm_bo.put(job)

    def submit_vm_bos(self, vm: KernelVm, bos: tuple[Bo, ...]) -> bool:
        """Whether a submit in ``vm`` holds VmBo references."""
        return self.job_holds_vm_bos and isinstance(vm, ManagedVm)

    # --- lifetimes ----------------------------------------------------------------------

    def on_bo_free(self, bo: Bo) -> None:
        """``bo`` was freed; its legacy VMAs are already gone."""

    def close_kernel_vm(self, vm: KernelVm) -> None:
        """Drop the owner's reference to a kernel-managed VM (file or device close).  A VM
        that keeps the legacy trigger only drops its reference (its VMAs die with their
        buffers); a GPUVM-backed one with explicit teardown closes every VMA first."""
        if isinstance(vm, ManagedVm) and not vm.bo_owns_vmas:
            vm.close()
        elif isinstance(vm, ManagedVm | AddressSpace):
            vm.put(OWNER)

    def on_file_close(self, file: DrmFile) -> None:
        """``postclose``: close the file's context VM."""
        vm = file.vm
        if vm is None:
            return
        if isinstance(vm, ManagedVm) or not isinstance(vm, DriverVm):
            self.close_kernel_vm(vm)
        else:
            vm.close()

    def audit(self, device: Device) -> list[str]:
        """Lifetime problems this policy can detect in ``device`` right now."""
        return []


def job_device(job: Job) -> Device:
    from gpuvm.drm.file import DrmFile

    assert isinstance(job.file, DrmFile)
    return job.file.device


# --- built-in policies ------------------------------------------------------------------


class LegacyPre617(TeardownPolicy):
    """msm before 6.17: the buffer owns its VMAs; handle close does nothing; the VMA is
    unmapped and destroyed only when the buffer is freed.  No VM_BIND."""

    name = "legacy_pre_6_17"
    default_kernel = "msm-pre-6.17"
    supports_vm_bind = False


class SeparateTracker(TeardownPolicy):
    """Option 2: legacy files and the display keep the legacy tracker (never touching GPUVM
    objects); VM_BIND files use GPUVM with its own rules."""

    name = "separate_tracker"


class _GpuvmExplicit(TeardownPolicy):
    """GPUVM-backed kernel VMs with hard references and explicit teardown points; legacy
    contexts drop a buffer's VMA when the file's last handle to it closes, after waiting
    for the buffer to go idle (``msm_gem_close``)."""

    gpuvm_kernel_vms = True
    bo_owns_vmas = False
    job_holds_vm_bos = True

    def vma_owner(
        self, device: Device, role: str
    ) -> Callable[[ManagedVa], Iterable[object]] | None:
        if role == "display":
            return lambda va: _display_owners(device, va)
        return lambda va: _handle_owners(device, va)

    def on_handle_close(self, file: DrmFile, handle: int, bo: Bo) -> None:
        """``msm_gem_close``: with a legacy context VM, wait for every fence of the buffer
        (``dma_resv_wait_timeout`` on ``DMA_RESV_USAGE_BOOKKEEP``) whether or not this file
        maps it, then drop the file's VMA (``put_iova_spaces(close)``), at every handle
        close: another handle of the same file to the buffer does not keep it."""
        vm = file.vm
        if not isinstance(vm, ManagedVm):
            return
        file.device.wait_idle(bo)
        if vm.vma_of(bo) is None:
            return
        path.close_vma(vm, bo)


def _handle_owners(device: Device, va: ManagedVa) -> list[object]:
    return [
        Holder(f"handle {h}", who=f)
        for f in device.files
        if f.vm is va.vm
        for h, b in f.handles.items()
        if b is va.obj
    ]


def _display_owners(device: Device, va: ManagedVa) -> list[object]:
    obj = va.obj
    if isinstance(obj, Bo) and obj.vma_ref.total:
        return list(obj.vma_ref.holders)
    return [fb for fb in device.framebuffers if obj in fb.bos and fb.prepare_count]


class GpuvmEager(_GpuvmExplicit):
    """The intermediate commits (option 1 done naively): the display VMA is created and
    mapped at the first framebuffer prepare and unmapped and destroyed when its last pin
    goes: one map and one unmap per flip in every scenario."""

    name = "gpuvm_eager"
    default_kernel = "msm-pre-vma-ref"

    def on_fb_cleanup(self, fb: Framebuffer) -> None:
        """``msm_framebuffer_cleanup`` -> ``msm_gem_unpin_iova`` per plane.  Before
        3bebfd53af0f (``unpin_detaches_vm``, msm_gem.c of that series) the unpin is followed
        by ``detach_vm``, which unmaps and closes the buffer's display VMA unconditionally:
        with two framebuffers over one buffer, the other one's scanout loses its mapping
        (the lifetime checker reports ``unmapped-scanout``) and a plane whose VMA is gone
        is not unpinned again (``if (vma)``).  Other profiles keep the VMA until its last
        pin goes."""
        vm = fb.device.require_display()
        eager = fb.device.kernel.unpin_detaches_vm
        for bo in fb.bos:
            if eager:
                if vm.vma_of(bo) is None:  # a plane whose VMA an earlier detach closed
                    continue
                vma = path.unpin(vm, bo)
                vma.pin_count = 0  # detach_vm: the other pins do not stop it
                path.close_vma(vm, bo)
                continue
            vma = path.unpin(vm, bo)
            if vma.pin_count == 0:
                path.close_vma(vm, bo)


class GpuvmVmaRef(_GpuvmExplicit):
    """msm 6.17: ``vma_ref`` per buffer, raised by each handle (``msm_gem_open``), each
    dma-buf export and each framebuffer prepare, dropped by their ends (a submit takes none:
    ``submit_pin_objects`` holds the buffer and its vm_bo only); the display VMA is unmapped and
    destroyed when it reaches 0.  Legacy contexts drop a VMA at handle close; VM_BIND
    contexts follow GPUVM."""

    name = "gpuvm_vma_ref"

    def vma_get(self, bo: Bo, holder: object) -> None:
        """``msm_gem_vma_get``."""
        bo.vma_ref.get(holder)

    def vma_put(self, bo: Bo, holder: object) -> None:
        """``msm_gem_vma_put``: at zero, tear the display VMA down."""
        if bo.vma_ref.put(holder):
            return
        device = _device_of(bo)
        vm = device.display_vm if device is not None else None
        if vm is not None and not bo.freed:
            path.close_vma(vm, bo)

    def on_handle_open(self, file: DrmFile, handle: int, bo: Bo) -> None:
        self.vma_get(bo, Holder(f"handle {handle}", who=file))

    def on_handle_close(self, file: DrmFile, handle: int, bo: Bo) -> None:
        self.vma_put(bo, Holder(f"handle {handle}", who=file))
        super().on_handle_close(file, handle, bo)

    def on_export(self, bo: Bo, dmabuf: DmaBuf) -> None:
        self.vma_get(bo, dmabuf)

    def on_release(self, bo: Bo, dmabuf: DmaBuf) -> None:
        self.vma_put(bo, dmabuf)

    def on_fb_prepare(self, fb: Framebuffer) -> None:
        super().on_fb_prepare(fb)
        for bo in fb.bos:
            self.vma_get(bo, fb)

    def on_fb_cleanup(self, fb: Framebuffer) -> None:
        super().on_fb_cleanup(fb)
        for bo in fb.bos:
            self.vma_put(bo, fb)


def _device_of(bo: Bo) -> Device | None:
    from gpuvm.drm.device import Device

    return bo.device if isinstance(bo.device, Device) else None


class WeakRefQuirk(TeardownPolicy):
    """Option 3 (``DRM_GPUVM_VA_WEAK_REF``, rejected): GPUVM-backed kernel VMs whose VmBos
    do not hold their buffer, with the legacy teardown at buffer free.  Flips cost what they
    cost before 6.17, but a VmBo reference no longer keeps a buffer alive: a submit holding
    VmBo references (as GPUVM drivers do) lets the buffer be freed under it, leaving a VmBo
    with a dead buffer on the extobj / evict list.  :meth:`audit` and :meth:`on_bo_free`
    report it; the next submit that would walk those lists raises
    :class:`~gpuvm.core.errors.UseAfterFree`."""

    name = "weak_ref_quirk"
    gpuvm_kernel_vms = True
    bo_owns_vmas = True
    weak_refs = True
    job_holds_bos = False
    job_holds_vm_bos = True

    def on_bo_free(self, bo: Bo) -> None:
        device = _device_of(bo)
        if device is None:
            return
        for line in _dangling_of(bo):
            device.report(line)

    def check_submit(self, file: DrmFile, vm: KernelVm, bos: tuple[Bo, ...]) -> None:
        if isinstance(vm, ManagedVm):
            bad = dangling_vm_bos(vm)
            if bad:
                raise UseAfterFree(
                    f"submit on {vm.name} would lock and validate freed buffers: " + "; ".join(bad)
                )
        super().check_submit(file, vm, bos)

    def audit(self, device: Device) -> list[str]:
        out: list[str] = []
        for vm in device.live_vms:
            if isinstance(vm, ManagedVm):
                out += dangling_vm_bos(vm)
        return out


def _dangling_of(bo: Bo) -> list[str]:
    out = []
    for vm_bo in bo.vm_bos:
        if vm_bo.freed:
            continue
        lists = [
            n for n, lst in (("extobj", vm_bo.vm.extobj), ("evict", vm_bo.vm.evict)) if vm_bo in lst
        ]
        held = ", ".join(str(h) for h in vm_bo.refs.holders)
        where = " and ".join(lists) or "no"
        out.append(
            f"use-after-free: {bo!r} freed while {vm_bo!r} (held by {held}) is still on "
            f"{vm_bo.vm.name}'s {where} list"
        )
    return out


def dangling_vm_bos(vm: ManagedVm | DriverVm) -> list[str]:
    """Every VmBo on ``vm``'s extobj or evict list whose buffer is freed: what
    ``drm_gpuvm_exec_lock`` / ``drm_gpuvm_validate`` would dereference after free."""
    out = []
    for name, lst in (("extobj", vm.extobj), ("evict", vm.evict)):
        for vm_bo in lst:
            if vm_bo.obj.freed:
                out.append(f"{vm_bo!r} on {vm.name}'s {name} list points at freed {vm_bo.obj!r}")
    return out


class GpuvmLegacyTrigger(TeardownPolicy):
    """The naive conversion: GPUVM-backed kernel VMs with hard references, but VMAs still
    torn down only at buffer free.  A mapped buffer can never be freed (its VMA's VmBo holds
    it): the cycle buffer -> VMA -> VmBo -> buffer leaks every mapped buffer and its VMs."""

    name = "gpuvm_legacy_trigger"
    gpuvm_kernel_vms = True
    bo_owns_vmas = True
    job_holds_vm_bos = True


POLICIES: Mapping[str, type[TeardownPolicy]] = {
    p.name: p
    for p in (
        LegacyPre617,
        GpuvmEager,
        GpuvmVmaRef,
        WeakRefQuirk,
        SeparateTracker,
        GpuvmLegacyTrigger,
    )
}
"""The built-in policies by name."""


ENTRY_POINT_GROUP = "gpuvm.policies"
"""The entry-point group third-party packages register policies in: ``name = "pkg.mod:Cls"``
under ``[project.entry-points."gpuvm.policies"]``."""

PolicyArg: TypeAlias = "str | TeardownPolicy | type[TeardownPolicy]"


class UnknownPolicy(InvalidValue, ValueError):
    """A policy that cannot be resolved: an unknown name, a ``module:Class`` that does not
    import or is not a :class:`TeardownPolicy` subclass (``-EINVAL``).  The one exception
    every command and API raises for it (also a ``ValueError``, as before)."""


@functools.cache
def _entry_points() -> Mapping[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def known_policies() -> list[str]:
    """The built-in names, then the names registered in the ``gpuvm.policies`` group."""
    return [*POLICIES, *(n for n in sorted(_entry_points()) if n not in POLICIES)]


def _check_class(obj: object, what: str) -> type[TeardownPolicy]:
    if not (isinstance(obj, type) and issubclass(obj, TeardownPolicy)):
        raise UnknownPolicy(f"policy {what!r} is {obj!r}, not a TeardownPolicy subclass")
    return obj


def _import_class(ref: str) -> type[TeardownPolicy]:
    module, _, qualname = ref.partition(":")
    if not module or not qualname:
        raise UnknownPolicy(f"policy {ref!r}: expected module:Class")
    try:
        obj: object = importlib.import_module(module)
    except ImportError as exc:
        raise UnknownPolicy(f"policy {ref!r}: cannot import {module!r} ({exc})") from None
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UnknownPolicy(f"policy {ref!r}: {module!r} has no {qualname!r}") from None
    return _check_class(obj, ref)


def resolve_policy(policy: PolicyArg) -> type[TeardownPolicy] | TeardownPolicy:
    """The policy class ``policy`` names (an instance is returned as is): a built-in name
    (:data:`POLICIES`), ``"module:Class"`` (imported; ``Class`` may be dotted), or an entry
    point of the ``gpuvm.policies`` group.  Raises :class:`UnknownPolicy` otherwise."""
    if isinstance(policy, TeardownPolicy):
        return policy
    if isinstance(policy, type):
        return _check_class(policy, getattr(policy, "__name__", str(policy)))
    if not isinstance(policy, str):
        raise UnknownPolicy(f"a policy is a name, a class or an instance, got {policy!r}")
    if policy in POLICIES:
        return POLICIES[policy]
    if ":" in policy:
        return _import_class(policy)
    ep = _entry_points().get(policy)
    if ep is not None:
        try:
            loaded = ep.load()
        except Exception as exc:
            raise UnknownPolicy(f"policy {policy!r}: entry point {ep.value!r}: {exc}") from None
        return _check_class(loaded, f"{policy} = {ep.value}")
    raise UnknownPolicy(
        f"unknown policy {policy!r}; known: {', '.join(known_policies())} "
        "(or module:Class for your own)"
    )


def policy_ref(policy: PolicyArg) -> str:
    """A string that :func:`resolve_policy` turns back into ``policy``'s class: the
    built-in or entry-point name as given, else ``module:Class``.  What study rows and
    traces record, so another process (a Dask worker, ``gpuvm replay``) can rebuild it."""
    if isinstance(policy, str):
        resolve_policy(policy)
        return policy
    cls = type(policy) if isinstance(policy, TeardownPolicy) else _check_class(policy, str(policy))
    builtin = POLICIES.get(cls.name)
    if builtin is cls:
        return cls.name
    return f"{cls.__module__}:{cls.__qualname__}"


def make_policy(policy: PolicyArg) -> TeardownPolicy:
    """A policy instance from a name (see :func:`resolve_policy`), a class or an instance;
    an unresolvable one raises :class:`UnknownPolicy`."""
    found = resolve_policy(policy)
    return found if isinstance(found, TeardownPolicy) else found()
