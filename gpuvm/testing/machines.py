"""Hypothesis strategies and state machines to aim at a teardown policy.

``machine_for(policy)`` returns a pytest-collectable ``TestCase`` running random sequences
of ioctls against a device using ``policy`` (a name from :data:`gpuvm.drm.policies.POLICIES`, a
:class:`~gpuvm.drm.policies.TeardownPolicy` subclass or instance), with the lifetime checker
(:mod:`gpuvm.observe.checker`) after every step, the model's own invariants, "a refused call
changes nothing" (a whole-model snapshot), and a leak-free teardown.  Three machines:

* ``"vm_bind"`` (:class:`VmBindMachine`): VM_BIND files; map, null map, unmap, multi-op
  binds whose last op may be refused, handle close, export/self-import, exec, retire,
  eviction, file close.
* ``"legacy"`` (:class:`LegacyMachine`): legacy files; GET/SET_IOVA, submits, retire,
  framebuffers, page flips, eviction and purge, handle and file close.
* ``"prime"`` (:class:`PrimeMachine`): two devices and three processes sharing buffers
  through dma-buf fds: export, send, dup, import (self and foreign), fd close,
  framebuffers over imports, flips, file close and reopen.

Every operation goes through a :class:`gpuvm.observe.trace.Session`, so a failing run prints the
replayable trace (``gpuvm replay``) in hypothesis' report.

hypothesis is a test dependency: importing this module without it raises ImportError.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, ClassVar

try:
    from hypothesis import note
    from hypothesis import strategies as st
    from hypothesis.stateful import (
        Bundle,
        RuleBasedStateMachine,
        consumes,
        initialize,
        invariant,
        multiple,
        precondition,
        rule,
    )
except ImportError as _e:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "gpuvm.testing needs hypothesis, a test dependency of gpuvm-model: "
        "pip install 'gpuvm-model[test]' (or pip install hypothesis)"
    ) from _e

from gpuvm.core.errors import GpuvmError
from gpuvm.core.gem import GemObject
from gpuvm.core.ops import MapRequest, UnmapRequest
from gpuvm.drm.device import snapshot
from gpuvm.drm.policies import TeardownPolicy, make_policy
from gpuvm.observe.checker import attributes
from gpuvm.observe.trace import Session

__all__ = [
    "LegacyMachine",
    "LifetimeMachine",
    "PrimeMachine",
    "VmBindMachine",
    "bind_requests",
    "buffer_sizes",
    "buffers",
    "drm_files",
    "machine_class",
    "machine_for",
    "machines_for",
    "map_requests",
    "unmap_requests",
]

PAGE = 4096
BASE = 1 << 32
"""Start of the context VM window (``gpuvm.drm.device.CONTEXT_WINDOW``)."""
PAGES = 32
"""The machines use the first ``PAGES`` pages of the window."""

# --- strategies -------------------------------------------------------------------------


def buffer_sizes(max_pages: int = 16, page: int = PAGE) -> st.SearchStrategy[int]:
    """Buffer sizes: 1 to ``max_pages`` pages."""
    return st.integers(1, max_pages).map(lambda n: n * page)


def buffers(sizes: st.SearchStrategy[int] | None = None) -> st.SearchStrategy[GemObject]:
    """Fresh core buffers (``GemObject``), each with its creator's reference."""
    return st.builds(GemObject, sizes if sizes is not None else buffer_sizes())


