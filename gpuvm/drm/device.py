"""DRM devices: the buffers, VMs, files, dma-bufs, planes and jobs of one GPU/display, with
the event bus they share, the driver flavour and the teardown policy.

``Device(flavour="msm", policy="gpuvm_vma_ref")`` makes the display (KMS) VM through the
policy and opens :class:`~gpuvm.drm.file.DrmFile` s with :meth:`Device.open`.  Kernel-side
actions that are not ioctls live here: retiring jobs (:meth:`retire`), waiting for a buffer
to go idle (:meth:`wait_idle`), the shrinker's :meth:`evict` / :meth:`purge`, and device
teardown (:meth:`close`) with a :meth:`leak_report` that names reference cycles.
:func:`snapshot` captures the driver layer's whole state as a comparable value, to show
that a refused call changed nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from gpuvm.core.args import check_bool, check_instance, check_int, check_optional, check_u64
from gpuvm.core.errors import Busy, InvalidValue, NoSuchObject
from gpuvm.core.events import EventBus, TlbInvalidated, Unmapped, Warning
from gpuvm.core.gem import GemObject, Resv
from gpuvm.core.refs import cycles, describe, explain
from gpuvm.core.vm import GpuVm
from gpuvm.drm.driver import Bo, DriverVm, Job, ManagedVm, make_bo
from gpuvm.drm.kernels import KernelProfile, kernel_profile
from gpuvm.drm.modes import FLAVOURS, Flavour
from gpuvm.drm.placement import (
    AMDGPU_EVICTION,
    GIB,
    Domain,
    MemoryManager,
    Place,
    amdgpu_domains,
    places,
)
from gpuvm.drm.policies import TeardownPolicy, make_policy
from legacy import path
from legacy.aspace import AddressSpace
from legacy.vma import KernelVm, KernelVma, bo_vmas

if TYPE_CHECKING:
    from gpuvm.drm.caps import DeviceCaps, Topology
    from gpuvm.drm.dmabuf import DmaBuf, FdTable
    from gpuvm.drm.file import DrmFile
    from gpuvm.drm.kms import Framebuffer, Plane

__all__ = ["Device", "format_cycle", "snapshot"]

AnyVm = AddressSpace | GpuVm

KMS_WINDOW = (0x1000, 0x1_0000_0000 - 0x1000)
"""msm's KMS VM: 4 KiB to 4 GiB (``mdp_kms``)."""

CONTEXT_WINDOW = (0x1_0000_0000, 0xF_0000_0000)
"""A per-process context VM window (``ADRENO_VM_START`` upwards)."""

MAX_PLANES = 32
"""The most planes a DRM device can have: plane indices live in 32-bit masks
(``possible_planes``, ``plane_mask``), so ``__drm_universal_plane_init`` refuses the 33rd
with ``-EINVAL`` (``config->num_total_plane >= 32``, drivers/gpu/drm/drm_plane.c)."""


