"""A state machine over the legacy path: random get/set iova, pin, unpin, evict, purge,
close and buffer free on two address spaces, checked against a dictionary model after every
step, with invariants checked and refused operations shown to change nothing."""

from __future__ import annotations

from typing import Any

from flip_scenarios import of
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gpuvm import EventBus, EventLog, GemObject
from gpuvm.core.errors import GpuvmError
from gpuvm.core.events import Mapped, Unmapped
from legacy import AddressSpace, bo_vmas, path
from legacy.aspace import PAGE_SIZE

P = PAGE_SIZE
WINDOW = 24


class LegacyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.bus = EventBus()
        self.log = EventLog()
        self.bus.subscribe(self.log)
        self.vms = [
            AddressSpace(P, WINDOW * P, 4 * P, 2 * P, name="a", bus=self.bus, tlb_kind="per_page"),
            AddressSpace(P, WINDOW * P, name="b", bus=self.bus),
        ]
        self.bos = [GemObject(n * P, name=f"bo{n}", bus=self.bus) for n in (1, 2, 3, 5)]
        # model: (bo index, vm index) -> [iova, mapped, pins]
        self.model: dict[tuple[int, int], list[Any]] = {}
        self.maps = 0
        self.unmaps = 0

    # --- helpers -------------------------------------------------------------------------

    def state(self) -> object:
        def vmas_of(b: GemObject) -> list[str]:
            lst = bo_vmas(b)
            return [repr(x) for x in lst.vmas] if lst is not None else []

        return (
            [(repr(v), v.refs.total, [repr(x) for x in v.vmas]) for v in self.vms],
            [(b.freed, vmas_of(b)) for b in self.bos],
        )

    def attempt(self, fn: Any, *args: Any) -> object:
        before = self.state()
        n_events = len(self.log.events)
        try:
            return fn(*args)
        except GpuvmError:
            assert self.state() == before, "a refused call changed the model"
            assert not of(self.log, Mapped)[n_events:] and len(self.log.events) == n_events
            return None

    def alive(self, i: int) -> bool:
        return not self.bos[i].freed

    # --- rules ---------------------------------------------------------------------------

    @rule(i=st.integers(0, 3), v=st.integers(0, 1))
    def get_iova(self, i: int, v: int) -> None:
        if not self.alive(i):
            return
        vma = self.attempt(path.get_iova, self.vms[v], self.bos[i])
        if vma is not None:
            self.model.setdefault((i, v), [vma.addr, False, 0])  # type: ignore[attr-defined]
            assert self.model[(i, v)][0] == vma.addr  # type: ignore[attr-defined]

    @rule(i=st.integers(0, 3), v=st.integers(0, 1), page=st.integers(0, WINDOW + 2))
    def set_iova(self, i: int, v: int, page: int) -> None:
        if not self.alive(i):
            return
        iova = page * P
        cur = self.model.get((i, v))
        res = self.attempt(path.set_iova, self.vms[v], self.bos[i], iova)
        if iova == 0:
            if cur is not None:  # clear_iova: no pin check
                self.unmaps += cur[1]
                del self.model[(i, v)]
            return
        if res is not None:
            assert cur is None or cur[0] == iova
            self.model.setdefault((i, v), [iova, False, 0])

    @rule(i=st.integers(0, 3), v=st.integers(0, 1))
    def pin(self, i: int, v: int) -> None:
        if not self.alive(i):
            return
        vma = self.attempt(path.pin, self.vms[v], self.bos[i])
        if vma is not None:
            m = self.model.setdefault((i, v), [vma.addr, False, 0])  # type: ignore[attr-defined]
            self.maps += not m[1]
            m[1] = True
            m[2] += 1

    @rule(i=st.integers(0, 3), v=st.integers(0, 1))
    def unpin(self, i: int, v: int) -> None:
        if not self.alive(i):
            return
        if self.attempt(path.unpin, self.vms[v], self.bos[i]) is not None:
            self.model[(i, v)][2] -= 1

    @rule(i=st.integers(0, 3), purge=st.booleans())
    def evict(self, i: int, purge: bool) -> None:
        if not self.alive(i):
            return
        res = self.attempt(path.purge if purge else path.evict, self.bos[i])
        if res is not None:
            for (bi, _), m in self.model.items():
                if bi == i:
                    self.unmaps += m[1]
                    m[1] = False

    @rule(i=st.integers(0, 3), v=st.integers(0, 1))
    def close(self, i: int, v: int) -> None:
        if not self.alive(i):
            return
        if self.attempt(path.close_vma, self.vms[v], self.bos[i]):
            self.unmaps += self.model.pop((i, v))[1]

    @precondition(lambda self: any(not b.freed for b in self.bos))
    @rule(i=st.integers(0, 3))
    def free(self, i: int) -> None:
        if not self.alive(i):
            return
        self.bos[i].put()
        for key in [k for k in self.model if k[0] == i]:
            self.unmaps += self.model.pop(key)[1]

    # --- checks --------------------------------------------------------------------------

    @invariant()
    def matches_model(self) -> None:
        for v, vm in enumerate(self.vms):
            vm.check_invariants()
            got = {(self.bos.index(x.obj), v): [x.addr, x.mapped, x.pin_count] for x in vm.vmas}
            want = {k: m for k, m in self.model.items() if k[1] == v}
            assert got == want
            assert vm.refs.total == 1 + len(want)
        assert len(of(self.log, Mapped)) == self.maps
        assert len(of(self.log, Unmapped)) == self.unmaps
        for b in self.bos:
            if not b.freed:
                assert b.refcount == 1  # VMAs never hold their buffer


TestLegacyMachine = LegacyMachine.TestCase
