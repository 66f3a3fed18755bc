"""Reconstruction: from parsed tracepoint events to a model trace (``docs/trace-format.md``).

:func:`parse_log` reads an ftrace text dump (:mod:`gpuvm.study.ingest.lines`) and parses
each supported event's payload (:mod:`gpuvm.study.ingest.formats`); :func:`reconstruct`
drives a :class:`~gpuvm.observe.trace.Session` with the operations the events stand for,
so the result is a trace the library replays, plus a report of what the log said that the
model could not be told.  ``docs/ingest.md`` has the full mapping; in short:

* each kernel device (``dev=``, a dma-buf exporter's ``exp_name``, an importer's
  ``dev_name``) becomes a model ``device``; each GPU VM (xe ``vm=``, amdgpu: the calling
  process) a VM_BIND file of its own process;
* ``xe_vma_bind`` / ``xe_vma_unbind`` and ``amdgpu_vm_bo_map`` / ``amdgpu_vm_bo_unmap``
  become ``vm_bind`` maps and unmaps of buffers (xe's VMA events name no buffer object, so
  each xe VMA is its own buffer; amdgpu's name the buffer, sized from
  ``amdgpu_bo_create`` or from its mappings);
* ``xe_vma_evict`` and a move of a mapped amdgpu buffer out of VRAM become ``evict``; the
  next rebind (``xe_vma_rebind_*``, ``amdgpu_vm_bo_update`` of that mapping) an ``exec``
  (which re-maps evicted buffers) and its ``retire``;
* dma-buf export / attach / detach become an export, an fd passed to the importer's
  process, an import and its ``gem_close``;
* ``drm_vblank_event`` on the busiest CRTC closes a ``frame``; each
  ``drm_vblank_event_delivered`` is a page flip on that CRTC's plane of a display device,
  showing the next buffer of a swapchain (the log does not say which buffer was flipped);
* at the end every file is closed and every device torn down, so replay's lifetime
  checker sees the whole life of every object.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs

from gpuvm.core.errors import GpuvmError
from gpuvm.core.events import EventBus
from gpuvm.drm.device import CONTEXT_WINDOW
from gpuvm.observe.costs import CostCounters
from gpuvm.observe.trace import Session
from gpuvm.study.ingest.formats import EVENTS
from gpuvm.study.ingest.parsed import IngestError, ParsedEvent, ParsedLog, parse_log
from gpuvm.study.ingest.result import Reconstruction

__all__ = ["DEFAULT_POLICY", "reconstruct"]

DEFAULT_POLICY = "gpuvm_vma_ref"
PAGE = 4096
AMDGPU_GPU_PAGE = 4096
"""amdgpu mapping ``start`` / ``last`` (and ``soffs`` / ``eoffs``) count GPU pages of 4 KiB."""
_VRAM = {"vram", "vram0", "vram1", "2"}
"""Placements that are device memory: xe's names, and TTM_PL_VRAM (2) for amdgpu."""


# --- the reconstruction ---------------------------------------------------------------------


@attrs.define(slots=True, eq=False)
class _Vm:
    """A GPU VM of the log: the VM_BIND file standing for it and its address shift."""

    key: tuple[str, ...]
    device: str
    file: str
    table: str
    shift: int = 0
    skip: bool = False
    mappings: dict[int, _Mapping] = attrs.field(factory=dict)
    """Live mappings by (model) start address."""


@attrs.define(slots=True, eq=False)
class _Mapping:
    vm: _Vm
    addr: int
    range: int
    handle: int
    buffer: str  # the log's name for the buffer (vma or bo pointer)


@attrs.define(slots=True, eq=False)
class _Buffer:
    file: str
    handle: int
    evicted: bool = False


