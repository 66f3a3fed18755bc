"""A hypothesis state machine over two VMs and four GEMs, cross-checked against a
plain model after every step.

VM ``vm0`` has a kernel-reserved node and no ``vm_bo_validate`` callback; ``vm1`` is
RESV_PROTECTED and has one.  GEMs ``a`` and ``b`` are external to both VMs; ``p0`` shares
``vm0``'s reservation (private to vm0, external to vm1) and ``p1`` the reverse.

Rules: map, unmap, multi-request bind, raw insert, remove (of raw and of linked VAs, the
latter leaving an orphan still linked), unlink of orphans, link of raw VAs, kernel-node
remove (WARN), evict/unevict of one VmBo or a whole GEM, validate (with failing
objects), bo_obtain / obtain_prealloc / put, prefetch, lock sets, stale op lists (must
raise StaleOps and change nothing), dropping a GEM's owner reference.  Every rejected
call is checked with a whole-model snapshot.  Teardown puts caller references, unlinks
orphans and closes both VMs, which must then be freed exactly once with every GEM back to
its owner reference.

The plain model: a per-page map ``page -> (GEM index, object offset, linked)`` per VM;
caller references per (VM, GEM); which GEMs are still alive; ordered mirrors of the
extobj and evict lists with the kernel's rules (``drm_gpuvm_bo_evict``,
``prepare_objects``' deferred add, validate's drop under RESV_PROTECTED).  From it the
invariant derives, independently of the model's own bookkeeping: which VmBos must exist,
every VmBo's holders (``kref == linked VAs + caller refs``), every GEM's holders
(``refcount == owner ref + VmBos``), the layout page by page, and the lists in order.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from reference_sm import u64
from snapshot import unchanged

from gpuvm import (
    CALLER,
    OWNER,
    GemObject,
    GpuVm,
    GpuvmError,
    GpuVmFlags,
    InvalidRange,
    MapRequest,
    NoObject,
    NotImmediateMode,
    NotInserted,
    NotSupported,
    PrefetchOp,
    RefcountUnderflow,
    StaleOps,
    UnmapRequest,
    UseAfterFree,
    Va,
    VaExists,
    VmBo,
    ZeroRange,
    gem_evict,
)

WIN = 48
KNODE = (30, 4)  # vm0's kernel-reserved node
TOP = 1 << 64
ENOMEM = -errno.ENOMEM

VM = st.integers(0, 1)
ADDR = st.integers(0, WIN + 2)
RNG = st.integers(1, 10)  # zero ranges have their own rule
GEM = st.integers(0, 3)
GEM_OR_NONE = st.one_of(st.none(), GEM)
LINE = st.sampled_from([0, 5, TOP - 3])
IDX = st.integers(0, 1 << 16)

Page = tuple[int | None, int, bool]


class VmMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.vm_free_calls = [0, 0]
        self.validate_calls: list[VmBo] = []
        self.vms = [
            GpuVm(
                0,
                WIN,
                reserve_start=KNODE[0],
                reserve_range=KNODE[1],
                name="vm0",
                vm_free=lambda vm: self._freed_vm(0),
                obtain_locked=False,  # the VmBo-obtain API before drm_gpuvm_bo_obtain_locked
            ),
            GpuVm(
                0,
                WIN,
                name="vm1",
                flags=GpuVmFlags.RESV_PROTECTED,
                vm_free=lambda vm: self._freed_vm(1),
                vm_bo_validate=self._validate_cb,
            ),
        ]
        self.gems = [
            GemObject(4 * WIN, name="a"),
            GemObject(4 * WIN, name="b"),
            GemObject(4 * WIN, name="p0", resv=self.vms[0].resv),
            GemObject(4 * WIN, name="p1", resv=self.vms[1].resv),
        ]
        self.owner = [True] * 4
        self.dead = [False] * 4
        self.caller: dict[tuple[int, int], int] = {}
        self.pages: list[dict[int, Page]] = [{}, {}]
        self.orphans: list[Va] = []
        # mirrors keyed by GEM index (one VmBo per VM and GEM), in list order
        self.extobj: list[dict[int, None]] = [{}, {}]
        self.evict: list[dict[int, None]] = [{}, {}]
        self.evicted: list[dict[int, bool]] = [{}, {}]
        self.warnings = [0, 0]
        self.failing: set[int] = set()

    # --- helpers ------------------------------------------------------------------------

    def _freed_vm(self, v: int) -> None:
        self.vm_free_calls[v] += 1

    def _validate_cb(self, vb: VmBo) -> int:
        self.validate_calls.append(vb)
        if self.gems.index(vb.obj) in self.failing:
            return ENOMEM
        vb.evict(False)
        return 0

    def roots(self) -> tuple[object, ...]:
        return (*self.vms, *self.gems, *self.orphans)

    def gidx(self, obj: GemObject | None) -> int | None:
        return None if obj is None else self.gems.index(obj)

    def external(self, v: int, g: int) -> bool:
        return not (g == 2 and v == 0) and not (g == 3 and v == 1)

    def valid(self, v: int, addr: int, rng: int) -> bool:
        """``drm_gpuvm_range_valid`` plus the model's zero-range refusal."""
        if rng == 0 or addr + rng > WIN:
            return False
        ks, kr = KNODE
        return not (v == 0 and addr < ks + kr and ks < addr + rng)

    def range_error(self, v: int, addr: int, rng: int) -> type[GpuvmError] | None:
        if rng == 0:
            return ZeroRange
        return None if self.valid(v, addr, rng) else InvalidRange

    def map_error(self, v: int, addr: int, rng: int, g: int | None) -> type[GpuvmError] | None:
        err = self.range_error(v, addr, rng)
        if err is None and g is not None and self.dead[g]:
            return UseAfterFree
        return err

    def vm_bo_expected(self, v: int, g: int) -> bool:
        """A VmBo of GEM ``g`` exists in VM ``v`` iff a caller holds it or a VA (in the tree
        or orphaned) is linked to it."""
        if self.caller.get((v, g), 0):
            return True
        if any(pg == g and linked for pg, _o, linked in self.pages[v].values()):
            return True
        return any(o.vm is self.vms[v] and self.gidx(o.obj) == g for o in self.orphans)

    def sync(self, *, gems: bool = True) -> None:
        """VmBos no longer expected leave the mirrors (destruction); with ``gems``, GEMs
        with no owner and no VmBo left are dead."""
        for v in (0, 1):
            for g in range(4):
                if not self.vm_bo_expected(v, g):
                    self.extobj[v].pop(g, None)
                    self.evict[v].pop(g, None)
                    self.evicted[v].pop(g, None)
        if not gems:
            return
        for g in range(4):
            if not self.owner[g] and not any(self.vm_bo_expected(v, g) for v in (0, 1)):
                self.dead[g] = True

    def vm_bo(self, v: int, g: int) -> VmBo | None:
        return None if self.dead[g] else self.gems[g].vm_bo_for(self.vms[v])

    def model_map(self, v: int, addr: int, rng: int, g: int | None, off: int) -> None:
        for i in range(rng):
            self.pages[v][addr + i] = (g, u64(off + i), g is not None)
        if g is not None and self.external(v, g):
            self.extobj[v].setdefault(g, None)

    def model_unmap(self, v: int, addr: int, rng: int) -> None:
        for i in range(rng):
            self.pages[v].pop(addr + i, None)

    def mirror_evict(self, v: int, g: int, e: bool) -> None:
        """``drm_gpuvm_bo_evict``: with RESV_PROTECTED, external objects are not listed
        here (``prepare_objects`` does it later)."""
        self.evicted[v][g] = e
        if v == 1 and self.external(v, g):
            return
        if e:
            self.evict[v].setdefault(g, None)
        else:
            self.evict[v].pop(g, None)

    def rejected(self, err: type[GpuvmError], call: Any) -> None:
        with unchanged(*self.roots()), pytest.raises(err) as ei:
            call()
        assert type(ei.value) is err

    # --- mapping ------------------------------------------------------------------------

    @initialize()
    def initial_layout(self) -> None:
        """Start from mappings of every GEM, so VmBos exist from the first rule on."""
        for v, g, addr in ((0, 0, 0), (0, 1, 8), (0, 2, 16), (1, 0, 0), (1, 3, 8), (1, 2, 16)):
            self.map(v, addr, 6, g, 0)

    @rule(v=VM, addr=ADDR, rng=RNG, g=GEM_OR_NONE, line=LINE)
    def map(self, v: int, addr: int, rng: int, g: int | None, line: int) -> None:
        vm = self.vms[v]
        obj = None if g is None else self.gems[g]
        off = u64(addr + line)
        err = self.map_error(v, addr, rng, g)
        if err is not None:
            self.rejected(err, lambda: vm.map(addr, rng, obj, off))
            return
        created = vm.map(addr, rng, obj, off)
        assert created[-1].layout() == (addr, rng, obj, off)
        self.model_map(v, addr, rng, g, off)
        self.sync()

    @rule(v=VM, addr=ADDR, g=st.sampled_from([0, 2]), line=st.sampled_from([0, 5]))
    def map_long_lived(self, v: int, addr: int, g: int, line: int) -> None:
        """Map one of the GEMs that are never closed, on one of two lines: frequent
        merges and ``keep``, and material for evict/validate."""
        self.map(v, addr, 6, g, line)

    @rule(v=VM, addr=ADDR, g=GEM_OR_NONE)
    def zero_ranges(self, v: int, addr: int, g: int | None) -> None:
        vm = self.vms[v]
        obj = None if g is None else self.gems[g]
        self.rejected(ZeroRange, lambda: vm.map(addr, 0, obj, 0))
        self.rejected(ZeroRange, lambda: vm.unmap(addr, 0))
        self.rejected(ZeroRange, lambda: vm.insert(addr, 0, obj, 0))
        self.rejected(ZeroRange, lambda: vm.bind([UnmapRequest(0, 1), MapRequest(addr, 0)]))

    @rule(v=VM, addr=ADDR, rng=RNG)
    def unmap(self, v: int, addr: int, rng: int) -> None:
        vm = self.vms[v]
        err = self.range_error(v, addr, rng)
        if err is not None:
            self.rejected(err, lambda: vm.unmap(addr, rng))
            return
        vm.unmap(addr, rng)
        self.model_unmap(v, addr, rng)
        self.sync()

    @rule(
        v=VM,
        reqs=st.lists(
            st.tuples(st.booleans(), ADDR, RNG, GEM_OR_NONE, LINE), min_size=1, max_size=3
        ),
    )
    def bind(self, v: int, reqs: list[tuple[bool, int, int, int | None, int]]) -> None:
        vm = self.vms[v]
        requests: list[MapRequest | UnmapRequest] = []
        err: type[GpuvmError] | None = None
        for is_map, addr, rng, g, line in reqs:
            if is_map:
                obj = None if g is None else self.gems[g]
                requests.append(MapRequest(addr, rng, obj, u64(addr + line)))
                err = err or self.map_error(v, addr, rng, g)
            else:
                requests.append(UnmapRequest(addr, rng))
                err = err or self.range_error(v, addr, rng)
        if err is not None:
            self.rejected(err, lambda: vm.bind(requests))
            return
        vm.bind(requests)
        for req in requests:
            if isinstance(req, MapRequest):
                self.model_map(v, req.addr, req.range, self.gidx(req.obj), req.offset)
            else:
                self.model_unmap(v, req.addr, req.range)
            self.sync(gems=False)  # the bind holds its objects: none dies halfway
        self.sync()

    # --- raw tree operations ------------------------------------------------------------

    @rule(v=VM, addr=ADDR, rng=RNG, g=GEM_OR_NONE, off=st.integers(0, 8))
    def insert_raw(self, v: int, addr: int, rng: int, g: int | None, off: int) -> None:
        vm = self.vms[v]
        obj = None if g is None else self.gems[g]
        err = self.map_error(v, addr, rng, g)
        if err is None and any(addr + i in self.pages[v] for i in range(rng)):
            err = VaExists
        if err is not None:
            self.rejected(err, lambda: vm.insert(addr, rng, obj, off))
            return
        va = vm.insert(addr, rng, obj, off)
        assert va.inserted and va.vm is vm and va.vm_bo is None
        for i in range(rng):
            self.pages[v][addr + i] = (g, off + i, False)

    @precondition(lambda self: any(self.vms[v].vas for v in (0, 1)))
    @rule(v=VM, i=IDX)
    def remove(self, v: int, i: int) -> None:
        vm = self.vms[v]
        if not vm.vas:
            return
        va = vm.vas[i % len(vm.vas)]
        linked = va.vm_bo is not None
        vm.remove(va)
        assert not va.inserted
        self.model_unmap(v, va.addr, va.range)
        if linked:
            self.orphans.append(va)  # still holds its VmBo (and through it the VM)
        else:
            vm.free_va(va)
            assert va.freed
        self.rejected(NotInserted, lambda: vm.remove(va))  # a second remove

    @precondition(lambda self: bool(self.orphans))
    @rule(i=IDX)
    def unlink_orphan(self, i: int) -> None:
        va = self.orphans.pop(i % len(self.orphans))
        vm = va.vm
        assert vm is not None
        vm.unlink(va)
        vm.free_va(va)
        self.sync()

    @rule(v=VM, i=IDX)
    def link_raw(self, v: int, i: int) -> None:
        vm = self.vms[v]
        raw = [va for va in vm.vas if va.vm_bo is None and va.obj is not None]
        if not raw:
            return
        va = raw[i % len(raw)]
        assert va.obj is not None
        g = self.gems.index(va.obj)
        if self.dead[g]:  # a raw VA may outlive its buffer: the pointer dangles
            obj = va.obj
            self.rejected(UseAfterFree, lambda: vm.bo_obtain(obj))
            return
        vb = vm.bo_obtain(va.obj)
        vb.extobj_add()
        vm.link(va, vb)
        vb.put()
        if self.external(v, g):
            self.extobj[v].setdefault(g, None)
        for p in range(va.addr, va.end):
            pg, off, _ = self.pages[v][p]
            self.pages[v][p] = (pg, off, True)

    @rule()
    def remove_kernel_node(self) -> None:
        vm = self.vms[0]
        assert vm.kernel_node is not None
        vm.remove(vm.kernel_node)
        self.warnings[0] += 1

    # --- VmBos ----------------------------------------------------------------------------

    @rule(v=VM, g=GEM, prealloc=st.booleans())
    def bo_obtain(self, v: int, g: int, prealloc: bool) -> None:
        vm, gem = self.vms[v], self.gems[g]
        if self.dead[g]:
            self.rejected(UseAfterFree, lambda: vm.bo_obtain(gem))
            return
        before = gem.vm_bo_for(vm)
        if prealloc:
            pre = vm.bo_create(gem)
            if vm.obtain_locked and not vm.immediate_mode:  # the newest one needs the mode
                self.rejected(NotImmediateMode, lambda: vm.bo_obtain_prealloc(pre))
                pre.put()
                return
            vb = vm.bo_obtain_prealloc(pre)
            assert (pre.freed and vb is before) if before is not None else vb is pre
        else:
            vb = vm.bo_obtain(gem)
            assert before is None or vb is before
        self.caller[(v, g)] = self.caller.get((v, g), 0) + 1

    @rule(v=VM, g=GEM)
    def bo_put(self, v: int, g: int) -> None:
        vb = self.vm_bo(v, g)
        if vb is None:
            return
        if not self.caller.get((v, g), 0):
            self.rejected(RefcountUnderflow, lambda: vb.put(CALLER))
            return
        vb.put(CALLER)
        self.caller[(v, g)] -= 1
        self.sync()

    @rule(v=VM, g=GEM, e=st.booleans())
    def evict_one(self, v: int, g: int, e: bool) -> None:
        vb = self.vm_bo(v, g)
        if vb is None:
            return
        self.vms[v].bo_evict(vb, e)
        self.mirror_evict(v, g, e)

    @rule(g=GEM, e=st.booleans())
    def evict_gem(self, g: int, e: bool) -> None:
        gem = self.gems[g]
        if self.dead[g]:
            self.rejected(UseAfterFree, lambda: gem_evict(gem, e))
            return
        gem_evict(gem, e)
        for v in (0, 1):
            if self.vm_bo_expected(v, g):
                self.mirror_evict(v, g, e)

    @rule(g=GEM, on=st.booleans())
    def set_failing(self, g: int, on: bool) -> None:
        if on:
            self.failing.add(g)
        else:
            self.failing.discard(g)

    @rule(v=VM, gs=st.lists(GEM, min_size=1, max_size=3), prepare=st.booleans())
    def evict_then_validate(self, v: int, gs: list[int], prepare: bool) -> None:
        """Evict a few VmBos, maybe lock (RESV_PROTECTED lists evicted extobjs then),
        then validate: the evict list is rarely populated by chance alone."""
        for g in gs:
            self.evict_one(v, g, True)
        if prepare:
            self.lock_sets(v, 0, 1, None)
        self.validate(v, True)

    @rule(v=VM, with_cb=st.booleans())
    def validate(self, v: int, with_cb: bool) -> None:
        vm = self.vms[v]
        if v == 0 and not with_cb:
            self.rejected(NotSupported, lambda: vm.validate())
            return
        expect_calls: list[int] = []
        expect_ret = 0
        lst = self.evict[v]
        for g in list(lst):
            if g not in lst:
                continue
            expect_calls.append(g)
            if g in self.failing:
                expect_ret = ENOMEM
                break
            self.mirror_evict(v, g, False)  # what the callback does
            if v == 1 and not self.evicted[v][g]:
                lst.pop(g, None)
        self.validate_calls = []
        ret = vm.validate(self._validate_cb if with_cb else None)
        assert ret == expect_ret
        assert [self.gems.index(x.obj) for x in self.validate_calls] == expect_calls
        assert all(x.vm is vm for x in self.validate_calls)

    # --- GEM lifetime -----------------------------------------------------------------------

    @rule(g=st.sampled_from([1, 3]))
    def close_gem(self, g: int) -> None:
        """Drop the owner reference of ``b`` or ``p1`` (``a`` and ``p0`` live on)."""
        gem = self.gems[g]
        if not self.owner[g]:
            self.rejected(UseAfterFree if self.dead[g] else RefcountUnderflow, lambda: gem.put())
            return
        gem.put(OWNER)
        self.owner[g] = False
        self.sync()
        assert gem.freed == self.dead[g]

    # --- read-only operations -----------------------------------------------------------

    @rule(v=VM, addr=ADDR, rng=st.integers(0, WIN))
    def prefetch(self, v: int, addr: int, rng: int) -> None:
        vm = self.vms[v]
        ops = vm.prefetch_ops(addr, rng)
        got = []
        for op in ops:
            assert isinstance(op, PrefetchOp)
            got.append(op.va)
        if rng:
            want = [va for va in vm if va.addr < addr + rng and addr < va.end]
            assert [id(x) for x in got] == [id(x) for x in want]

    @rule(v=VM, addr=ADDR, rng=RNG, g=GEM_OR_NONE)
    def lock_sets(self, v: int, addr: int, rng: int, g: int | None) -> None:
        vm = self.vms[v]
        # exec_lock: VM resv + every extobj; under RESV_PROTECTED, prepare_objects also
        # lists evicted extobjs on the evict list (the deferred add)
        want = {vm.resv} | {self.gems[x].resv for x in self.extobj[v]}
        assert vm.exec_lock() == want
        if v == 1:
            for x in self.extobj[v]:
                if self.evicted[v].get(x):
                    self.evict[v].setdefault(x, None)
        if self.map_error(v, addr, rng, g) is not None:
            return
        span = [self.pages[v].get(addr + i) for i in range(rng)]
        objs = {p[0] for p in span if p is not None and p[0] is not None}
        obj = None if g is None else self.gems[g]
        want_map = {self.gems[x].resv for x in objs} | ({obj.resv} if obj else set())
        assert vm.sm_map_exec_lock(MapRequest(addr, rng, obj, 0)) == want_map
        assert vm.sm_unmap_exec_lock(addr, rng) == {self.gems[x].resv for x in objs}
        if any(p is not None and p[0] is None for p in span):
            self.rejected(NoObject, lambda: vm.prepare_range(addr, rng))
        else:
            assert vm.prepare_range(addr, rng) == {self.gems[x].resv for x in objs}

    # --- stale op lists -------------------------------------------------------------------

    @rule(v=VM, a1=ADDR, r1=RNG, a2=ADDR, r2=RNG, g=GEM_OR_NONE, unmap_first=st.booleans())
    def stale_ops(
        self, v: int, a1: int, r1: int, a2: int, r2: int, g: int | None, unmap_first: bool
    ) -> None:
        vm, other = self.vms[v], self.vms[1 - v]
        if self.map_error(v, a1, r1, g) or self.map_error(v, a2, r2, g):
            return
        obj = None if g is None else self.gems[g]
        ops = (
            vm.sm_unmap_ops(a1, r1)
            if unmap_first
            else vm.sm_map_ops(MapRequest(a1, r1, obj, u64(a1 + 7)))
        )
        self.rejected(StaleOps, lambda: other.apply(ops))
        vm.map(a2, r2, obj, a2)  # the VA space moves on: the list is stale
        self.model_map(v, a2, r2, g, a2)
        self.sync()
        self.rejected(StaleOps, lambda: vm.apply(ops))

    # --- invariants ---------------------------------------------------------------------

    @invariant()
    def consistent(self) -> None:
        for v, vm in enumerate(self.vms):
            vm.check_invariants()
            got: dict[int, Page] = {}
            for va in vm.vas:
                for i in range(va.range):
                    got[va.addr + i] = (self.gidx(va.obj), u64(va.offset + i), va.vm_bo is not None)
            assert got == self.pages[v]
            for g, gem in enumerate(self.gems):
                vb = self.vm_bo(v, g)
                assert (vb is not None) == self.vm_bo_expected(v, g), (v, g)
                if vb is None:
                    continue
                linked = [va for va in vm.vas if va.vm_bo is vb]
                linked += [o for o in self.orphans if o.vm_bo is vb]
                n_caller = self.caller.get((v, g), 0)
                holders: dict[object, int] = {va: 1 for va in linked}
                if n_caller:
                    holders[CALLER] = n_caller
                assert vb.refs.holders == holders
                assert vb.kref == len(linked) + n_caller
                assert [id(x) for x in vb.vas] == [id(x) for x in vb.vas if x in linked]
                assert len(vb.vas) == len(linked)
                assert vb.evicted == self.evicted[v].get(g, False), (v, g, vb.evicted)
                assert vb.listed and gem.vm_bos.count(vb) == 1
            assert [self.gems.index(x.obj) for x in vm.extobj] == list(self.extobj[v])
            assert [self.gems.index(x.obj) for x in vm.evict] == list(self.evict[v])
            assert len(vm.warnings) == self.warnings[v]
            assert vm.kref == 1 + len(vm.vas) + len(vm.vm_bos)
        for g, gem in enumerate(self.gems):
            n_vbs = sum(self.vm_bo_expected(v, g) for v in (0, 1))
            assert gem.freed == self.dead[g]
            assert gem.refcount == int(self.owner[g]) + n_vbs
            holders = {vb: 1 for vb in gem.vm_bos}
            if self.owner[g]:
                holders[OWNER] = 1
            assert gem.refs.holders == holders
            assert len(gem.vm_bos) == n_vbs

    def teardown(self) -> None:
        for va in list(self.orphans):
            assert va.vm is not None
            va.vm.unlink(va)
            va.vm.free_va(va)
        self.orphans.clear()
        for (v, g), n in self.caller.items():
            for _ in range(n):
                vb = self.gems[g].vm_bo_for(self.vms[v])
                assert vb is not None
                vb.put(CALLER)
        for v, vm in enumerate(self.vms):
            vm.close()
            assert vm.freed and self.vm_free_calls[v] == 1
            assert len(vm.warnings) == self.warnings[v]  # no leak WARN at fini
        for g, gem in enumerate(self.gems):
            assert gem.vm_bos == []
            assert gem.refcount == int(self.owner[g])
            assert gem.freed == (not self.owner[g])


TestVmMachine = VmMachine.TestCase
TestVmMachine.settings = settings(stateful_step_count=40)