class Device:
    """One DRM device.  ``flavour`` (``"msm"`` or ``"nouveau"``, or a
    :class:`~gpuvm.drm.modes.Flavour`) decides the mode-choice table; ``policy`` (a name from
    :data:`~gpuvm.drm.policies.POLICIES`, a class or an instance) decides VM types and teardown
    points; ``kernel`` (a name from :data:`~gpuvm.drm.kernels.KERNELS` or a profile; None:
    the policy's ``default_kernel``) selects the behaviours that changed between kernel
    versions.  ``planes=0`` or ``display=False`` makes a render-only device without a KMS VM.
    """

    __slots__ = (
        "bus",
        "caps",
        "closed",
        "context_window",
        "display_vm",
        "display_window",
        "dmabuf_move_notify",
        "dmabufs",
        "files",
        "flavour",
        "flink_names",
        "framebuffers",
        "jobs",
        "kernel",
        "live_bos",
        "live_vms",
        "mem",
        "name",
        "page_size",
        "per_process_pgtables",
        "planes",
        "policy",
        "reports",
        "stats",
        "topology",
    )

    def __init__(
        self,
        flavour: str | Flavour = "msm",
        policy: str | TeardownPolicy | type[TeardownPolicy] = "gpuvm_vma_ref",
        *,
        name: str = "gpu0",
        bus: EventBus | None = None,
        planes: int = 1,
        display: bool = True,
        display_window: tuple[int, int] = KMS_WINDOW,
        context_window: tuple[int, int] = CONTEXT_WINDOW,
        per_process_pgtables: bool = True,
        caps: DeviceCaps | None = None,
        mem: MemoryManager | None = None,
        topology: Topology | None = None,
        kernel: str | KernelProfile | None = None,
        page_size: int = 4096,
        dmabuf_move_notify: bool | None = None,
    ) -> None:
        from gpuvm.drm.kms import Plane

        _check_device_args(name, planes, display, display_window, context_window)
        check_bool("per_process_pgtables", per_process_pgtables)
        if type(page_size) is not int or page_size < 4096 or page_size & (page_size - 1):
            raise InvalidValue(f"page_size must be a power of two >= 4096, got {page_size!r}")
        self.page_size = page_size
        """The GPU page size of the device's kernel-managed and VM_BIND VMs (IOMMU / GPU MMU
        granule: 4 KiB, 64 KiB, 2 MiB): iovas are aligned to it and sizes rounded up, and
        cost counters count page-table entries of this size."""
        self.name = name
        self.flavour = flavour if isinstance(flavour, Flavour) else FLAVOURS[flavour]
        self.policy = make_policy(policy)
        self.kernel = kernel_profile(self.policy.default_kernel if kernel is None else kernel)
        """The kernel-version profile (:mod:`gpuvm.drm.kernels`)."""
        if dmabuf_move_notify is not None:
            check_bool("dmabuf_move_notify", dmabuf_move_notify)
        self.dmabuf_move_notify = (
            self.kernel.dmabuf_move_notify if dmabuf_move_notify is None else dmabuf_move_notify
        )
        """``CONFIG_DMABUF_MOVE_NOTIFY`` for the dma-bufs this device exports (default: the
        profile's, ``n`` as the stock Kconfig)."""
        self.bus = bus if bus is not None else EventBus()
        self.display_window = display_window
        self.context_window = context_window
        self.per_process_pgtables = per_process_pgtables
        self.caps = caps
        """Sharing capabilities (:mod:`gpuvm.drm.caps`); None: a device without placement."""
        if mem is None and caps is not None:
            mem = _default_mem(caps, self.bus, name)
        self.mem = mem
        """The device's memory (:mod:`gpuvm.drm.placement`); buffers get a backing when set."""
        self.topology = topology
        """Peer-to-peer reachability to other devices (``None``: no p2p path)."""
        self.files: list[DrmFile] = []
        self.live_bos: dict[Bo, None] = {}
        self.live_vms: dict[AnyVm, None] = {}
        self.dmabufs: dict[DmaBuf, None] = {}
        self.flink_names: dict[int, Bo] = {}
        """``dev->object_name_idr``: GEM_FLINK global names (they hold no reference)."""
        self.framebuffers: dict[Framebuffer, None] = {}
        self.jobs: list[Job] = []
        self.reports: list[str] = []
        self.stats = {"bos_created": 0, "bos_freed": 0, "vms_created": 0, "vms_freed": 0}
        self.closed = False
        self.planes: list[Plane] = []
        self.display_vm: KernelVm | None = None
        if display and planes > 0:
            self.planes = [Plane(self, i) for i in range(planes)]
            vm = self.policy.make_display_vm(self)
            self.vm_created(vm)
            self.display_vm = vm

    def __repr__(self) -> str:
        return f"Device({self.name}, {self.flavour.name}, {self.policy.name})"

    def keepers(self) -> Iterable[object]:
        return ()

    # --- files -------------------------------------------------------------------------

    def open(self, fds: FdTable | None = None, name: str = "") -> DrmFile:
        """Open the device node: a new file in the process whose fd table is ``fds`` (a
        fresh process if None)."""
        from gpuvm.drm.dmabuf import FdTable
        from gpuvm.drm.file import DrmFile

        check_optional("fds", fds, FdTable)
        check_instance("name", name, str)
        if self.closed:
            raise InvalidValue(f"open of closed {self.name}")
        table = fds if fds is not None else FdTable(name or f"proc{len(self.files) + 1}")
        f = DrmFile(self, table, name)
        self.files.append(f)
        return f

    def file_closed(self, file: DrmFile) -> None:
        if file in self.files:
            self.files.remove(file)

    def require_display(self) -> KernelVm:
        """The display VM (``-EINVAL`` on a render-only device)."""
        if self.display_vm is None:
            raise InvalidValue(f"{self.name} has no display")
        return self.display_vm

    def plane(self, index: int = 0) -> Plane:
        """Plane ``index`` (``-ENOENT`` past the last plane, as ``drm_plane_find`` of an
        unknown id; negative indices are not Python's from-the-end)."""
        check_int("index", index, 0, MAX_PLANES - 1)
        if index >= len(self.planes):
            raise NoSuchObject(f"{self.name} has no plane {index} ({len(self.planes)} planes)")
        return self.planes[index]

    # --- buffers and VMs (bookkeeping called by the other modules) ---------------------

    def new_bo(
        self, size: int, name: str = "", resv: Resv | None = None, *, placement: bool = True
    ) -> Bo:
        """A new buffer of this device (creator's reference: ``OWNER``).  With a memory
        manager and ``placement`` (not for imports, whose backing is the exporter's) the
        buffer gets a backing and is placed at once (TTM allocates eagerly): preferred
        VRAM with GTT allowed (amdgpu) on a device with VRAM, else its first system
        domain."""
        n = self.stats["bos_created"] + 1
        bo = make_bo(size, name=name or f"{self.name}.bo{n}", device=self, bus=self.bus, resv=resv)
        if self.mem is not None and placement:
            pref, allowed = self.default_places()
            self.mem.add(bo, pref, allowed)
            try:
                self.mem.validate(bo)
            except Exception:
                self.mem.remove(bo)
                raise
        self.stats["bos_created"] = n
        self.live_bos[bo] = None
        bo.free_hooks.append(self._bo_freed)
        return bo

    def default_places(self) -> tuple[tuple[Place, ...], tuple[Place, ...]]:
        """``(preferred, allowed)`` for a new buffer of this device."""
        domains = self.caps.domains if self.caps is not None else frozenset(Domain)
        if Domain.VRAM in domains:
            return amdgpu_domains([Domain.VRAM])
        first = Domain.TT if Domain.TT in domains else Domain.SYSTEM
        return places(first), places(*dict.fromkeys((first, Domain.SYSTEM)))

    def _bo_freed(self, obj: GemObject) -> None:
        assert isinstance(obj, Bo)
        lst = bo_vmas(obj)
        if lst is not None:
            lst(obj)
        self.policy.on_bo_free(obj)
        self.live_bos.pop(obj, None)
        self.stats["bos_freed"] += 1

    def vm_created(self, vm: KernelVm | DriverVm) -> None:
        assert isinstance(vm, AddressSpace | GpuVm)
        self.live_vms[vm] = None
        self.stats["vms_created"] += 1

    def vm_freed(self, vm: object) -> None:
        """``vm_free`` / address-space release callback."""
        if vm in self.live_vms:
            del self.live_vms[vm]
            self.stats["vms_freed"] += 1

    def report(self, message: str) -> None:
        """Record a lifetime problem (use-after-free, leak) and emit a ``Warning``."""
        self.reports.append(message)
        self.bus.emit(Warning(self, message))

    # --- jobs ----------------------------------------------------------------------------

    def retire(self, job: Job | None = None) -> Job | None:
        """Retire ``job`` (default: the oldest in flight): unpin, drop its references."""
        check_optional("job", job, Job)
        if job is None:
            if not self.jobs:
                return None
            job = self.jobs[0]
        if job not in self.jobs:
            raise InvalidValue(f"{job!r} is not in flight on {self.name}")
        self.jobs.remove(job)
        job.retired = True
        if isinstance(job.vm, DriverVm) and not job.vm.kernel_managed:
            job.vm.put(job)
        else:
            self.policy.on_retire(job)
        return job

    def retire_all(self) -> int:
        n = 0
        while self.jobs:
            self.retire()
            n += 1
        return n

    def wait_idle(self, bo: Bo) -> None:
        """Block until ``bo`` is idle: retire jobs in submission order up to the last one
        that uses it (its fences signal in order)."""
        check_instance("bo", bo, Bo)
        while any(bo in j.bos for j in self.jobs):
            self.retire()

    def retire_file(self, file: DrmFile) -> None:
        """Wait for every job of ``file``."""
        while any(j.file is file for j in self.jobs):
            self.retire()

    # --- shrinker ------------------------------------------------------------------------

    def _kernel_vmas(self, bo: Bo) -> list[KernelVma]:
        out: list[KernelVma] = []
        lst = bo_vmas(bo)
        if lst is not None:
            out += lst.vmas
        for vm_bo in bo.vm_bos:
            if isinstance(vm_bo.vm, ManagedVm):
                out += [v for v in vm_bo.vm.vmas if v.vm_bo is vm_bo and v not in out]
        return out

    def evict(self, bo: Bo) -> None:
        """The shrinker's evict path: unmap every VMA of ``bo`` in every VM (iovas stay),
        mark its GPUVM VmBos evicted (a VM_BIND context re-maps them at its next ``exec``; a
        legacy one at the next pin).  Busy or pinned buffers are skipped (``-EBUSY``)."""
        check_instance("bo", bo, Bo)
        bo.check_alive("evict")
        vmas = self._kernel_vmas(bo)
        if bo.busy or any(v.pin_count for v in vmas):
            raise Busy(f"{bo!r} is busy or pinned")
        path.evict(bo, vmas)
        for vm_bo in list(bo.vm_bos):
            if vm_bo.evicted:
                continue
            vm = vm_bo.vm
            if isinstance(vm, DriverVm) and not vm.kernel_managed and vm.bus.route[Unmapped]:
                for va in vm_bo.vas:
                    vm.bus.emit(Unmapped(vm, va.addr, va.range))
                    vm.bus.emit(TlbInvalidated(vm, va.addr, va.range))
            vm_bo.evict(True)

    def purge(self, bo: Bo) -> None:
        """The shrinker's purge path (``MADV_DONTNEED``): as :meth:`evict`, and the backing
        is dropped: the buffer can no longer be pinned or scanned out (``-EBUSY``).  On a
        kernel before the 6.17 series ``msm_gem_purge`` then calls ``put_iova_vmas``: every
        VMA of the buffer is closed and its iova freed (6.17 keeps them, "Don't close VMAs
        on purge")."""
        check_instance("bo", bo, Bo)
        self.evict(bo)
        if self.kernel.purge_frees_vmas:
            for vma in self._kernel_vmas(bo):
                vma.vm.close_vma(vma)  # type: ignore[attr-defined]
        bo.purged = True

    # --- teardown and reports -------------------------------------------------------------

    def close(self) -> list[str]:
        """Tear the device down: disable every plane, drop the display VM, and return the
        leak report (empty when every buffer, VM and dma-buf of the device is gone)."""
        from gpuvm.drm import kms

        if self.closed:
            raise InvalidValue(f"{self.name} is already closed")
        for plane in self.planes:
            if plane.fb is not None:
                kms.commit(self, plane, None)
        self.retire_all()
        vm = self.display_vm
        if vm is not None:
            self.policy.close_kernel_vm(vm)
        self.closed = True
        return self.leak_report()

    def leak_report(self) -> list[str]:
        """One entry per live object of the device, naming what keeps it alive: a reference
        cycle as ``buffer -> VMA -> VmBo -> buffer``, else its holder chains."""
        out: list[str] = []
        for obj in [*self.live_bos, *self.dmabufs, *self.live_vms]:
            cyc = cycles(obj)
            if cyc:
                seen: set[str] = set()
                for c in cyc:
                    text = format_cycle(c)
                    if text not in seen:
                        seen.add(text)
                        out.append(f"leak: {describe(obj)}: cycle {text}")
            else:
                out.append(f"leak: {describe(obj)}: " + explain(obj).replace("\n", "; "))
        return out

    def audit(self) -> list[str]:
        """Lifetime problems the policy can see right now (e.g. use-after-free hazards)."""
        return self.policy.audit(self)

    # --- invariants ---------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Every file's, VM's and framebuffer's invariants, plus: handle counts add up over
        files, ``vma_ref`` matches its holders, planes show live framebuffers."""
        for f in self.files:
            f.check_invariants()
        for vm in self.live_vms:
            vm.check_invariants()
        counts: dict[Bo, int] = {}
        for f in self.files:
            for bo, n in f.handle_counts.items():
                counts[bo] = counts.get(bo, 0) + n
        for bo in self.live_bos:
            if bo.freed:
                raise AssertionError(f"freed {bo!r} still listed live")
            if bo.handle_count != counts.get(bo, 0):
                raise AssertionError(f"{bo!r} handle_count {bo.handle_count} != {counts.get(bo)}")
            if bo.refs.count(bo.handle_ref) != (1 if bo.handle_count else 0):
                raise AssertionError(f"{bo!r}: {bo.handle_count} handles, {bo.refs!r}")
            if bo.vma_ref.total != sum(bo.vma_ref.holders.values()):
                raise AssertionError(f"{bo!r} vma_ref {bo.vma_ref!r} inconsistent")
            if bo.busy != sum(j.bos.count(bo) for j in self.jobs):
                raise AssertionError(f"{bo!r} busy {bo.busy} != jobs using it")
            if bo.handle_count == 0 and bo.dma_buf is not None and bo.import_attach is None:
                raise AssertionError(f"{bo!r} keeps its export cache with no handle")
        for d in self.dmabufs:
            d.check_invariants()
        if self.mem is not None:
            self.mem.check_invariants()
        for plane in self.planes:
            fb = plane.fb
            if fb is not None and (fb.freed or fb.refs.count(plane.holder) != 1):
                raise AssertionError(f"{plane!r} shows {fb!r} without holding it")
        for fb in self.framebuffers:
            shown = sum(1 for p in self.planes if p.fb is fb)
            if fb.prepare_count != shown:
                raise AssertionError(f"{fb!r} prepared {fb.prepare_count}x, shown {shown}x")
            for bo in fb.bos:
                if bo.freed:
                    raise AssertionError(f"{fb!r} holds freed {bo!r}")
            if (
                fb.prepare_count
                and self.display_vm is not None
                and not self.kernel.unpin_detaches_vm
            ):
                # (with unpin_detaches_vm the kernel breaks this: a lifetime-checker finding)
                for bo in fb.bos:
                    vma = self.display_vm.vma_of(bo)
                    if vma is None or not vma.mapped or vma.pin_count <= 0:
                        raise AssertionError(f"{fb!r} prepared but {bo!r} not pinned for scanout")


def _check_device_args(
    name: object, planes: object, display: object, display_window: object, context_window: object
) -> None:
    """The type contract of :class:`Device`: O(1), before any plane or VM is built."""
    check_instance("name", name, str)
    check_int("planes", planes, 0, MAX_PLANES)
    check_bool("display", display)
    for what, window in (("display_window", display_window), ("context_window", context_window)):
        check_instance(what, window, tuple)
        assert isinstance(window, tuple)
        if len(window) != 2:
            raise InvalidValue(f"{what} must be (start, size), got {window!r}")
        check_u64(f"{what} start", window[0])
        check_u64(f"{what} size", window[1])


def _default_mem(caps: DeviceCaps, bus: EventBus, name: str) -> MemoryManager:
    """A memory manager for ``caps`` [M]: 8 GiB VRAM if the device has VRAM, 16 GiB TT,
    64 GiB system, the exporter's eviction table."""
    return MemoryManager(
        vram=8 * GIB if Domain.VRAM in caps.domains else 0,
        tt=16 * GIB if Domain.TT in caps.domains else 0,
        system=64 * GIB,
        bus=bus,
        eviction=caps.exporter.eviction_table() if caps.exporter else AMDGPU_EVICTION,
        name=name,
    )


