"""A hypothesis state machine over one shared buffer: attach (static, dynamic, p2p, with
or without NO_MOVE) / map / remap / unmap / pin / unpin / exporter move / exporter use /
VRAM pressure / detach / close, under the amdgpu and xe exporter behaviours.  After every
step ``DmaBuf.check_invariants`` holds; every refused call raised a GpuvmError
with an errno and changed nothing; a pinned backing never moved; every dynamic importer
was notified before any move of a mapped backing."""

from __future__ import annotations

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gpuvm.core.errors import GpuvmError, UseAfterFree
from gpuvm.core.gem import GemObject
from gpuvm.drm.caps import (
    EXPORTERS,
    DeviceCaps,
    Topology,
    amdgpu_dgpu,
    i915_igpu,
    soc_display,
    xe_igpu,
)
from gpuvm.drm.dmabuf import Attachment, DmaBuf, Exporter, ImporterOps
from gpuvm.drm.placement import MIB, Domain, MemoryManager, Resource, amdgpu_domains

SIZE = 32 * MIB

IMPORTERS: list[tuple[DeviceCaps, bool]] = [
    (amdgpu_dgpu("dgpu2"), True),  # dynamic, p2p
    (xe_igpu("igpu-xe"), True),  # dynamic, no p2p path
    (i915_igpu("igpu"), False),  # static
    (soc_display("display"), False),  # static, 32-bit, contiguous
]


class DmaBufMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.atts: list[Attachment] = []
        self.fillers: list[GemObject] = []
        self.notified: list[tuple[Attachment, Resource | None]] = []
        self.closed = False

    @initialize(flavour=st.sampled_from(["amdgpu", "xe"]), place=st.booleans())
    def setup(self, flavour: str, place: bool) -> None:
        topo = Topology()
        caps = attrs.evolve(amdgpu_dgpu("dgpu"), exporter=EXPORTERS[flavour])
        topo.add(caps, root="pci0", switch="sw0")
        topo.add("dgpu2", root="pci0", switch="sw0")
        self.mem = MemoryManager(vram=3 * SIZE, tt=3 * SIZE, system=8 * SIZE, name="dgpu")
        obj = GemObject(SIZE, name="shared")
        self.mem.add(obj, *amdgpu_domains([Domain.VRAM]))
        if place:
            self.mem.validate(obj)
        self.d = DmaBuf(
            obj,
            "dgpu",
            SIZE,
            obj.resv,
            name="shared",
            sharing=Exporter(caps, self.mem, topology=topo),
        )
        self.d.get("fd")

    # --- helpers --------------------------------------------------------------------------

    def _state(self) -> tuple[object, ...]:
        return (self.mem.snapshot(), self.d.state(), self.d.refs.total, len(self.atts))

    def _notify(self, att: Attachment) -> None:
        self.notified.append((att, att.dmabuf.backing.resource))

    def _try(self, call: object) -> None:
        assert callable(call)
        before = self._state()
        res_before = None if self.closed else self.d.backing.resource
        pinned_before = not self.closed and self.d.backing.pinned
        mapped_dynamic = [a for a in self.atts if a.dynamic and a.mappings and not a.stale]
        self.notified.clear()
        try:
            call()
        except GpuvmError as e:
            assert e.errno > 0
            assert self._state() == before, f"refused {e!r} changed the model"
            return
        if self.closed or self.d.released:
            return
        res_after = self.d.backing.resource
        if pinned_before and self.d.backing.pinned:
            assert res_after == res_before, "a pinned backing moved"
        if res_before is not None and res_after != res_before:
            notified = {id(a) for a, _ in self.notified}
            leaving_system = res_before.domain == Domain.SYSTEM
            for a in mapped_dynamic:
                if a in self.atts and not leaving_system:
                    assert id(a) in notified, f"{a!r} not notified of the move"
            for _, seen in self.notified:
                assert seen is None or seen.domain == res_before.domain, "notified after move"

    def _att(self, i: int) -> Attachment:
        return self.atts[i % len(self.atts)]

    # --- rules ----------------------------------------------------------------------------

    @precondition(lambda self: not self.closed)
    @rule(which=st.integers(0, len(IMPORTERS) - 1), no_move=st.booleans())
    def attach(self, which: int, no_move: bool) -> None:
        caps, dynamic = IMPORTERS[which]
        ops = ImporterOps(self._notify, allow_peer2peer=caps.allow_peer2peer) if dynamic else None

        def call() -> None:
            self.atts.append(self.d.attach(caps.name, caps, ops, no_move=no_move))

        self._try(call)

    @precondition(lambda self: not self.closed and self.atts)
    @rule(i=st.integers(0, 20))
    def map(self, i: int) -> None:
        self._try(lambda: self.d.map(self._att(i)))

    @precondition(lambda self: not self.closed and self.atts)
    @rule(i=st.integers(0, 20))
    def remap(self, i: int) -> None:
        self._try(lambda: self.d.remap(self._att(i)))

    @precondition(lambda self: not self.closed and self.atts)
    @rule(i=st.integers(0, 20))
    def unmap(self, i: int) -> None:
        self._try(lambda: self.d.unmap(self._att(i)))

    @precondition(lambda self: not self.closed and self.atts)
    @rule(i=st.integers(0, 20))
    def pin(self, i: int) -> None:
        self._try(lambda: self.d.pin(self._att(i)))

    @precondition(lambda self: not self.closed and self.atts)
    @rule(i=st.integers(0, 20))
    def unpin(self, i: int) -> None:
        self._try(lambda: self.d.unpin(self._att(i)))

    @precondition(lambda self: not self.closed)
    @rule(dom=st.sampled_from(list(Domain)))
    def exporter_move(self, dom: Domain) -> None:
        self._try(lambda: self.d.move(dom))

    @precondition(lambda self: not self.closed)
    @rule()
    def exporter_use(self) -> None:
        self._try(self.d.exporter_use)

    @precondition(lambda self: not self.closed)
    @rule()
    def vram_pressure(self) -> None:
        """Another buffer wants VRAM: LRU eviction may move the shared buffer (an
        exporter-side move: the move checks run as for any other call)."""
        obj = GemObject(SIZE, name=f"filler{len(self.fillers)}")
        before = self._state()

        def call() -> None:
            self.mem.add(obj, Domain.VRAM)
            try:
                self.mem.validate(obj)
            except GpuvmError:
                self.mem.remove(obj)
                raise
            self.fillers.append(obj)

        try:
            self._try(call)
        finally:
            if obj not in self.fillers:
                assert self._state() == before

    @precondition(lambda self: self.fillers)
    @rule()
    def free_filler(self) -> None:
        self.mem.remove(self.fillers.pop(0))

    @precondition(lambda self: not self.closed and self.atts)
    @rule(i=st.integers(0, 20), teardown=st.booleans())
    def detach(self, i: int, teardown: bool) -> None:
        att = self._att(i)

        def call() -> None:
            self.d.detach(att, teardown=teardown)
            self.atts.remove(att)

        self._try(call)

    @precondition(lambda self: not self.closed)
    @rule()
    def close(self) -> None:
        for a in list(self.atts):
            self.d.detach(a, teardown=True)
        self.atts.clear()
        self.d.put("fd")
        self.closed = True
        assert self.d.released and self.d._on_move not in self.mem.on_move
        assert self.mem.backing(self.d.priv).pin_count == 0

    @precondition(lambda self: self.closed)
    @rule()
    def use_after_close(self) -> None:
        try:
            self.d.move(Domain.TT)
        except UseAfterFree:
            return
        raise AssertionError("move on a released dma-buf was accepted")

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def invariants(self) -> None:
        if not hasattr(self, "d"):
            return
        self.d.check_invariants()
        self.mem.check_invariants()
        if not self.closed:
            b = self.d.backing
            held = sum(a.pins + a.map_pins + a.attach_pins for a in self.atts)
            assert b.pin_count == held, f"pin_count {b.pin_count} != held {held}"


TestDmaBufMachine = DmaBufMachine.TestCase
