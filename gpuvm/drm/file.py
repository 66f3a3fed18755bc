"""DRM files (``struct drm_file``): the handle table, the PRIME cache, the path chosen once
per file, and the ioctl-level API.

A :class:`DrmFile` belongs to a :class:`~gpuvm.drm.device.Device` and to a process's
:class:`~gpuvm.drm.dmabuf.FdTable`.  Its ioctls are methods; each emits an
:class:`~gpuvm.core.events.Ioctl` event, validates everything first (mode table, handles, fds,
iova allocation) and only then changes the model, so a refused call leaves it unchanged.
The per-file context VM is created lazily by the first call that needs it: a
kernel-managed VM (legacy address space or GPUVM-backed, by policy) for a legacy file, a
user-managed ``GpuVm`` for a VM_BIND file.

Handle close (``drm_gem_object_release_handle``): the policy's ``on_handle_close``
(``msm_gem_close``), then the PRIME cache entry goes, then the buffer's handle count drops
(at zero its ``obj->dma_buf`` reference goes, breaking the export cycle, then the one
buffer reference all handles share: ``drm_gem_object_handle_put_unlocked``).  File close
(``drm_file_free``): framebuffers removed (planes showing them disabled), the file's jobs
waited for, every handle closed, then the context VM closed.
"""

from __future__ import annotations

import errno
import itertools
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import attrs

from gpuvm.core.args import (
    check_fd,
    check_handle,
    check_instance,
    check_optional,
    check_sequence,
    check_u32,
)
from gpuvm.core.errors import (
    ArgumentTypeError,
    BadFd,
    BadHandle,
    Busy,
    ContextUnusable,
    DuplicateObject,
    InvalidRange,
    InvalidValue,
    ModeError,
    NotModelled,
    NotSupported,
)
from gpuvm.core.events import Ioctl
from gpuvm.core.ops import MapRequest, UnmapRequest
from gpuvm.core.refs import Holder
from gpuvm.core.u64 import check_u64
from gpuvm.drm import kms
from gpuvm.drm.dmabuf import revalidate_import
from gpuvm.drm.driver import Bo, DriverVm, Job, ManagedVm
from gpuvm.drm.modes import ModeState, Rule
from gpuvm.drm.private import check_pinnable
from legacy import path
from legacy.vma import KernelVm

if TYPE_CHECKING:
    from gpuvm.drm.device import Device
    from gpuvm.drm.dmabuf import DmaBuf, FdTable
    from gpuvm.drm.kms import Framebuffer, Plane

__all__ = ["BindMap", "BindUnmap", "DrmFile", "handle_holder"]

_ids = itertools.count(1)

MAX_SUBMIT_BOS = 1 << 17
"""The longest BO table a submit may carry, refused with ``-EINVAL`` before any lookup: the
bound ``etnaviv_ioctl_gem_submit`` puts on ``nr_bos`` (``SZ_128K``); the model uses it for
every flavour so a huge list costs nothing."""

MAX_BIND_OPS = 1 << 17
"""The most ops one VM_BIND may carry (the model's bound, the same as for a submit's BO
table): a huge list is refused before any request is built."""


def handle_holder(file: DrmFile, handle: int) -> Holder:
    """A handle as a holder: of its ``vma_ref`` (``msm_gem_open`` runs per handle) and, in
    explanations, of the one buffer reference all handles share (``Bo.handle_ref``)."""
    return Holder(f"handle {handle}", who=file)


@attrs.frozen(slots=True)
class BindMap:
    """A VM_BIND MAP op: map ``handle`` from ``offset`` at ``[addr, addr+range)``;
    ``handle=None`` is a MAP_NULL (sparse) op."""

    addr: int
    range: int
    handle: int | None = None
    offset: int = 0


@attrs.frozen(slots=True)
class BindUnmap:
    """A VM_BIND UNMAP op over ``[addr, addr+range)``."""

    addr: int
    range: int