class _Builder:
    def __init__(self, log: ParsedLog, policy: str, swapchain: int, scanout_size: int) -> None:
        self.log = log
        self.policy = policy
        self.swapchain = swapchain
        self.scanout_size = scanout_size
        self.bus = EventBus()
        self.counters = CostCounters(self.bus)
        self.s = Session(check=False, bus=self.bus)
        self.devices: dict[str, str] = {}  # log name -> device id
        self.vms: dict[tuple[str, ...], _Vm] = {}
        self.buffers: dict[tuple[str, ...], _Buffer] = {}  # (vm file, log buffer name)
        self.all_vms: list[_Vm] = []
        self.vmas: dict[str, _Mapping] = {}  # xe: live VMA pointer -> mapping
        self.notes: Counter[str] = Counter()
        self.first_line: dict[str, int] = {}
        self.frames = 0
        self.frame_due = False
        self.flips = 0
        self.tlb_pending: dict[tuple[str, int], int] = {}
        self.tlb_sent = 0
        self.tlb_received = 0
        self.moves: list[dict[str, Any]] = []
        self.exporters: dict[str, tuple[str, str]] = {}  # device id -> (file, table)
        self.importers: dict[str, tuple[str, str]] = {}
        self.dmabufs: dict[int, tuple[str, str, int]] = {}  # ino -> (file, table, fd)
        self.attachments: dict[tuple[int, str], tuple[str, int]] = {}
        self.display: str | None = None
        self.compositor: str | None = None
        self.chains: dict[int, list[str]] = {}
        self.flip_index: dict[int, int] = {}
        self.sizes = self._amdgpu_sizes()
        self.ranges = self._vm_ranges()
        crtcs = Counter(e.fields["crtc"] for e in log.events if e.name == "drm_vblank_event")
        self.clock = min(crtcs, key=lambda c: (-crtcs[c], c)) if crtcs else None
        flips = [e.fields["crtc"] for e in log.events if e.name == "drm_vblank_event_delivered"]
        self.planes = max(flips) + 1 if flips else 1

    # --- notes ---------------------------------------------------------------------------

    def note(self, text: str, line: int) -> None:
        self.notes[text] += 1
        self.first_line.setdefault(text, line)

    def note_lines(self) -> list[str]:
        out = []
        for text, n in self.notes.items():
            where = f"first at line {self.first_line[text]}"
            out.append(f"{text} ({n}x, {where})")
        return out

    # --- pass 1: sizes and address ranges ------------------------------------------------

    def _amdgpu_sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        created: set[str] = set()
        for e in self.log.events:
            f = e.fields
            if e.name == "amdgpu_bo_create":
                sizes[f["bo"]] = f["pages"] * PAGE
                created.add(f["bo"])
            elif e.name == "amdgpu_vm_bo_map" and f["bo"] not in created:
                need = f["offset"] + (f["last"] - f["start"] + 1) * AMDGPU_GPU_PAGE
                need = -(-need // PAGE) * PAGE
                sizes[f["bo"]] = max(sizes.get(f["bo"], 0), need)
        return sizes

    def _vm_key(self, e: ParsedEvent) -> tuple[str, ...] | None:
        f = e.fields
        if e.name.startswith("xe_vma_"):
            dev = f.get("dev", "xe")
            return ("xe", dev, f["vm"]) if "vm" in f else ("xe", dev, f"asid{f['asid']:#x}")
        if e.name in ("amdgpu_vm_bo_map", "amdgpu_vm_bo_unmap", "amdgpu_vm_bo_update"):
            pid = e.line.tgid if e.line.tgid is not None else e.line.pid
            return ("amdgpu", "amdgpu", f"pid{pid}")
        return None

    def _known_key(self, e: ParsedEvent) -> tuple[str, ...]:
        """The VM key of an event that always names one (the xe VMA and amdgpu VA events
        the handlers below are registered for)."""
        key = self._vm_key(e)
        if key is None:
            raise AssertionError(f"{e.name} names no VM")
        return key

    def _live_vm(self, e: ParsedEvent) -> _Vm | None:
        """The VM an event maps into, created on first sight; None if that VM is skipped."""
        vm = self.vm(self._known_key(e), e.line.line)
        return None if vm.skip else vm

    def _extent(self, e: ParsedEvent) -> tuple[int, int] | None:
        f = e.fields
        if e.name in ("xe_vma_bind", "xe_vma_pf_bind"):
            return f["start"], f["end"] + 1
        if e.name == "amdgpu_vm_bo_map":
            return f["start"] * AMDGPU_GPU_PAGE, (f["last"] + 1) * AMDGPU_GPU_PAGE
        return None

    def _vm_ranges(self) -> dict[tuple[str, ...], tuple[int, int]]:
        out: dict[tuple[str, ...], tuple[int, int]] = {}
        for e in self.log.events:
            ext = self._extent(e)
            key = self._vm_key(e)
            if ext is None or key is None:
                continue
            lo, hi = out.get(key, ext)
            out[key] = (min(lo, ext[0]), max(hi, ext[1]))
        return out

    # --- model objects -------------------------------------------------------------------

    def device(self, name: str, *, display: bool = False, planes: int = 1) -> str:
        dev = self.devices.get(name)
        if dev is None:
            fields: dict[str, Any] = {"flavour": "msm", "policy": self.policy}
            if planes != 1:
                fields["planes"] = planes
            if not display:
                fields["display"] = False
            dev = self.s.do("device", **fields)
            self.devices[name] = dev
        return dev

    def new_file(self, device: str, *, vm_bind: bool) -> tuple[str, str]:
        table = self.s.do("process")
        f = self.s.do("open", device=device, fds=table)
        if vm_bind:
            self.s.attempt("set_param_vm_bind", file=f)
        return f, table

    def vm(self, key: tuple[str, ...], line: int) -> _Vm:
        vm = self.vms.get(key)
        if vm is None:
            dev = self.device(key[1])
            f, table = self.new_file(dev, vm_bind=True)
            vm = _Vm(key, dev, f, table)
            lo, hi = self.ranges.get(key, (CONTEXT_WINDOW[0], CONTEXT_WINDOW[0]))
            start, size = CONTEXT_WINDOW
            if not (start <= lo and hi <= start + size):
                if hi - lo > size:
                    vm.skip = True
                    self.note(
                        f"VM {key[-1]}: its mappings span {hi - lo:#x} bytes, more than the "
                        f"model's context window ({size:#x}): not replayed",
                        line,
                    )
                else:
                    vm.shift = start - (lo & ~0x1F_FFFF)
                    self.note(
                        f"VM {key[-1]}: addresses shifted by {vm.shift:#x} into the model's "
                        "context window",
                        line,
                    )
            self.vms[key] = vm
            self.all_vms.append(vm)
        return vm

    def buffer(self, vm: _Vm, name: str, size: int) -> _Buffer:
        key = (vm.file, name)
        buf = self.buffers.get(key)
        if buf is None:
            handle = self.s.do("create_bo", file=vm.file, size=size)
            buf = _Buffer(vm.file, handle)
            self.buffers[key] = buf
        return buf

    def ok(self, op: str, **fields: Any) -> bool:
        """Run and record ``op``; False if the model refused it (recorded with its errno)."""
        try:
            self.s.do(op, **fields)
        except GpuvmError:
            return False
        return True

    def bind(self, vm: _Vm, addr: int, range_: int, buf: _Buffer, offset: int) -> bool:
        try:
            self.s.do(
                "vm_bind",
                file=vm.file,
                ops=[["map", addr + vm.shift, range_, buf.handle, offset]],
            )
        except GpuvmError:
            return False
        return True

    def unbind(self, m: _Mapping) -> bool:
        try:
            self.s.do("vm_bind", file=m.vm.file, ops=[["unmap", m.addr, m.range]])
        except GpuvmError:
            return False
        return True

    def rebind(self, vm: _Vm) -> None:
        """An ``exec`` in ``vm``'s file re-maps its evicted buffers; retired at once (the
        log's rebinds say nothing about when the job completes)."""
        if self.ok("exec", file=vm.file):
            self.ok("retire", device=vm.device)
        for (f, _), b in self.buffers.items():
            if f == vm.file:
                b.evicted = False

    # --- events --------------------------------------------------------------------------

    def run(self) -> None:
        for e in self.log.events:
            if self.frame_due and e.name != "drm_vblank_event_delivered":
                self.end_frame()
            handler = getattr(self, f"_on_{e.name}", None)
            if handler is None:
                handler = getattr(self, f"_on_{EVENTS[e.name].system}_other")
            handler(e)
        if self.frame_due:
            self.end_frame()
        self.teardown()

    def end_frame(self) -> None:
        self.frame_due = False
        self.s.do("frame")
        self.frames += 1

    # xe

    def _on_xe_vma_bind(self, e: ParsedEvent) -> None:
        f = e.fields
        vm = self._live_vm(e)
        if vm is None:
            return
        if f["vma"] in self.vmas:
            if e.name == "xe_vma_pf_bind":
                self._on_xe_vma_rebind_exec(e)
                return
            self.note("xe_vma_bind of a VMA already bound: skipped", e.line.line)
            return
        if f["userptr"]:
            self.note("userptr VMA modelled as a buffer object of its size", e.line.line)
        addr, range_ = f["start"], f["end"] + 1 - f["start"]
        size = -(-range_ // PAGE) * PAGE
        # A freed VMA's address may be reused: the buffer is named by pointer and line.
        buf = self.buffer(vm, f"{f['vma']}@{e.line.line}", size)
        if self.bind(vm, addr, range_, buf, 0):
            m = _Mapping(vm, addr + vm.shift, range_, buf.handle, f"{f['vma']}@{e.line.line}")
            vm.mappings[m.addr] = m
            self.vmas[f["vma"]] = m
        else:
            self.note("xe_vma_bind refused by the model (recorded as refused)", e.line.line)

    _on_xe_vma_pf_bind = _on_xe_vma_bind

    def _on_xe_vma_unbind(self, e: ParsedEvent) -> None:
        m = self.vmas.pop(e.fields["vma"], None)
        if m is None:
            self.note(
                "xe_vma_unbind of a VMA the log never bound (bound before tracing began)",
                e.line.line,
            )
            return
        m.vm.mappings.pop(m.addr, None)
        self.unbind(m)
        self.ok("gem_close", file=m.vm.file, handle=m.handle)
        self.buffers.pop((m.vm.file, m.buffer), None)

    def _on_xe_vma_evict(self, e: ParsedEvent) -> None:
        m = self.vmas.get(e.fields["vma"])
        if m is None:
            self.note("xe_vma_evict of a VMA the log never bound", e.line.line)
            return
        buf = self.buffers[(m.vm.file, m.buffer)]
        if not self.ok("evict", file=m.vm.file, handle=m.handle):
            self.note("eviction refused by the model (busy)", e.line.line)
            return
        buf.evicted = True

    def _on_xe_vma_rebind_exec(self, e: ParsedEvent) -> None:
        m = self.vmas.get(e.fields["vma"])
        if m is None:
            self.note(f"{e.name} of a VMA the log never bound", e.line.line)
            return
        if self.buffers[(m.vm.file, m.buffer)].evicted:
            self.rebind(m.vm)
        else:
            self.note(
                f"{e.name} without an eviction in the log before it: the model's mapping "
                "is still valid, nothing replayed",
                e.line.line,
            )

    _on_xe_vma_rebind_worker = _on_xe_vma_rebind_exec
    _on_xe_vma_userptr_rebind_exec = _on_xe_vma_rebind_exec
    _on_xe_vma_userptr_rebind_worker = _on_xe_vma_rebind_exec

    def _on_xe_vma_invalidate(self, e: ParsedEvent) -> None:
        self.note(
            f"{e.name}: the model has no userptr / notifier invalidation; counted only",
            e.line.line,
        )

    _on_xe_vma_userptr_invalidate = _on_xe_vma_invalidate

    def _on_xe_bo_move(self, e: ParsedEvent) -> None:
        f = e.fields
        self.moves.append(
            {
                "line": e.line.line,
                "driver": "xe",
                "bo": f["bo"],
                "size": f["size"],
                "from": f["src"],
                "to": f["dst"],
            }
        )
        self.note(
            "xe_bo_move: xe's VMA events name no buffer object, so a move cannot be tied to "
            "a mapping; listed under moves, not replayed",
            e.line.line,
        )

    def _on_xe_gt_tlb_invalidation_fence_send(self, e: ParsedEvent) -> None:
        self.tlb_sent += 1
        key = (e.fields.get("dev", ""), e.fields["seqno"])
        self.tlb_pending[key] = e.line.line

    def _on_xe_gt_tlb_invalidation_fence_recv(self, e: ParsedEvent) -> None:
        key = (e.fields.get("dev", ""), e.fields["seqno"])
        if self.tlb_pending.pop(key, None) is None:
            self.note("TLB invalidation fence received without its send in the log", e.line.line)
        else:
            self.tlb_received += 1

    def _on_xe_gt_tlb_invalidation_fence_timeout(self, e: ParsedEvent) -> None:
        self.note("TLB invalidation fence timed out (the model never times out)", e.line.line)

    def _on_xe_vm_create(self, e: ParsedEvent) -> None:
        f = e.fields
        self.vm(("xe", f.get("dev", "xe"), f["vm"]), e.line.line)

    def _on_xe_vm_free(self, e: ParsedEvent) -> None:
        f = e.fields
        key = ("xe", f.get("dev", "xe"), f["vm"])
        vm = self.vms.pop(key, None)
        if vm is None:
            self.note("xe_vm_free of a VM the log never used", e.line.line)
            return
        self.vmas = {k: m for k, m in self.vmas.items() if m.vm is not vm}
        self.ok("close", file=vm.file)

    def _on_xe_vm_kill(self, e: ParsedEvent) -> None:
        self.note("xe_vm_kill: counted only", e.line.line)

    # amdgpu

    def _on_amdgpu_vm_bo_map(self, e: ParsedEvent) -> None:
        f = e.fields
        vm = self._live_vm(e)
        if vm is None:
            return
        if (vm.file, f["bo"]) not in self.buffers and any(
            name == f["bo"] for _, name in self.buffers
        ):
            self.note(
                "amdgpu buffer mapped by more than one process: a separate model buffer in each",
                e.line.line,
            )
        addr = f["start"] * AMDGPU_GPU_PAGE
        range_ = (f["last"] - f["start"] + 1) * AMDGPU_GPU_PAGE
        buf = self.buffer(vm, f["bo"], self.sizes.get(f["bo"], PAGE))
        if self.bind(vm, addr, range_, buf, f["offset"]):
            m = _Mapping(vm, addr + vm.shift, range_, buf.handle, f["bo"])
            vm.mappings[m.addr] = m
        else:
            self.note("amdgpu_vm_bo_map refused by the model (recorded as refused)", e.line.line)

    def _on_amdgpu_vm_bo_unmap(self, e: ParsedEvent) -> None:
        f = e.fields
        vm = self.vms.get(self._known_key(e))
        addr = f["start"] * AMDGPU_GPU_PAGE
        m = None if vm is None else vm.mappings.pop(addr + vm.shift, None)
        if m is None:
            self.note("amdgpu_vm_bo_unmap of a mapping the log never made", e.line.line)
            return
        self.unbind(m)

    def _on_amdgpu_vm_bo_update(self, e: ParsedEvent) -> None:
        vm = self.vms.get(self._known_key(e))
        m = None if vm is None else vm.mappings.get(e.fields["soffs"] * AMDGPU_GPU_PAGE + vm.shift)
        if m is not None and vm is not None and self.buffers[(vm.file, m.buffer)].evicted:
            self.rebind(vm)
            return
        self.note(
            "amdgpu_vm_bo_update of a valid mapping: the model wrote its page-table entries "
            "at map time; counted only",
            e.line.line,
        )

    def _on_amdgpu_bo_move(self, e: ParsedEvent) -> None:
        f = e.fields
        self.moves.append(
            {
                "line": e.line.line,
                "driver": "amdgpu",
                "bo": f["bo"],
                "size": f["size"],
                "from": f["src"],
                "to": f["dst"],
            }
        )
        if str(f["src"]) not in _VRAM or str(f["dst"]) in _VRAM:
            return
        found = False
        for (fl, name), buf in self.buffers.items():
            if name != f["bo"] or buf.evicted:
                continue
            vm = next(v for v in self.vms.values() if v.file == fl)
            if not any(m.buffer == name for m in vm.mappings.values()):
                continue
            found = True
            if not self.ok("evict", file=fl, handle=buf.handle):
                self.note("eviction refused by the model (busy)", e.line.line)
            else:
                buf.evicted = True
        if not found:
            self.note(
                "amdgpu_bo_move out of VRAM of a buffer with no mapping: nothing to evict",
                e.line.line,
            )

    _on_amdgpu_ttm_bo_move = _on_amdgpu_bo_move

    def _on_amdgpu_other(self, e: ParsedEvent) -> None:
        if e.name == "amdgpu_bo_create":
            return  # sizes were taken in the first pass
        self.note(
            f"{e.name}: page-table detail below the model's map / unmap; counted only",
            e.line.line,
        )

    # msm

    def _on_drm_msm_gpu_other(self, e: ParsedEvent) -> None:
        self.note(
            f"{e.name}: msm's GPU tracepoints name no VA or buffer; counted only", e.line.line
        )

    # dma-buf

    def _side(self, table: dict[str, tuple[str, str]], device: str) -> tuple[str, str]:
        side = table.get(device)
        if side is None:
            side = table[device] = self.new_file(device, vm_bind=False)
        return side

    def _on_dma_buf_export(self, e: ParsedEvent) -> None:
        f = e.fields
        dev = self.device(f["exp_name"])
        fl, table = self._side(self.exporters, dev)
        handle = self.s.do("create_bo", file=fl, size=-(-f["size"] // PAGE) * PAGE)
        fd = self.s.do("prime_handle_to_fd", file=fl, handle=handle)
        self.dmabufs[f["ino"]] = (fl, table, fd)

    def _on_dma_buf_dynamic_attach(self, e: ParsedEvent) -> None:
        f = e.fields
        exp = self.dmabufs.get(f["ino"])
        if exp is None:
            self.note("dma-buf attached that the log never exported", e.line.line)
            return
        dev = self.device(f["dev_name"])
        fl, table = self._side(self.importers, dev)
        fd = self.s.do("fd_send", table=exp[1], fd=exp[2], to=table)
        handle = self.s.attempt("prime_fd_to_handle", file=fl, fd=fd)
        self.s.do("fd_close", table=table, fd=fd)
        if handle is None:
            self.note("dma-buf import refused by the model (recorded as refused)", e.line.line)
            return
        self.attachments[(f["ino"], f["attachment"])] = (fl, handle)

    def _on_dma_buf_detach(self, e: ParsedEvent) -> None:
        f = e.fields
        att = self.attachments.pop((f["ino"], f["attachment"]), None)
        if att is None:
            self.note("dma-buf detach of an attachment the log never made", e.line.line)
            return
        self.ok("gem_close", file=att[0], handle=att[1])

    def _on_dma_buf_put(self, e: ParsedEvent) -> None:
        """The exporter's fd (standing for the log's file reference) is closed."""
        exp = self.dmabufs.pop(e.fields["ino"], None)
        if exp is None:
            self.note("dma_buf_put of a dma-buf the log never exported", e.line.line)
            return
        self.ok("fd_close", table=exp[1], fd=exp[2])

    def _on_dma_buf_other(self, e: ParsedEvent) -> None:
        self.note(
            f"{e.name}: fd and mmap bookkeeping the model does not need; counted only",
            e.line.line,
        )

    # drm

    def _on_drm_vblank_event(self, e: ParsedEvent) -> None:
        if e.fields["crtc"] != self.clock:
            self.note(
                f"vblank on a CRTC other than the frame clock (CRTC {self.clock}); counted only",
                e.line.line,
            )
            return
        # Flips delivered right after this vblank belong to the frame it ends.
        self.frame_due = True

    def _on_drm_vblank_event_delivered(self, e: ParsedEvent) -> None:
        crtc = e.fields["crtc"]
        if crtc < 0:
            self.note("vblank event delivered for a negative CRTC index", e.line.line)
            return
        if self.display is None:
            self.display = self.device("display", display=True, planes=self.planes)
            self.compositor, _ = self.new_file(self.display, vm_bind=False)
            self.note(
                f"page flips: the log does not say which buffer a flip showed; each CRTC "
                f"flips a {self.swapchain}-buffer swapchain of {self.scanout_size} bytes in "
                "turn",
                e.line.line,
            )
        comp = self.compositor
        assert comp is not None
        chain = self.chains.get(crtc)
        if chain is None:
            chain = []
            for _ in range(self.swapchain):
                h = self.s.do("create_bo", file=comp, size=self.scanout_size)
                chain.append(self.s.do("add_fb", file=comp, handles=[h]))
            self.chains[crtc] = chain
        i = self.flip_index.get(crtc, 0)
        self.flip_index[crtc] = i + 1
        if not self.ok("page_flip", file=comp, plane=crtc, fb=chain[i % len(chain)]):
            self.note("page flip refused by the model (recorded as refused)", e.line.line)
            return
        self.flips += 1

    def _on_drm_other(self, e: ParsedEvent) -> None:
        self.note(f"{e.name}: counted only", e.line.line)

    # --- the end -------------------------------------------------------------------------

    def teardown(self) -> None:
        closed = {r["file"] for r in self.s.lines if r["op"] == "close" and "error" not in r}
        for f in self.s.ids("file"):
            if f not in closed:
                self.ok("close", file=f)
        for d in self.s.ids("dev"):
            self.ok("device_close", device=d)


def reconstruct(
    log: ParsedLog | str,
    *,
    policy: str = DEFAULT_POLICY,
    swapchain: int = 3,
    scanout_size: int = 8294400,
) -> Reconstruction:
    """Rebuild ``log`` (parsed, or text) as a model trace under ``policy``.  Raises
    :class:`IngestError` if the log has malformed lines (nothing is built)."""
    parsed = parse_log(log) if isinstance(log, str) else log
    if parsed.problems:
        raise IngestError(parsed.problems)
    b = _Builder(parsed, policy, swapchain, scanout_size)
    b.run()
    return Reconstruction(
        session=b.s,
        log=parsed,
        policy=policy,
        devices={v: k for k, v in b.devices.items()},
        vms={vm.file: "/".join(vm.key[1:]) for vm in b.all_vms},
        frames=b.frames,
        flips=b.flips,
        notes=b.note_lines(),
        counters=b.counters,
        tlb_sent=b.tlb_sent,
        tlb_received=b.tlb_received,
        moves=b.moves,
    )