def map_requests(
    objs: st.SearchStrategy[GemObject | None],
    start: int = 0,
    pages: int = PAGES,
    page: int = PAGE,
) -> st.SearchStrategy[MapRequest]:
    """Page-aligned map requests inside ``[start, start + pages*page)`` of objects drawn
    from ``objs`` (None: a null/sparse map), at page offsets inside the object."""

    @st.composite
    def build(draw: st.DrawFn) -> MapRequest:
        first = draw(st.integers(0, pages - 1))
        n = draw(st.integers(1, pages - first))
        obj = draw(objs)
        limit = 0 if obj is None else max(0, obj.size // page - 1)
        off = draw(st.integers(0, limit))
        return MapRequest(start + first * page, n * page, obj, off * page)

    return build()


def unmap_requests(
    start: int = 0, pages: int = PAGES, page: int = PAGE
) -> st.SearchStrategy[UnmapRequest]:
    """Page-aligned unmap requests inside the window."""
    return st.integers(0, pages - 1).flatmap(
        lambda first: st.integers(1, pages - first).map(
            lambda n: UnmapRequest(start + first * page, n * page)
        )
    )


def bind_requests(
    objs: st.SearchStrategy[GemObject | None],
    start: int = 0,
    pages: int = PAGES,
    max_ops: int = 4,
) -> st.SearchStrategy[list[MapRequest | UnmapRequest]]:
    """A multi-op VM_BIND: a list of map and unmap requests."""
    one: st.SearchStrategy[MapRequest | UnmapRequest] = st.one_of(
        map_requests(objs, start, pages), unmap_requests(start, pages)
    )
    return st.lists(one, min_size=1, max_size=max_ops)


def drm_files(
    policy: str | TeardownPolicy | type[TeardownPolicy] = "gpuvm_vma_ref",
    modes: st.SearchStrategy[str] | None = None,
    flavour: str = "msm",
) -> st.SearchStrategy[Any]:
    """A DRM file of a fresh device using ``policy``, in a mode drawn from ``modes``
    (``"fresh"``, ``"legacy"``, ``"vm_bind"``); ``file.device`` is its device."""
    from gpuvm.drm.device import Device

    def make(mode: str) -> Any:
        dev = Device(flavour, policy)
        f = dev.open()
        if mode == "legacy":
            (f.get_param if flavour == "msm" else f.channel_alloc)()
        elif mode == "vm_bind" and dev.policy.supports_vm_bind:
            (f.set_param_vm_bind if flavour == "msm" else f.vm_init)()
        return f

    return (modes if modes is not None else st.sampled_from(["fresh", "legacy", "vm_bind"])).map(
        make
    )


# --- machines ---------------------------------------------------------------------------

Policy = str | TeardownPolicy | type[TeardownPolicy]


def _policy_name(policy: Policy) -> str:
    return make_policy(policy).name


class LifetimeMachine(RuleBasedStateMachine):
    """Base of the machines: a :class:`~gpuvm.observe.trace.Session` with the lifetime checker,
    refusal snapshots, invariants after each step, a leak-free teardown, and the trace in
    hypothesis' report when a run fails."""

    policy: ClassVar[Policy] = "gpuvm_vma_ref"
    flavour: ClassVar[str] = "msm"
    kernel: ClassVar[str | None] = None
    """The kernel profile of every device the machine opens (None: the policy's default)."""
    max_files: ClassVar[int] = 3

    def __init__(self) -> None:
        super().__init__()
        pol = self.policy
        name = _policy_name(pol)
        self.s = Session(policies={name: pol})
        self.policy_name = name
        self.devices: list[str] = []
        self.failed = False
        self.refusals = 0

    # --- helpers -------------------------------------------------------------------------

    def device(self, flavour: str | None = None, **kw: Any) -> str:
        if self.kernel is not None:
            kw.setdefault("kernel", self.kernel)
        d = str(self.s.do("device", flavour=flavour or self.flavour, policy=self.policy_name, **kw))
        self.devices.append(d)
        return d

    def _devs(self) -> list[Any]:
        return [self.s.obj(d) for d in self.devices]

    def attempt(self, op: str, **fields: Any) -> Any:
        """Run ``op``; a refusal must leave the whole model unchanged (returns None)."""
        before = snapshot(*self._devs())
        try:
            return self.s.do(op, **fields)
        except GpuvmError as e:
            self.refusals += 1
            after = snapshot(*self._devs())
            if after != before:
                self.failed = True
                raise AssertionError(f"refused {op} {fields} ({e}) changed the model") from e
            return None
        except BaseException:
            self.failed = True
            raise

    def open_files(self) -> list[str]:
        return [f for f in self.s.ids("file") if not self.s.obj(f).closed]

    # --- checks --------------------------------------------------------------------------

    @invariant()
    def lifetimes_ok(self) -> None:
        try:
            self.s.checker.check()
            self.s.checker.assert_ok()
            for d in self._devs():
                if not d.closed:
                    d.check_invariants()
        except BaseException:
            self.failed = True
            raise

    def teardown(self) -> None:
        failing = sys.exc_info()[0] is not None or self.failed
        try:
            if not failing:
                self._close_everything()
                self.s.checker.assert_ok()
        except BaseException:
            failing = True
            raise
        finally:
            if failing:
                note(
                    f"replayable trace (policy {self.policy_name}; "
                    f"save and run `gpuvm replay TRACE`):\n{self.s.dumps()}"
                )
                note(self.s.checker.verdict())

    def _close_everything(self) -> None:
        for f in self.open_files():
            self.s.do("close", file=f)
        for t in self.s.ids("table"):
            for fd in sorted(self.s.obj(t).fds):
                self.s.do("fd_close", table=t, fd=fd)
        for d in self.devices:
            if not self.s.obj(d).closed:
                self.s.do("device_close", device=d)


def _mode_call(flavour: str, mode: str) -> str:
    if mode == "legacy":
        return "get_param" if flavour == "msm" else "channel_alloc"
    return "set_param_vm_bind" if flavour == "msm" else "vm_init"


class VmBindMachine(LifetimeMachine):
    """The VM_BIND path through the driver layer (and so the core's split/merge, VmBo and
    extobj/evict handling)."""

    files = Bundle("files")
    handles = Bundle("handles")
    fds = Bundle("fds")
    vas = Bundle("vas")

    @initialize(target=files)
    def setup(self) -> Any:
        self.dev = self.device(display=False)
        self.proc = str(self.s.do("process"))
        return self._open()

    def _open(self) -> Any:
        f = str(self.s.do("open", device=self.dev, fds=self.proc))
        self.attempt(_mode_call(self.flavour, "vm_bind"), file=f)
        return f

    @precondition(lambda self: len(self.open_files()) < self.max_files)
    @rule(target=files)
    def open_file(self) -> Any:
        return self._open()

    @rule(target=handles, f=files, pages=st.integers(1, 8))
    def create(self, f: str, pages: int) -> Any:
        h = self.attempt("create_bo", file=f, size=pages * PAGE)
        return multiple() if h is None else (f, h)

    def _bind(self, f: str, ops: list[list[Any]]) -> bool:
        """VM_BIND ``ops``; afterwards every address the bind did not map keeps its per-VA
        attributes.  True if the bind was accepted."""
        vm = self.s.obj(f).vm
        before = attributes(vm) if vm is not None and not vm.freed else None
        self.attempt("vm_bind", file=f, ops=ops)
        ok = self.s.lines[-1].get("error") is None
        if before is not None and vm is not None and not vm.freed:
            exempt = [(o[1], o[2]) for o in ops if o[0] == "map"]
            self.s.checker.check_attributes(before, vm, exempt)
        return ok

    def _fit(self, f: str, handle: int, n: int, off: int) -> tuple[int, int]:
        """Pages and page offset of a MAP clamped inside the buffer (VM_BIND refuses a range
        past the buffer's end, ``vm_bind_job_lookup_ops``), so most binds are accepted."""
        bo = self.s.obj(f).handles.get(handle)
        if bo is None:
            return n, off
        pages = max(1, bo.size // PAGE)
        off = min(off, pages - 1)
        return max(1, min(n, pages - off)), off

    @rule(
        target=vas,
        h=handles,
        page=st.integers(0, PAGES - 1),
        n=st.integers(1, 8),
        off=st.integers(0, 4),
    )
    def bind_map(self, h: tuple[str, int], page: int, n: int, off: int) -> Any:
        f, handle = h
        addr = BASE + page * PAGE
        n, off = self._fit(f, handle, n, off)
        ok = self._bind(f, [["map", addr, n * PAGE, handle, off * PAGE]])
        return (f, addr, n * PAGE) if ok else multiple()

    @rule(target=vas, f=files, page=st.integers(0, PAGES - 1), n=st.integers(1, 8))
    def bind_null(self, f: str, page: int, n: int) -> Any:
        addr = BASE + page * PAGE
        ok = self._bind(f, [["map", addr, n * PAGE, None, 0]])
        return (f, addr, n * PAGE) if ok else multiple()

    @rule(va=consumes(vas), shrink=st.integers(0, 2))
    def unbind(self, va: tuple[str, int, int], shrink: int) -> None:
        f, addr, rng = va
        if shrink and rng > PAGE:  # a partial unmap splits the mapping
            addr, rng = addr + PAGE, rng - PAGE
        self._bind(f, [["unmap", addr, rng]])

    @rule(
        h=handles,
        steps=st.lists(
            st.tuples(
                st.booleans(), st.integers(0, PAGES - 1), st.integers(1, 6), st.integers(0, 3)
            ),
            min_size=1,
            max_size=3,
        ),
        bad_last=st.sampled_from(["none", "zero", "outside"]),
    )
    def bind_array(
        self, h: tuple[str, int], steps: list[tuple[bool, int, int, int]], bad_last: str
    ) -> None:
        f, handle = h
        ops: list[list[Any]] = []
        for is_map, page, n, off in steps:
            addr = BASE + page * PAGE
            if is_map:
                n, off = self._fit(f, handle, n, off)
                ops.append(["map", addr, n * PAGE, handle, off * PAGE])
            else:
                ops.append(["unmap", addr, n * PAGE])
        if bad_last == "zero":
            ops.append(["map", BASE, 0, handle, 0])
        elif bad_last == "outside":
            ops.append(["map", PAGE, PAGE, handle, 0])
        self._bind(f, ops)

    @rule(h=consumes(handles))
    def close_handle(self, h: tuple[str, int]) -> None:
        self.attempt("gem_close", file=h[0], handle=h[1])

    @rule(target=fds, h=handles)
    def export(self, h: tuple[str, int]) -> Any:
        fd = self.attempt("prime_handle_to_fd", file=h[0], handle=h[1])
        return multiple() if fd is None else (self.proc, fd)

    @rule(target=handles, f=files, fd=fds)
    def import_(self, f: str, fd: tuple[str, int]) -> Any:
        h = self.attempt("prime_fd_to_handle", file=f, fd=fd[1])
        return multiple() if h is None else (f, h)

    @rule(fd=consumes(fds))
    def close_fd(self, fd: tuple[str, int]) -> None:
        self.attempt("fd_close", table=fd[0], fd=fd[1])

    @rule(f=files)
    def exec_(self, f: str) -> None:
        self.attempt("exec", file=f)

    @rule()
    def retire(self) -> None:
        self.attempt("retire", device=self.dev)

    @rule(h=handles)
    def evict(self, h: tuple[str, int]) -> None:
        self.attempt("evict", file=h[0], handle=h[1])

    @rule(f=consumes(files))
    def close_file(self, f: str) -> None:
        self.attempt("close", file=f)


class LegacyMachine(LifetimeMachine):
    """The legacy path: kernel-managed context VMs and the display VM, with the policy's
    teardown points (handle close, framebuffer cleanup, retire, buffer free)."""

    files = Bundle("files")
    handles = Bundle("handles")
    fbs = Bundle("fbs")
    jobs = Bundle("jobs")

    @initialize(target=files)
    def setup(self) -> Any:
        self.dev = self.device(planes=2)
        self.proc = str(self.s.do("process"))
        return self._open()

    def _open(self) -> Any:
        f = str(self.s.do("open", device=self.dev, fds=self.proc))
        self.attempt(_mode_call(self.flavour, "legacy"), file=f)
        return f

    @precondition(lambda self: len(self.open_files()) < self.max_files)
    @rule(target=files)
    def open_file(self) -> Any:
        return self._open()

    @rule(target=handles, f=files, pages=st.integers(1, 8))
    def create(self, f: str, pages: int) -> Any:
        h = self.attempt("create_bo", file=f, size=pages * PAGE)
        return multiple() if h is None else (f, h)

    @rule(h=handles)
    def get_iova(self, h: tuple[str, int]) -> None:
        self.attempt("get_iova", file=h[0], handle=h[1])

    @rule(h=handles, page=st.integers(0, PAGES))
    def set_iova(self, h: tuple[str, int], page: int) -> None:
        iova = 0 if page == 0 else BASE + (page - 1) * PAGE
        self.attempt("set_iova", file=h[0], handle=h[1], iova=iova)

    @rule(target=jobs, hs=st.lists(handles, min_size=1, max_size=3))
    def submit(self, hs: list[tuple[str, int]]) -> Any:
        f = hs[0][0]
        j = self.attempt("submit", file=f, handles=[h for g, h in hs if g == f])
        return multiple() if j is None else j

    @rule(target=jobs, h=consumes(handles))
    def submit_then_close(self, h: tuple[str, int]) -> Any:
        """Fire and forget: submit a buffer and close its handle while the job runs."""
        j = self.attempt("submit", file=h[0], handles=[h[1]])
        self.attempt("gem_close", file=h[0], handle=h[1])
        return multiple() if j is None else j

    @rule(j=consumes(jobs))
    def retire_job(self, j: str) -> None:
        self.attempt("retire", device=self.dev, job=j)

    @rule()
    def retire_oldest(self) -> None:
        self.attempt("retire", device=self.dev)

    @rule(h=consumes(handles))
    def close_handle(self, h: tuple[str, int]) -> None:
        self.attempt("gem_close", file=h[0], handle=h[1])

    @rule(target=fbs, h=handles, two=st.booleans())
    def add_fb(self, h: tuple[str, int], two: bool) -> Any:
        fb = self.attempt("add_fb", file=h[0], handles=[h[1], h[1]] if two else [h[1]])
        return multiple() if fb is None else (h[0], fb)

    @rule(fb=fbs, plane=st.integers(0, 1))
    def flip(self, fb: tuple[str, str], plane: int) -> None:
        self.attempt("page_flip", file=fb[0], plane=plane, fb=fb[1])

    @rule(f=files, plane=st.integers(0, 1))
    def disable(self, f: str, plane: int) -> None:
        self.attempt("page_flip", file=f, plane=plane, fb=None)

    @rule(fb=consumes(fbs), keep_shown=st.booleans())
    def remove_fb(self, fb: tuple[str, str], keep_shown: bool) -> None:
        self.attempt("close_fb" if keep_shown else "rm_fb", file=fb[0], fb=fb[1])

    @rule(h=handles, purge=st.booleans())
    def shrink(self, h: tuple[str, int], purge: bool) -> None:
        self.attempt("purge" if purge else "evict", file=h[0], handle=h[1])

    @rule(f=consumes(files))
    def close_file(self, f: str) -> None:
        self.attempt("close", file=f)


class PrimeMachine(LifetimeMachine):
    """PRIME / dma-buf sharing: a display device using the policy, a render-only producer
    device (same policy), a compositor process, a client process and a producer process."""

    files = Bundle("files")
    handles = Bundle("handles")
    fds = Bundle("fds")
    fbs = Bundle("fbs")

    @initialize(target=files)
    def setup(self) -> Any:
        self.dev = self.device(planes=2)
        self.dgpu = self.device("nouveau", display=False)
        self.procs = [str(self.s.do("process")) for _ in range(3)]
        return multiple(
            *[self._open(d, p) for d, p in ((self.dev, self.procs[0]), (self.dev, self.procs[1]))],
            self._open(self.dgpu, self.procs[2]),
        )

    def _open(self, dev: str, proc: str) -> str:
        return str(self.s.do("open", device=dev, fds=proc))

    @precondition(lambda self: len(self.open_files()) < 5)
    @rule(target=files, which=st.integers(0, 2))
    def reopen(self, which: int) -> Any:
        dev = self.dgpu if which == 2 else self.dev
        return self._open(dev, self.procs[which])

    @rule(target=handles, f=files, pages=st.integers(1, 4))
    def create(self, f: str, pages: int) -> Any:
        h = self.attempt("create_bo", file=f, size=pages * PAGE)
        return multiple() if h is None else (f, h)

    @rule(target=fds, h=handles)
    def export(self, h: tuple[str, int]) -> Any:
        fd = self.attempt("prime_handle_to_fd", file=h[0], handle=h[1])
        table = self.s.obj(h[0]).fds.name
        return multiple() if fd is None else (table, fd)

    @rule(target=fds, fd=fds, to=st.integers(0, 2), dup=st.booleans())
    def send(self, fd: tuple[str, int], to: int, dup: bool) -> Any:
        if dup:
            n = self.attempt("fd_dup", table=fd[0], fd=fd[1])
            return multiple() if n is None else (fd[0], n)
        n = self.attempt("fd_send", table=fd[0], fd=fd[1], to=self.procs[to])
        return multiple() if n is None else (self.procs[to], n)

    @rule(target=handles, f=files, fd=fds)
    def import_(self, f: str, fd: tuple[str, int]) -> Any:
        if self.s.obj(f).fds.name != fd[0]:
            return multiple()
        h = self.attempt("prime_fd_to_handle", file=f, fd=fd[1])
        return multiple() if h is None else (f, h)

    @rule(fd=consumes(fds))
    def close_fd(self, fd: tuple[str, int]) -> None:
        self.attempt("fd_close", table=fd[0], fd=fd[1])

    @rule(target=handles, h=handles, to=files)
    def share(self, h: tuple[str, int], to: str) -> Any:
        """The usual client/compositor hand-over: export, pass the fd, import it, close
        every fd at once (so fd numbers are reused by the next share)."""
        src = self.s.obj(h[0]).fds.name
        dst = self.s.obj(to).fds.name
        fd = self.attempt("prime_handle_to_fd", file=h[0], handle=h[1])
        if fd is None:
            return multiple()
        got = fd
        if dst != src:
            got = self.attempt("fd_send", table=src, fd=fd, to=dst)
            self.attempt("fd_close", table=src, fd=fd)
        if got is None:
            return multiple()
        h2 = self.attempt("prime_fd_to_handle", file=to, fd=got)
        self.attempt("fd_close", table=dst, fd=got)
        return multiple() if h2 is None else (to, h2)

    @rule(h=consumes(handles))
    def close_handle(self, h: tuple[str, int]) -> None:
        self.attempt("gem_close", file=h[0], handle=h[1])

    @rule(target=fbs, h=handles)
    def add_fb(self, h: tuple[str, int]) -> Any:
        fb = self.attempt("add_fb", file=h[0], handles=[h[1]])
        return multiple() if fb is None else (h[0], fb)

    @rule(fb=fbs, plane=st.integers(0, 1))
    def flip(self, fb: tuple[str, str], plane: int) -> None:
        self.attempt("page_flip", file=fb[0], plane=plane, fb=fb[1])

    @rule(fb=consumes(fbs))
    def remove_fb(self, fb: tuple[str, str]) -> None:
        self.attempt("rm_fb", file=fb[0], fb=fb[1])

    @rule(hs=st.lists(handles, min_size=1, max_size=2))
    def submit(self, hs: list[tuple[str, int]]) -> None:
        f = hs[0][0]
        self.attempt("submit", file=f, handles=[h for g, h in hs if g == f])

    @rule()
    def retire(self) -> None:
        self.attempt("retire", device=self.dev)

    @rule(f=consumes(files))
    def close_file(self, f: str) -> None:
        self.attempt("close", file=f)


MACHINES: dict[str, type[LifetimeMachine]] = {
    "vm_bind": VmBindMachine,
    "legacy": LegacyMachine,
    "prime": PrimeMachine,
}


def machine_class(
    policy: Policy, kind: str = "vm_bind", *, flavour: str = "msm", kernel: str | None = None
) -> type[LifetimeMachine]:
    """The state machine ``kind`` (``"vm_bind"``, ``"legacy"``, ``"prime"``) bound to
    ``policy``, its devices under kernel profile ``kernel`` (default: the policy's own, e.g.
    ``msm-pre-vma-ref`` for ``gpuvm_eager``, whose eager unpin the legacy machine reports as
    ``unmapped-scanout``)."""
    base = MACHINES[kind]
    name = f"{base.__name__}_{_policy_name(policy)}"
    if kernel is not None:
        name += "_" + "".join(c if c.isalnum() else "_" for c in kernel)
    return type(name, (base,), {"policy": policy, "flavour": flavour, "kernel": kernel})


def machine_for(
    policy: Policy, kind: str = "vm_bind", *, flavour: str = "msm", kernel: str | None = None
) -> Any:
    """A pytest-collectable ``TestCase`` running machine ``kind`` against ``policy``."""
    return machine_class(policy, kind, flavour=flavour, kernel=kernel).TestCase


def machines_for(policy: Policy, *, flavour: str = "msm") -> tuple[Any, Any, Any]:
    """``(vm_bind, legacy, prime)`` TestCases for ``policy``."""
    return (
        machine_for(policy, "vm_bind", flavour=flavour),
        machine_for(policy, "legacy", flavour=flavour),
        machine_for(policy, "prime", flavour=flavour),
    )


Runner = Callable[[type[LifetimeMachine]], None]