class DrmFile:
    """One open of the device node.  ``handles`` maps handles to buffers,
    ``handle_counts`` counts this file's handles per buffer, ``prime_cache`` maps each
    dma-buf to its one handle here, ``mode`` is None until the first path-deciding call,
    then ``"legacy"`` or ``"vm_bind"``; ``vm`` is the lazily created context VM."""

    __slots__ = (
        "closed",
        "device",
        "fbs",
        "fds",
        "handle_counts",
        "handles",
        "id",
        "mode",
        "name",
        "prime_cache",
        "vm",
        "vms",
    )

    def __init__(self, device: Device, fds: FdTable, name: str = "") -> None:
        self.device = device
        self.fds = fds
        self.id = next(_ids)
        self.name = name or f"{device.name}.file{self.id}"
        self.handles: dict[int, Bo] = {}
        self.handle_counts: dict[Bo, int] = {}
        self.prime_cache: dict[DmaBuf, int] = {}
        self.mode: str | None = None
        self.vm: KernelVm | DriverVm | None = None
        self.fbs: dict[int, Framebuffer] = {}
        self.vms: dict[int, DriverVm] = {}
        """xe's per-file VM table (``xef->vm.xa``: ids from 1), :mod:`gpuvm.drm.xe`."""
        self.closed = False

    def __repr__(self) -> str:
        return f"DrmFile({self.name})" + (" (closed)" if self.closed else "")

    def keepers(self) -> Iterable[object]:
        """An open file is a root (the process holds it)."""
        return ()

    # --- state ---------------------------------------------------------------------------

    @property
    def state(self) -> ModeState:
        if self.mode is None:
            return ModeState.FRESH
        if self.mode == "legacy":
            return ModeState.LEGACY
        return ModeState.BIND if self.vm is not None else ModeState.BIND_PENDING

    def bo(self, handle: int) -> Bo:
        """The buffer behind ``handle`` (``-ENOENT`` if not open here)."""
        bo = self.handles.get(handle)
        if bo is None:
            raise BadHandle(f"handle {handle} is not open in {self.name}")
        return bo

    def handle_of(self, bo: Bo) -> int | None:
        """The lowest handle of ``bo`` in this file, if any."""
        for h, b in sorted(self.handles.items()):
            if b is bo:
                return h
        return None

    def _ioctl(self, name: str) -> None:
        bus = self.device.bus
        if bus.route[Ioctl]:
            bus.emit(Ioctl(name, self))
        if self.closed:
            raise BadFd(f"{name} on closed {self.name}")

    def _gate(self, call: str) -> Rule:
        """The mode table's verdict for ``call``; raises :class:`ModeError` if refused."""
        rule = self.device.flavour.rule(self.state, call)
        if not rule.allowed:
            raise ModeError(
                f"{call} on {self.name} ({self.state.value}): {rule.reason}", errno=rule.errno
            )
        return rule

    def _vm_for(self, rule: Rule) -> KernelVm | DriverVm | None:
        """The context VM the call will use: the existing one, or a new (not yet attached)
        one when the rule moves the file into a state with a VM."""
        if self.vm is not None:
            return self.vm
        if rule.to is ModeState.LEGACY:
            return self.device.policy.make_legacy_vm(self)
        if rule.to is ModeState.BIND:
            return self.device.policy.make_bind_vm(self)
        return None

    def _enter(self, rule: Rule, vm: KernelVm | DriverVm | None) -> None:
        """Apply the rule's state change (validation is over)."""
        to = rule.to
        if to is None:
            return
        if to is ModeState.BIND_PENDING:
            self.mode = "vm_bind"
            return
        self.mode = "legacy" if to is ModeState.LEGACY else "vm_bind"
        if self.vm is None and vm is not None:
            self.vm = vm
            self.device.vm_created(vm)

    # --- handles -------------------------------------------------------------------------

    def _new_handle(self, bo: Bo) -> int:
        h = 1
        while h in self.handles:
            h += 1
        if bo.handle_count == 0:  # drm_gem_handle_create_tail: one reference for all handles
            bo.get(bo.handle_ref)
        self.handles[h] = bo
        self.handle_counts[bo] = self.handle_counts.get(bo, 0) + 1
        bo.handle_count += 1
        self.device.policy.on_handle_open(self, h, bo)
        return h

    def create_bo(self, size: int, name: str = "") -> int:
        """``GEM_NEW``: a new buffer of ``size`` bytes; returns its handle."""
        self._ioctl("GEM_NEW")
        check_u64("size", size)
        check_instance("name", name, str)
        if size == 0:
            raise InvalidValue("GEM_NEW with size 0")
        rule = self._gate("gem_new")
        vm = self._vm_for(rule)
        self._enter(rule, vm)
        bo = self.device.new_bo(size, name)
        h = self._new_handle(bo)
        bo.put()
        return h

    def gem_close(self, handle: int) -> None:
        """``GEM_CLOSE`` (``drm_gem_handle_delete``: an unknown handle is ``-EINVAL``)."""
        self._ioctl("GEM_CLOSE")
        check_handle("handle", handle)
        if handle not in self.handles:
            raise BadHandle(f"GEM_CLOSE of unknown handle {handle}", errno=errno.EINVAL)
        self._close_handle(handle)

    def _close_handle(self, handle: int) -> None:
        bo = self.handles[handle]
        self.device.policy.on_handle_close(self, handle, bo)
        for d, h in list(self.prime_cache.items()):
            if h == handle:
                del self.prime_cache[d]
                d.put(Holder("prime cache", who=self))
        del self.handles[handle]
        n = self.handle_counts[bo] - 1
        if n:
            self.handle_counts[bo] = n
        else:
            del self.handle_counts[bo]
        bo.handle_count -= 1
        if bo.handle_count == 0:
            for name, named in list(self.device.flink_names.items()):
                if named is bo:  # drm_gem_object_handle_free: the flink name goes
                    del self.device.flink_names[name]
        if bo.handle_count == 0 and bo.dma_buf is not None:
            from gpuvm.drm.dmabuf import dma_buf_holder

            d = bo.dma_buf
            bo.dma_buf = None
            d.put(dma_buf_holder(bo))
        if bo.handle_count == 0:  # drm_gem_object_handle_put_unlocked: the handles' reference
            bo.put(bo.handle_ref)

    # --- global names --------------------------------------------------------------------

    def gem_flink(self, handle: int) -> int:
        """``GEM_FLINK`` (``drm_gem_flink_ioctl``): the buffer's global name, allocated once
        per buffer (lowest free id from 1 in ``object_name_idr``); it holds no reference and
        goes when the buffer's last handle closes.  An unknown handle is ``-ENOENT``."""
        self._ioctl("GEM_FLINK")
        bo = self.bo(handle)
        names = self.device.flink_names
        for name, named in names.items():
            if named is bo:
                return name
        name = 1
        while name in names:
            name += 1
        names[name] = bo
        return name

    def gem_open(self, name: int) -> tuple[int, int]:
        """``GEM_OPEN`` (``drm_gem_open_ioctl``): a NEW handle to the buffer with global
        ``name`` (no reuse of an existing handle, unlike PRIME's cache) and its size; an
        unknown name is ``-ENOENT``."""
        self._ioctl("GEM_OPEN")
        bo = self.device.flink_names.get(name)
        if bo is None or bo.freed:
            raise BadHandle(f"GEM_OPEN of unknown name {name}")
        h = self._new_handle(bo)
        return h, bo.size

    # --- PRIME ---------------------------------------------------------------------------

    def prime_handle_to_fd(self, handle: int, flags: int = 0) -> int:
        """``PRIME_HANDLE_TO_FD``: export (or re-export) the buffer; a new fd in this file's
        process."""
        from gpuvm.drm import prime

        self._ioctl("PRIME_HANDLE_TO_FD")
        check_handle("handle", handle)
        check_u32("flags", flags)
        return prime.handle_to_fd(self, handle, flags)

    def prime_fd_to_handle(self, fd: int, flags: int = 0) -> int:
        """``PRIME_FD_TO_HANDLE``: the cached handle, the exporter's own buffer
        (self-import) or a new buffer around an attachment (foreign import); ``flags``:
        ``prime.DRM_PRIME_FD_TO_HANDLE_NO_MOVE`` (the 2024 RFC)."""
        from gpuvm.drm import prime

        self._ioctl("PRIME_FD_TO_HANDLE")
        check_fd("fd", fd)
        check_u32("flags", flags)
        return prime.fd_to_handle(self, fd, flags)

    # --- mode choice ---------------------------------------------------------------------

    def set_param_vm_bind(self) -> None:
        """msm ``SET_PARAM(MSM_PARAM_EN_VM_BIND, 1)``: only before the context VM exists."""
        self._ioctl("SET_PARAM")
        if not self.device.policy.supports_vm_bind:
            raise ModeError(f"{self.device.policy.name} has no VM_BIND", errno=errno.EINVAL)
        if not self.device.kernel.msm_vm_bind:
            raise ModeError(
                f"kernel {self.device.kernel.name}: adreno_set_param has no EN_VM_BIND",
                errno=errno.EINVAL,
            )
        if not self.device.per_process_pgtables:
            raise ModeError("VM_BIND requires per-process pgtables", errno=errno.EINVAL)
        rule = self._gate("en_vm_bind")
        self._enter(rule, None)

    def vm_init(self) -> None:
        """nouveau ``VM_INIT``: create the user-managed VM (``-ENOSYS`` once a legacy call
        disabled it)."""
        self._ioctl("VM_INIT")
        if not self.device.policy.supports_vm_bind:
            raise ModeError(f"{self.device.policy.name} has no VM_BIND", errno=errno.ENOSYS)
        rule = self._gate("vm_init")
        self._enter(rule, self._vm_for(rule))

    def channel_alloc(self) -> None:
        """nouveau ``CHANNEL_ALLOC`` (a legacy-only call when made before VM_INIT)."""
        self._ioctl("CHANNEL_ALLOC")
        rule = self._gate("channel_alloc")
        self._enter(rule, self._vm_for(rule))

    def get_param(self) -> None:
        """msm ``GET_PARAM``: any parameter; creates the context VM if needed."""
        self._ioctl("GET_PARAM")
        rule = self._gate("get_param")
        self._enter(rule, self._vm_for(rule))

    # --- legacy iova ---------------------------------------------------------------------

    def _legacy_vm(self, rule: Rule) -> KernelVm:
        vm = self._vm_for(rule)
        if vm is None or (isinstance(vm, DriverVm) and not isinstance(vm, ManagedVm)):
            raise AssertionError(f"{self.name}: legacy call without a kernel-managed VM")
        return vm

    def get_iova(self, handle: int) -> int:
        """msm ``GEM_INFO(GET_IOVA)``: the buffer's iova in the context VM, allocated lazily
        (nothing is mapped)."""
        self._ioctl("GEM_INFO")
        check_handle("handle", handle)
        bo = self.bo(handle)
        rule = self._gate("get_iova")
        vm = self._legacy_vm(rule)
        existing = vm.vma_of(bo)
        if existing is None:
            path.plan_iovas(vm, [bo])
        self._enter(rule, vm)
        return path.get_iova(vm, bo).addr

    def set_iova(self, handle: int, iova: int) -> None:
        """msm ``GEM_INFO(SET_IOVA)``: place the buffer at a chosen iova (0 deletes its VMA)."""
        self._ioctl("GEM_INFO")
        check_handle("handle", handle)
        check_u64("iova", iova)
        bo = self.bo(handle)
        rule = self._gate("set_iova")
        if not self.device.per_process_pgtables:
            raise NotSupported("SET_IOVA requires per-process pgtables")
        vm = self._legacy_vm(rule)
        _check_set_iova(vm, bo, iova)
        self._enter(rule, vm)
        path.set_iova(vm, bo, iova)

    # --- VM_BIND -------------------------------------------------------------------------

    def vm_bind(self, ops: Sequence[BindMap | BindUnmap]) -> None:
        """``VM_BIND``: MAP / MAP_NULL / UNMAP ops applied in order, all or nothing.  Every
        op is validated before anything changes, in the flavour's order (msm
        ``vm_bind_job_lookup_ops``: ``lookup_op`` alignment and range checks for all ops,
        then the handles, then ``obj_offset + range`` against the buffer's size on a kernel
        that checks it; nouveau: the handles, then ``bind_validate_op``), then the whole
        array is dry-run against the VM."""
        self._ioctl("VM_BIND")
        _check_bind_args(ops)
        if not self.device.policy.supports_vm_bind:
            raise ModeError(f"{self.device.policy.name} has no VM_BIND", errno=errno.EINVAL)
        rule = self._gate("vm_bind")
        for op in ops:
            if not isinstance(op, BindMap | BindUnmap):
                raise InvalidValue(f"not a VM_BIND op: {op!r}")
        vm = self._vm_for(rule)
        assert isinstance(vm, DriverVm) and not vm.kernel_managed
        _check_usable(vm, "VM_BIND")
        reqs = self._bind_requests(vm, ops)
        _check_bind(vm, reqs)
        self._enter(rule, vm)
        vm.bind(reqs)

    def _lookup(self, handle: int, call: str, index: int) -> Bo:
        """A handle of a BO table or bind array (the flavour's errno if unknown)."""
        bo = self.handles.get(handle)
        if bo is None:
            raise BadHandle(
                f"{call}: invalid handle {handle} at index {index}",
                errno=self.device.flavour.bad_handle_errno(call),
            )
        return bo

    def _op_bo(self, op: BindMap | BindUnmap, index: int) -> Bo | None:
        """The buffer a bind op names (MAP with a handle), looked up the flavour's way."""
        if isinstance(op, BindMap) and op.handle is not None:
            return self._lookup(op.handle, "vm_bind", index)
        return None

    def _bind_requests(
        self, vm: DriverVm, ops: Sequence[BindMap | BindUnmap]
    ) -> list[MapRequest | UnmapRequest]:
        """Validate a bind array the flavour's way and turn it into core requests."""
        flavour = self.device.flavour.name
        page = vm.page_size
        if flavour == "nouveau":
            objs = [self._op_bo(op, i) for i, op in enumerate(ops)]
            for i, op in enumerate(ops):
                obj = objs[i]
                if obj is not None and isinstance(op, BindMap):
                    size = _kernel_size(obj, page)
                    if op.offset % page or size <= op.offset or op.range > size - op.offset:
                        raise InvalidRange(f"bind_validate_op: op {i} {op!r} outside {obj!r}")
                _validate_range(vm, op, i, "nouveau_uvmm_validate_range")
        else:
            for i, op in enumerate(ops):
                if isinstance(op, BindMap) and op.offset % page:
                    raise InvalidRange(f"lookup_op: op {i}: invalid bo_offset {op.offset:#x}")
                _validate_range(vm, op, i, "lookup_op")
            objs = [self._op_bo(op, i) for i, op in enumerate(ops)]
            if self.device.kernel.bind_checks_bo_range:
                for i, op in enumerate(ops):
                    obj = objs[i]
                    if not isinstance(op, BindMap) or obj is None:
                        continue
                    if op.range + op.offset > _kernel_size(obj, page):
                        raise InvalidRange(
                            f"vm_bind_job_lookup_ops: op {i}: {op.range:#x} + "
                            f"{op.offset:#x} > size of {obj!r}"
                        )
        reqs: list[MapRequest | UnmapRequest] = []
        for op, obj in zip(ops, objs, strict=True):
            if isinstance(op, BindMap):
                reqs.append(MapRequest(op.addr, op.range, obj, op.offset))
            else:
                reqs.append(UnmapRequest(op.addr, op.range))
        return reqs

    # --- submits -------------------------------------------------------------------------

    def submit(self, handles: Sequence[int]) -> Job:
        """A legacy ``SUBMIT`` (nouveau ``PUSHBUF``) with a BO table: every buffer is pinned
        (mapped if needed) in the context VM until the job retires."""
        self._ioctl("SUBMIT")
        for h in check_sequence("handles", handles, MAX_SUBMIT_BOS):
            check_handle("handle", h)
        bos = self._bo_table(handles)
        rule = self._gate("submit")
        for bo in bos:
            if bo.purged:
                raise Busy(f"submit of purged {bo!r}")
            check_pinnable(bo, "SUBMIT")
        vm = self._legacy_vm(rule)
        policy = self.device.policy
        policy.check_submit(self, vm, bos)
        self._enter(rule, vm)
        job = Job(self, vm, bos, holds_bos=policy.job_holds_bos)
        policy.on_submit(job)
        self.device.jobs.append(job)
        return job

    def _bo_table(self, handles: Sequence[int]) -> tuple[Bo, ...]:
        """A submit's BO table: every handle looked up (msm ``submit_lookup_objects``, the
        flavour's errno), and no buffer twice (msm ``submit_lock_objects``: ``drm_exec``
        without ``DRM_EXEC_IGNORE_DUPLICATES``, ``-EALREADY``; nouveau ``validate_init``:
        ``-EINVAL``, found while looking up, in table order)."""
        flavour = self.device.flavour
        seen: dict[Bo, int] = {}
        bos: list[Bo] = []
        dup: tuple[int, Bo] | None = None
        for i, h in enumerate(handles):
            bo = self._lookup(h, "submit", i)
            if bo in seen and dup is None:
                dup = (i, bo)
                if flavour.name == "nouveau":
                    break
            seen.setdefault(bo, i)
            bos.append(bo)
        if dup is not None:
            i, bo = dup
            raise DuplicateObject(
                f"SUBMIT: {bo!r} at index {i} is already at index {seen[bo]}",
                errno=flavour.duplicate_errno,
            )
        return tuple(bos)

    def exec(self) -> Job:
        """A VM_BIND-mode submit (msm SUBMIT on a VM_BIND queue, nouveau ``EXEC``): lock the
        VM and its external objects and re-map evicted buffers (``drm_gpuvm_validate``); an
        imported buffer's dma-buf attachment is mapped again first, as the importer's
        validate does after ``move_notify`` (:func:`gpuvm.drm.dmabuf.revalidate_import`)."""
        self._ioctl("EXEC")
        rule = self._gate("exec")
        vm = self._vm_for(rule)
        assert isinstance(vm, DriverVm) and not vm.kernel_managed
        _check_usable(vm, "SUBMIT")
        self._enter(rule, vm)
        vm.exec_lock()
        vm.validate(revalidate_import)
        job = Job(self, vm, (), holds_bos=False)
        vm.get(job)
        self.device.jobs.append(job)
        return job

    # --- KMS -----------------------------------------------------------------------------

    def _kms(self, name: str) -> None:
        """The KMS ioctl ``name``: refused on an xe device, whose display is not modelled."""
        self._ioctl(name)
        if self.device.flavour.name.startswith("xe"):
            raise NotModelled(f"{name} on {self.name}: xe's display (KMS) is not modelled")

    def add_fb(self, *handles: int) -> Framebuffer:
        """``ADDFB2``: a framebuffer over one buffer per plane (it holds each buffer)."""
        self._kms("ADDFB2")
        return kms.add_fb(self, handles)

    def rm_fb(self, fb: Framebuffer) -> None:
        """``RMFB``: remove the framebuffer, disabling any plane that shows it."""
        self._kms("RMFB")
        check_instance("fb", fb, kms.Framebuffer)
        kms.rm_fb(self, fb, disable=True)

    def close_fb(self, fb: Framebuffer) -> None:
        """``CLOSEFB``: drop this file's framebuffer, leaving planes showing it alone."""
        self._kms("CLOSEFB")
        check_instance("fb", fb, kms.Framebuffer)
        kms.rm_fb(self, fb, disable=False)

    def page_flip(self, plane: Plane, fb: Framebuffer | None) -> None:
        """An atomic commit of one plane: prepare ``fb``, show it, clean up the old one
        (``fb=None`` disables the plane)."""
        self._kms("ATOMIC")
        check_instance("plane", plane, kms.Plane)
        check_optional("fb", fb, kms.Framebuffer)
        kms.commit(self.device, plane, fb)

    def atomic(self, updates: Sequence[tuple[Plane, Framebuffer | None]]) -> None:
        """An atomic commit of several planes in one ioctl (:mod:`gpuvm.drm.atomic`)."""
        from gpuvm.drm.atomic import atomic_commit

        self._kms("ATOMIC")
        atomic_commit(self.device, updates)

    # --- close ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file (``drm_file_free``): its framebuffers are removed, its jobs waited
        for, every handle closed, then its context VM closed (``postclose``)."""
        if self.closed:
            raise BadFd(f"{self.name} is already closed")
        for fb in list(self.fbs.values()):
            kms.rm_fb(self, fb, disable=True)
        self.device.retire_file(self)
        for h in sorted(self.handles):
            self._close_handle(h)
        self.device.policy.on_file_close(self)
        for vm_id in sorted(self.vms):  # xe_file_close: every VM of the file
            self.vms.pop(vm_id).close()
        self.closed = True
        self.device.file_closed(self)

    # --- invariants ----------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Handle counts match the handle table; every cached dma-buf maps to an open handle
        whose buffer is (or was imported from) it; the mode matches the VM."""
        counts: dict[Bo, int] = {}
        for h, bo in self.handles.items():
            if bo.freed:
                raise AssertionError(f"{self.name}: handle {h} names freed {bo!r}")
            if bo.refs.count(bo.handle_ref) != 1:
                raise AssertionError(
                    f"{self.name}: the handles of {bo!r} (handle {h}) do not hold it once"
                )
            counts[bo] = counts.get(bo, 0) + 1
        if counts != self.handle_counts:
            raise AssertionError(f"{self.name}: handle counts {self.handle_counts} != {counts}")
        for d, h in self.prime_cache.items():
            if h not in self.handles or d.released:
                raise AssertionError(f"{self.name}: prime cache {d!r} -> {h} is stale")
            bo = self.handles[h]
            if bo is not d.priv and (bo.import_attach is None or bo.import_attach.dmabuf is not d):
                raise AssertionError(f"{self.name}: prime cache {d!r} -> {h} names {bo!r}")
            if d.refs.count(Holder("prime cache", who=self)) != 1:
                raise AssertionError(f"{self.name}: cache entry for {d!r} holds no reference")
        if (self.vm is None) != (self.state in (ModeState.FRESH, ModeState.BIND_PENDING)):
            raise AssertionError(f"{self.name}: mode {self.mode} with vm {self.vm!r}")