def format_cycle(chain: tuple[object, ...]) -> str:
    """A cycle from :func:`gpuvm.core.refs.cycles` (``held <- holder <- ...``) written in the
    holder -> held direction, e.g. ``GEM bo -> VMA(...) -> VmBo(kms, bo) -> GEM bo``."""
    return " -> ".join(_short(x) for x in reversed(chain))


def _short(obj: object) -> str:
    return describe(obj)


# --- snapshots -----------------------------------------------------------------------------


def _holders(refs: object) -> tuple[tuple[str, int], ...]:
    holders: dict[object, int] = getattr(refs, "holders", {})
    return tuple(sorted((describe(h), n) for h, n in holders.items()))


def _vma_state(v: object) -> tuple[object, ...]:
    return (
        repr(v),
        getattr(v, "addr", None),
        getattr(v, "range", None),
        getattr(v, "mapped", None),
        getattr(v, "pin_count", None),
    )


def _vm_state(vm: AnyVm) -> tuple[object, ...]:
    if isinstance(vm, AddressSpace):
        vmas: list[object] = [_vma_state(v) for v in vm.vmas]
        lists: tuple[object, ...] = ()
    else:
        vmas = [(*_vma_state(v), repr(v.vm_bo)) for v in vm.vas]
        lists = (
            tuple(repr(vb) for vb in vm.extobj),
            tuple(repr(vb) for vb in vm.evict),
            tuple((repr(vb), _holders(vb.refs), vb.evicted) for vb in vm.vm_bos),
            vm.generation,
            getattr(vm, "unusable", False),
        )
    return (repr(vm), vm.freed, _holders(vm.refs), tuple(vmas), lists)


