"""The :class:`LifetimeChecker` itself: it observes ``Freed`` / ``RefPut`` / ``Mapped`` /
``VaLinked`` events, recomputes every counted edge from the structure (handle tables,
PRIME caches, fd tables, framebuffers and planes, jobs, VA trees and VmBo lists, dma-buf
exports and attachments) and compares it with the holders each object records, with
checks at the close points (``drm_file_free`` / ``drm_gem_release``, VM close,
``drm_dev_unregister`` teardown) and after a PRIME import (``drm_gem_prime_fd_to_handle``).
One class, one concept: every check shares the watched set, the findings and the
recomputed edge table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from gpuvm.core.events import EventBus, Freed, Mapped, RefPut, VaLinked
from gpuvm.core.gem import GemObject
from gpuvm.core.refs import OWNER, Holder, RefCount, describe, holder_chains
from gpuvm.core.vm import GpuVm
from gpuvm.observe.checker.edges import (
    _cycles,
    _Edges,
    _is_freed,
    _verifiable,
    attributes,
    edge_kind,
    explain,
    format_cycle,
)
from gpuvm.observe.checker.verdict import Violation

if TYPE_CHECKING:
    from gpuvm.drm.device import Device
    from gpuvm.drm.file import DrmFile

__all__ = [
    "LifetimeChecker",
]


class LifetimeChecker:
    """Observes events and inspects watched objects; collects :class:`Violation` s.

    ``watch`` devices (everything reachable from them is inspected), VMs or buffers.
    ``check()`` runs the inspection and returns the new findings; ``ok`` is True while no
    fatal finding was made.  ``allow`` names violation kinds to record but not count as
    failures (e.g. ``{"leak"}`` for a policy known to leak).
    """

    def __init__(
        self,
        *watch: object,
        bus: EventBus | None = None,
        allow: Iterable[str] = (),
    ) -> None:
        self.watched: list[object] = []
        self.violations: list[Violation] = []
        self.allow = frozenset(allow)
        self._seen: set[tuple[str, str]] = set()
        self._freed: dict[int, object] = {}
        self._unsubscribe: list[Callable[[], None]] = []
        self._buses: list[EventBus] = []
        self._tables: dict[int, Any] = {}
        self._tables_done: set[int] = set()
        for w in watch:
            self.watch(w)
        if bus is not None:
            self.attach(bus)

    # --- setup ---------------------------------------------------------------------------

    def watch(self, obj: object) -> None:
        """Inspect ``obj`` (a Device, GpuVm, GemObject or fd table) on every check; a
        device's bus is attached automatically."""
        if any(obj is w for w in self.watched):
            return
        self.watched.append(obj)
        if type(obj).__name__ == "FdTable":
            self._tables[id(obj)] = obj
        bus = getattr(obj, "bus", None)
        if isinstance(bus, EventBus) and type(obj).__name__ == "Device":
            self.attach(bus)

    def attach(self, bus: EventBus) -> None:
        """Observe ``bus``'s lifetime events (once per bus)."""
        if any(b is bus for b in self._buses):
            return
        self._buses.append(bus)
        self._unsubscribe.append(bus.subscribe(self._on_event, [Freed, RefPut, Mapped, VaLinked]))

    def detach(self) -> None:
        for u in self._unsubscribe:
            u()
        self._unsubscribe.clear()
        self._buses.clear()

    # --- findings ------------------------------------------------------------------------

    def report(self, kind: str, message: str, key: str | None = None) -> Violation | None:
        """Record a finding (deduplicated by ``key``, default the message); returns it if
        new."""
        key_ = (kind, message if key is None else key)
        if key_ in self._seen:
            return None
        self._seen.add(key_)
        v = Violation(kind, message)
        self.violations.append(v)
        return v

    @property
    def failures(self) -> list[Violation]:
        return [v for v in self.violations if v.fatal and v.kind not in self.allow]

    @property
    def hazards(self) -> list[Violation]:
        return [v for v in self.violations if not v.fatal]

    @property
    def ok(self) -> bool:
        return not self.failures

    def verdict(self) -> str:
        """``"ok"`` or one line per finding, failures first."""
        if not self.violations:
            return "ok: no lifetime violation"
        lines = [("FAIL " if v in self.failures else "note ") + str(v) for v in self.violations]
        head = "FAIL" if self.failures else "ok (with notes)"
        return "\n".join([f"{head}: {len(self.failures)} violation(s)", *lines])

    def assert_ok(self) -> None:
        """Raise ``AssertionError`` with the verdict if a failure was found."""
        if not self.ok:
            raise AssertionError(self.verdict())

    explain = staticmethod(explain)

    # --- events --------------------------------------------------------------------------

    def _on_event(self, event: object) -> None:
        if isinstance(event, Freed):
            self._freed[id(event.obj)] = event.obj
        elif isinstance(event, RefPut):
            t, h = event.target, event.holder
            if _is_freed(t):
                self.report("use-after-free", f"put on freed {describe(t)} by {describe(h)}")
            refs = getattr(t, "refs", None)
            if isinstance(refs, RefCount) and refs.count(h) <= 0:
                self.report("underflow", f"put on {describe(t)} by {describe(h)}, which holds none")
        elif isinstance(event, Mapped):
            if event.obj is not None and _is_freed(event.obj):
                self.report(
                    "use-after-free",
                    f"page tables of {describe(event.vm)} written for freed {describe(event.obj)}",
                )
        elif isinstance(event, VaLinked) and _is_freed(event.vm_bo):
            self.report("use-after-free", f"{describe(event.va)} linked to freed {event.vm_bo!r}")

    # --- inspection ----------------------------------------------------------------------

    def check(self) -> list[Violation]:
        """Inspect every watched object now; returns the new findings."""
        from gpuvm.drm.driver import Bo

        before = len(self.violations)
        self._tables_done = set()
        edges = _Edges()
        vms: dict[int, Any] = {}
        bos: dict[int, GemObject] = {}
        devices: list[Any] = [w for w in self.watched if type(w).__name__ == "Device"]
        for w in self.watched:
            if isinstance(w, GpuVm):
                vms[id(w)] = w
            elif isinstance(w, GemObject):
                bos[id(w)] = w
        for dev in devices:
            self._device_edges(dev, edges, vms, bos)
        for bo in list(bos.values()):
            if isinstance(bo, Bo):
                self._driver_bo(bo, edges, bo.device)
        for vm in list(vms.values()):
            self._vm_edges(vm, edges, bos)
        for bo in list(bos.values()):
            self._bo_edges(bo, edges, devices)
        self._compare(edges, devices)
        return self.violations[before:]

    def _device_edges(
        self, dev: Device, edges: _Edges, vms: dict[int, Any], bos: dict[int, GemObject]
    ) -> None:
        from gpuvm.drm.dmabuf import fd_holder
        from gpuvm.drm.kms import file_holder

        uaf = self.report
        tables = self._tables
        handled: set[int] = set()
        for f in dev.files:
            tables[id(f.fds)] = f.fds
            if f.vm is not None:
                vms[id(f.vm)] = f.vm
                if _is_freed(f.vm):
                    uaf("use-after-free", f"open {f.name} uses freed {describe(f.vm)}")
                else:
                    edges.add(f.vm, OWNER)
            for h, bo in f.handles.items():
                if id(bo) not in handled:  # all handles together hold one reference
                    handled.add(id(bo))
                    edges.add(bo, bo.handle_ref)
                bos[id(bo)] = bo
                if bo.freed:
                    uaf("use-after-free", f"{f.name} handle {h} names freed {describe(bo)}")
            for d in f.prime_cache:
                if d.released:
                    uaf("use-after-free", f"{f.name}'s PRIME cache names released {describe(d)}")
                else:
                    edges.add(d, Holder("prime cache", who=f))
            for fb in f.fbs.values():
                edges.add(fb, file_holder(f))
        for t in list(tables.values()):
            if id(t) in self._tables_done:
                continue
            self._tables_done.add(id(t))
            for fd, d in t.fds.items():
                if d.released:
                    uaf("use-after-free", f"fd {fd} of {t.name} names released {describe(d)}")
                else:
                    edges.add(d, fd_holder(t, fd))
                    self._dmabuf_rules(d)
        for vm in dev.live_vms:
            vms[id(vm)] = vm
        if dev.display_vm is not None and not dev.closed:
            vms[id(dev.display_vm)] = dev.display_vm
            if not _is_freed(dev.display_vm):
                edges.add(dev.display_vm, OWNER)
        for bo in dev.live_bos:
            bos[id(bo)] = bo
        for plane in dev.planes:
            shown = plane.fb
            if shown is not None:
                if shown.freed:
                    uaf("use-after-free", f"{plane!r} shows freed {describe(shown)}")
                edges.add(shown, plane.holder)
        for fb in dev.framebuffers:
            edges.touch(fb)
            for bo in fb.bos:
                bos[id(bo)] = bo
                if bo.freed:
                    uaf("use-after-free", f"{describe(fb)} scans out freed {describe(bo)}")
                edges.add(bo, fb)
            self._scanout_mapped(dev, fb)
        for job in dev.jobs:
            jvm: Any = job.vm
            if isinstance(jvm, GpuVm) and not getattr(jvm, "kernel_managed", True):
                edges.add(jvm, job)
            if job.holds_bos:
                for bo in job.bos:
                    edges.add(bo, job)
            for vb in job.vm_bos:
                edges.add(vb, job)
                if vb.freed:
                    uaf("use-after-free", f"in-flight {job!r} holds freed {vb!r}")
            own = job.vmas if len(job.vmas) == len(job.bos) else (None,) * len(job.bos)
            for bo, pinned in zip(job.bos, own, strict=True):
                if bo.freed:
                    uaf("use-after-free", f"in-flight {job!r} uses freed {describe(bo)}")
                    continue
                if job.pinned and hasattr(jvm, "vma_of"):
                    vma = jvm.vma_of(bo)
                    if (
                        pinned is not None
                        and pinned is not vma
                        and getattr(pinned, "user_cleared", False)
                    ):
                        self.report(
                            "hazard",
                            f"userspace deleted the VMA of {describe(bo)} in {describe(jvm)} "
                            f"(MSM_INFO_SET_IOVA iova 0) while in-flight {job!r} uses it: the "
                            "GPU faults or reaches what is mapped there next; the job still "
                            "holds the buffer",
                            key=f"user-cleared {id(job)} {id(bo)}",
                        )
                    elif vma is None or not vma.mapped or vma.pin_count <= 0:
                        uaf(
                            "use-after-free",
                            f"the VMA of {describe(bo)} in {describe(jvm)} is gone or unpinned "
                            f"while in-flight {job!r} still uses it",
                        )
        for d in dev.dmabufs:
            edges.touch(d)
            if not d.released:
                edges.add(d.priv, d)

    def _driver_bo(self, bo: Any, edges: _Edges, dev: Any) -> None:
        from gpuvm.drm.dmabuf import dma_buf_holder

        if bo.freed:
            return
        if bo.dma_buf is not None:
            if bo.dma_buf.released:
                self.report(
                    "use-after-free", f"{describe(bo)}.dma_buf is released {describe(bo.dma_buf)}"
                )
            else:
                edges.add(bo.dma_buf, dma_buf_holder(bo))
                self._dmabuf_rules(bo.dma_buf)
        att = bo.import_attach
        if att is not None:
            d = att.dmabuf
            if d.released:
                self.report(
                    "use-after-free", f"imported {describe(bo)} uses released {describe(d)}"
                )
            else:
                edges.add(d, bo)
                self._dmabuf_rules(d)
                if att not in d.attachments:
                    self.report("refcount", f"{att!r} of live {describe(bo)} is not attached")
            if bo.dma_buf is not d:
                holders = [describe(h) for h in bo.refs.holders]
                self.report(
                    "hazard",
                    f"derived pointer {describe(bo)}.dma_buf cleared (last handle closed) "
                    f"while the buffer is still held by {', '.join(holders) or 'nothing'}",
                    key=f"dma_buf {id(bo)}",
                )
        for h in bo.vma_ref.holders:
            why = self._tally_holder_dead(h, bo, dev)
            if why:
                self.report("refcount", f"vma_ref of {describe(bo)} held by {describe(h)}: {why}")

    def _scanout_mapped(self, dev: Device, fb: Any) -> None:
        """A framebuffer on a plane (prepared) whose buffer has no mapped VMA in the display
        VM: the display engine scans out through an unmapped iova.  msm before 3bebfd53af0f
        does this with two framebuffers over one buffer: ``msm_gem_unpin_iova`` for one
        detaches the VM under the other's scanout."""
        vm = dev.display_vm
        if not fb.prepare_count or vm is None or _is_freed(vm):
            return
        for bo in fb.bos:
            vma = vm.vma_of(bo)
            if bo.freed or (vma is not None and vma.mapped):
                continue
            self.report(
                "unmapped-scanout",
                f"{describe(fb)} is on a plane but {describe(bo)} has no mapped VMA in "
                f"{vm.name} (unmapped under a live scanout: msm_gem_unpin_iova before "
                "3bebfd53af0f detaches the VM at every unpin)",
                key=f"unmapped-scanout {id(fb)} {id(bo)}",
            )

    def _dmabuf_rules(self, d: Any) -> None:
        """The rules a live dma-buf's exporter side recorded as broken (``DmaBuf.violations``:
        a pinned backing moved, a mapping left across a move without ``move_notify``)."""
        for message in d.violations:
            self.report("dma-buf", f"{describe(d)}: {message}")
        for att in d.stale_mappings() if hasattr(d, "stale_mappings") else ():
            self.report(
                "stale-mapping",
                f"{describe(d)}: importer {att.importer!r} still maps {att.unnotified}, but "
                f"the exporter moved the buffer to {d.backing.resource} without move_notify "
                "(obj->dma_buf was cleared when the exporter's last handle closed: "
                "drm_gem_object_exported_dma_buf_free)",
                key=f"stale-mapping {id(att)} {att.unnotified}",
            )

    def _tally_holder_dead(self, h: object, bo: Any, dev: Any) -> str | None:
        from gpuvm.drm.dmabuf import DmaBuf

        if isinstance(h, Holder) and h.kind.startswith("handle "):
            f = h.who
            num = int(h.kind.split()[1])
            if getattr(f, "closed", True) or getattr(f, "handles", {}).get(num) is not bo:
                return "the handle is closed"
            return None
        if isinstance(h, DmaBuf):
            return "the dma-buf is released" if h.released else None
        kind = type(h).__name__
        if kind == "Framebuffer":
            return None if getattr(h, "prepare_count", 0) > 0 else "the framebuffer is not pinned"
        if kind == "Job":
            return None if h in getattr(dev, "jobs", ()) else "the job retired"
        return None

    def _vm_edges(self, vm: Any, edges: _Edges, bos: dict[int, GemObject]) -> None:
        if _is_freed(vm):
            return
        if isinstance(vm, GpuVm):
            edges.touch(vm)
            edges.add(vm.r_obj, vm)
            for va in vm.index:
                if va.kernel_node:
                    continue
                if va.freed:
                    self.report(
                        "use-after-free", f"freed {describe(va)} still in {vm.name}'s VA index"
                    )
                edges.add(vm, va)
                if va.vm_bo is not None and va.vm_bo.freed:
                    self.report("use-after-free", f"{describe(va)} linked to freed {va.vm_bo!r}")
                if va.vm_bo is not None and va.obj is not None and va.obj.freed:
                    self.report(
                        "use-after-free",
                        f"{describe(va)} in {vm.name} maps freed {describe(va.obj)}",
                    )
            for vb in list(vm.vm_bos):
                edges.add(vm, vb)
                edges.touch(vb)
                if vb.holds_obj:
                    edges.add(vb.obj, vb)
                bos[id(vb.obj)] = vb.obj
                for va in vb.vas:
                    edges.add(vb, va)
                    if va.freed:
                        self.report("use-after-free", f"{vb!r} still lists freed {describe(va)}")
            for name, lst in (("extobj", vm.extobj), ("evict", vm.evict)):
                for vb in lst:
                    if vb.freed:
                        self.report("use-after-free", f"freed {vb!r} on {vm.name}'s {name} list")
                    elif vb.obj.freed:
                        self.report(
                            "use-after-free",
                            f"{vb!r} on {vm.name}'s {name} list points at freed {describe(vb.obj)}",
                        )
        else:  # a legacy AddressSpace
            edges.touch(vm)
            for vma in vm.vmas:
                edges.add(vm, vma)
                if vma.obj.freed:
                    self.report(
                        "use-after-free",
                        f"{describe(vma)} of freed {describe(vma.obj)} in {vm.name}",
                    )

    def _bo_edges(self, bo: GemObject, edges: _Edges, devices: list[Any]) -> None:
        edges.touch(bo)
        for vb in bo.vm_bos:
            if vb.freed:
                self.report("use-after-free", f"freed {vb!r} still on {describe(bo)}'s VmBo list")

    def _compare(self, edges: _Edges, devices: list[Any]) -> None:
        """Every counted object's recorded holders against the recomputed edges."""
        device_bos = {id(b) for d in devices for b in d.live_bos}
        for tid, target in edges.targets.items():
            refs = getattr(target, "refs", None)
            if not isinstance(refs, RefCount):
                continue
            if _is_freed(target):
                continue
            total = sum(refs.holders.values())
            if total != refs.total or any(n <= 0 for n in refs.holders.values()):
                self.report("underflow", f"refcount of {describe(target)} inconsistent: {refs!r}")
            if refs.total <= 0 and not refs.released:
                self.report("underflow", f"{describe(target)} alive with refcount {refs.total}")
            want = edges.of(target)
            for holder, n in refs.holders.items():
                kind = edge_kind(target, holder)
                expected = want.get(holder, 0)
                if n == expected:
                    continue
                if kind.startswith("transient"):
                    self.report(
                        "refcount",
                        f"{describe(target)} still held by {describe(holder)} after the call "
                        f"that took it (leaked reference)",
                    )
                    continue
                if kind in ("owner", "caller") and expected == 0:
                    if tid in device_bos and kind == "owner":
                        self.report(
                            "refcount",
                            f"{describe(target)} keeps its creator's reference (leaked)",
                        )
                    continue
                if not _verifiable(kind):
                    continue
                if _is_freed(holder):
                    msg = f"{describe(target)} still held by freed {describe(holder)} [{kind}]"
                elif expected == 0:
                    msg = (
                        f"{describe(target)} held {n}x by {describe(holder)} [{kind}], "
                        f"which has no live edge to it (leaked reference)"
                    )
                else:
                    msg = (
                        f"{describe(target)} held {n}x by {describe(holder)} [{kind}] "
                        f"but {expected} live edge(s)"
                    )
                self.report("refcount", msg)
            for holder, n in want.items():
                if holder in refs.holders:
                    continue
                kind = edge_kind(target, holder)
                if kind in ("owner",):
                    if not _is_freed(target):
                        self.report(
                            "refcount",
                            f"{describe(target)} lost its owner reference while still in use",
                        )
                    continue
                self.report(
                    "use-after-free" if kind in ("vm_bo", "va link", "framebuffer") else "refcount",
                    f"{describe(holder)} points at {describe(target)} [{kind}] without holding "
                    f"a reference ({n} edge(s), 0 references)",
                )

    # --- close points --------------------------------------------------------------------

    def after_file_close(self, file: DrmFile) -> list[Violation]:
        """After ``file.close()``: nothing may still be held on the file's behalf, and its
        context VM must be gone unless its VMAs legitimately outlive it (a legacy address
        space lives until its buffers are freed); a VM kept only by a cycle is a leak."""
        before = len(self.violations)
        self.check()
        vm = file.vm
        if vm is not None and not _is_freed(vm):
            explicit = isinstance(vm, GpuVm) and not getattr(vm, "bo_owns_vmas", False)
            if explicit:
                self.report(
                    "leak",
                    f"{describe(vm)} of closed {file.name} not freed: "
                    + explain(vm).replace("\n", "; "),
                )
            self._report_cycles(vm)
        return self.violations[before:]

    def after_vm_close(self, vm: GpuVm) -> list[Violation]:
        """After ``vm.close()`` (unmap all, drop the owner): the VM must be freed; a VmBo
        parked on a deferred list that was never drained keeps it alive."""
        before = len(self.violations)
        if not vm.freed:
            for vb in vm.bo_defer:
                self.report(
                    "leak",
                    f"deferred VmBo list of {vm.name} never drained: {vb!r} parked on it "
                    "(drm_gpuvm_bo_deferred_cleanup never ran)",
                )
            for vb in vm.vm_bos:
                for h in vb.refs.holders:
                    if isinstance(h, Holder) and h.kind == "deferred list":
                        self.report(
                            "leak",
                            f"deferred VmBo list of {vm.name} never drained: {vb!r} parked on it",
                        )
            self.report(
                "leak", f"{describe(vm)} not freed at close: " + explain(vm).replace("\n", "; ")
            )
            self._report_cycles(vm)
        return self.violations[before:]

    def after_teardown(self, device: Device) -> list[Violation]:
        """After ``device.close()`` (and every file and fd closed): every buffer, VM and
        dma-buf of the device must be gone; each survivor is reported with its cycle or its
        holder chains."""
        before = len(self.violations)
        for obj in [*device.live_bos, *device.dmabufs, *device.live_vms]:
            if not self._report_cycles(obj):
                self.report(
                    "leak",
                    f"{describe(obj)} survives teardown: " + explain(obj).replace("\n", "; "),
                )
        return self.violations[before:]

    def _report_cycles(self, obj: object) -> bool:
        """Report the cycles keeping ``obj`` alive when nothing else does (every chain of
        holders loops); True if reported.  An object also reachable from a root (an open
        handle, an in-flight job, a live fd) is not leaked by the cycles it is on."""
        chains = holder_chains(obj)
        loops = [c for c in chains if len(c) > 1 and any(c[-1] is p for p in c[:-1])]
        if not loops or len(loops) < len(chains):
            return False
        found = False
        for c in _cycles(obj):
            found = True
            ring = c[:-1]
            names = [describe(x) for x in ring]
            i = names.index(min(names))
            canon = (*ring[i:], *ring[:i], ring[i])
            self.report(
                "cycle",
                f"{describe(obj)} kept alive by cycle {format_cycle(canon)}",
                key=format_cycle(canon),
            )
        return found

    # --- operation checks ----------------------------------------------------------------

    def check_import(self, file: DrmFile, fd: int, handle: int) -> list[Violation]:
        """``PRIME_FD_TO_HANDLE`` returned ``handle`` for ``fd``: the handle must name the
        buffer behind the dma-buf the fd refers to *now* (not a stale one after fd reuse)."""
        before = len(self.violations)
        d = file.fds.fds.get(fd)
        bo = file.handles.get(handle)
        if d is None or bo is None:
            self.report("stale-import", f"import of fd {fd} returned closed handle {handle}")
        else:
            att = getattr(bo, "import_attach", None)
            ok = bo is d.priv or (att is not None and att.dmabuf is d)
            if not ok:
                self.report(
                    "stale-import",
                    f"import of fd {fd} ({describe(d)}) in {file.name} returned handle {handle} "
                    f"naming {describe(bo)}, another buffer (cache keyed by fd number?)",
                )
        return self.violations[before:]

    def check_attributes(
        self,
        before: list[tuple[int, int, object, int, tuple[bool, bool, int]]],
        vm: GpuVm,
        exempt: Iterable[tuple[int, int]] = (),
    ) -> list[Violation]:
        """After an operation on ``vm``: every address outside ``exempt`` (the ranges the
        operation newly mapped) that still maps the same object at the same object offset
        must keep its per-VA attributes (sparse, invalidated, user flags).  ``before`` is
        :func:`attributes` of the VM taken before the operation."""
        found = len(self.violations)
        ex = list(exempt)
        after = attributes(vm)
        for a0, r0, o0, off0, attrs0 in before:
            for a1, r1, o1, off1, attrs1 in after:
                lo, hi = max(a0, a1), min(a0 + r0, a1 + r1)
                if lo >= hi or o0 is not o1 or off0 - a0 != off1 - a1 or attrs0 == attrs1:
                    continue
                if any(ea <= lo and hi <= ea + er for ea, er in ex):
                    continue
                self.report(
                    "attributes",
                    f"[{lo:#x}, {hi:#x}) of {vm.name} kept its mapping but its attributes "
                    f"changed from {attrs0} to {attrs1} (a split lost per-VA attributes)",
                )
        return self.violations[found:]