def _check_usable(vm: DriverVm, call: str) -> None:
    """msm: a VM marked unusable by a part-way VM_BIND failure refuses ``-EPIPE``."""
    if vm.unusable:
        raise ContextUnusable(f"{call}: context is unusable ({vm.name})")


def _check_set_iova(vm: KernelVm, bo: Bo, iova: int) -> None:
    """The validation of :func:`legacy.path.set_iova`, without its effect."""
    vma = vm.vma_of(bo)
    if iova == 0:
        return  # clear_iova: no pin check
    if vma is not None:
        if vma.addr != iova:
            raise Busy(f"set_iova {iova:#x}: {bo!r} already has {vma!r}")
        return
    vm.check_iova(iova, path.vma_size(vm, bo))


def _check_bind(vm: DriverVm, reqs: Sequence[MapRequest | UnmapRequest]) -> None:
    for req in reqs:
        if isinstance(req, MapRequest):
            vm.sm_map_ops(req)
        else:
            vm.sm_unmap_ops(req.addr, req.range)


def _kernel_size(obj: Bo, page: int) -> int:
    """The size the kernel sees: GEM sizes are page-aligned at creation (``msm_gem_new``,
    ``nouveau_bo_alloc``)."""
    return obj.size + (-obj.size % page)


def _validate_range(vm: DriverVm, op: BindMap | BindUnmap, index: int, where: str) -> None:
    """Page-aligned address and range inside the VM (``drm_gpuvm_range_valid``)."""
    page = vm.page_size
    if op.addr % page or op.range % page:
        raise InvalidRange(f"{where}: op {index}: unaligned {op!r}")
    if not vm.range_valid(op.addr, op.range):
        raise InvalidRange(f"{where}: op {index}: invalid range {op!r}")


def _check_bind_args(ops: object) -> None:
    """The type contract of ``VM_BIND``: a list of :class:`BindMap` / :class:`BindUnmap`
    whose addresses, ranges and offsets are u64 and whose handle is a u32 or None."""
    for op in check_sequence("ops", ops, MAX_BIND_OPS):
        if isinstance(op, BindMap):
            check_u64("addr", op.addr)
            check_u64("range", op.range)
            check_u64("offset", op.offset)
            if op.handle is not None:
                check_handle("handle", op.handle)
        elif isinstance(op, BindUnmap):
            check_u64("addr", op.addr)
            check_u64("range", op.range)
        else:
            raise ArgumentTypeError(f"not a VM_BIND op: {op!r}")