def _bo_state(bo: Bo) -> tuple[object, ...]:
    lst = bo_vmas(bo)
    return (
        repr(bo),
        _holders(bo.refs),
        bo.handle_count,
        repr(bo.dma_buf),
        bo.import_attach is not None,
        _holders(bo.vma_ref),
        bo.busy,
        bo.purged,
        tuple(repr(v) for v in (lst.vmas if lst is not None else [])),
        tuple(repr(vb) for vb in bo.vm_bos),
        repr(bo.private_vm),
    )


def snapshot(*devices: Device) -> tuple[object, ...]:
    """The driver layer's whole state as a nested tuple: per device its kernel profile,
    files (mode, VM, handles, handle counts, PRIME cache, framebuffers), fd tables, buffers
    (holders, handle count, dma-buf, vma_ref, VMAs), VMs (holders, VMAs with iova / mapped /
    pins, extobj and evict lists, VmBos), dma-bufs, framebuffers, planes and jobs.  Two
    snapshots compare equal iff nothing observable changed."""
    out: list[object] = []
    tables: dict[int, FdTable] = {}
    for dev in devices:
        files = []
        for f in dev.files:
            tables[id(f.fds)] = f.fds
            files.append(
                (
                    f.name,
                    f.mode,
                    repr(f.vm),
                    tuple(sorted((h, repr(b)) for h, b in f.handles.items())),
                    tuple(sorted((repr(b), n) for b, n in f.handle_counts.items())),
                    tuple(sorted((repr(d), h) for d, h in f.prime_cache.items())),
                    tuple(sorted(f.fbs)),
                    tuple(sorted((i, repr(v)) for i, v in f.vms.items())),
                )
            )
        out.append(
            (
                repr(dev),
                dev.kernel.name,
                dev.closed,
                tuple(files),
                tuple(_bo_state(b) for b in dev.live_bos),
                tuple(_vm_state(vm) for vm in dev.live_vms),
                tuple((repr(d), _holders(d.refs), len(d.attachments)) for d in dev.dmabufs),
                tuple((repr(fb), _holders(fb.refs), fb.prepare_count) for fb in dev.framebuffers),
                tuple(repr(p.fb) for p in dev.planes),
                tuple((repr(j), tuple(repr(b) for b in j.bos)) for j in dev.jobs),
                tuple(dev.reports),
                tuple(sorted(dev.stats.items())),
                tuple(d.state() for d in dev.dmabufs),
                dev.mem.snapshot() if dev.mem is not None else None,
            )
        )
    out.append(
        tuple(
            (t.name, tuple(sorted((fd, repr(d)) for fd, d in t.fds.items())))
            for t in tables.values()
        )
    )
    return tuple(out)
