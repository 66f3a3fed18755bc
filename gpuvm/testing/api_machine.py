"""An API fuzz machine: drives the driver-layer ioctls with well-formed and ill-formed
arguments (wrong types, ``bool`` and ``float`` handles, huge and negative values, stale
handles, freed framebuffers and buffers, closed files, double close) and asserts after
every call: success, or a :class:`~gpuvm.core.errors.GpuvmError` that left the whole model
unchanged (``snapshot`` before and after); then every invariant and the lifetime checker.
Aim it at a policy with ``api_machine_class(policy)`` or ``machine_class(policy, "api")``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gpuvm.core.errors import GpuvmError
from gpuvm.drm.device import Device, snapshot
from gpuvm.drm.file import BindMap, BindUnmap, DrmFile
from gpuvm.drm.kms import Framebuffer
from gpuvm.observe.checker import LifetimeChecker

__all__ = ["ApiFuzzMachine", "api_machine_class", "ill_formed"]

P = 4096
BIND_BASE = 1 << 32

ill_formed: st.SearchStrategy[object] = st.one_of(
    st.booleans(),
    st.sampled_from([1.0, 2.0, 0.5]),
    st.sampled_from([None, "1", b"1", [1], (1,), {1: 1}, object()]),
    st.sampled_from([-1, -(1 << 63), 1 << 32, 1 << 64, (1 << 64) + 1, 2**100]),
)
"""Values no ioctl field can hold: wrong types, ``bool`` for an int, out-of-range ints."""


class ApiFuzzMachine(RuleBasedStateMachine):
    """Two devices (one with a display), files opened and closed at will; every call gets
    a mix of live, stale and ill-formed arguments."""

    policy: ClassVar[Any] = "gpuvm_vma_ref"
    flavour: ClassVar[str] = "msm"

    def __init__(self) -> None:
        super().__init__()
        self.dev = Device(self.flavour, self.policy, name="gpu0", planes=2)
        self.other = Device("nouveau", self.policy, name="dgpu", display=False)
        self.checker = LifetimeChecker(self.dev)
        self.checker.watch(self.other)
        self.files: list[DrmFile] = []
        self.fbs: list[Framebuffer] = []
        self.calls = 0
        self.refusals = 0

    # --- the call harness ----------------------------------------------------------------

    def call(self, what: str, fn: Any, *args: Any) -> Any:
        """``fn(*args)``: success, or a library error with the model unchanged."""
        before = snapshot(self.dev, self.other)
        self.calls += 1
        try:
            result = fn(*args)
        except GpuvmError as e:
            self.refusals += 1
            if snapshot(self.dev, self.other) != before:
                raise AssertionError(f"refused {what}{args!r} ({e!r}) changed the model") from e
            return None
        except Exception as e:
            raise AssertionError(f"FAIL: {what}{args!r} raised a non-library {e!r}") from e
        if any(isinstance(a, bool) for a in args):  # no ioctl field is a bool
            raise AssertionError(f"FAIL: {what}{args!r} accepted a bool for an integer field")
        return result

    def _arg(self, data: st.DataObject, live: list[object]) -> object:
        """A live value, a stale one, or an ill-formed one."""
        choices: list[st.SearchStrategy[object]] = [ill_formed, st.integers(0, 8)]
        if live:
            choices.append(st.sampled_from(live))
            choices.append(st.sampled_from(live))
        return data.draw(st.one_of(choices))

    def _file(self, data: st.DataObject) -> DrmFile:
        """Mostly an open file; now and then a closed one."""
        live = [f for f in self.files if not f.closed]
        closed_now: int = data.draw(st.integers(0, 7))
        pool = live if live and closed_now else self.files
        return data.draw(st.sampled_from(pool))

    def _handle(self, data: st.DataObject, f: DrmFile) -> object:
        return self._arg(data, list(f.handles))

    # --- rules ---------------------------------------------------------------------------

    @precondition(lambda self: sum(not f.closed for f in self.files) < 3 and len(self.files) < 8)
    @rule(on_other=st.booleans())
    def open_file(self, on_other: bool) -> None:
        dev = self.other if on_other else self.dev
        f = dev.open(name=f"f{len(self.files) + 1}")
        self.files.append(f)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), size=st.one_of(st.sampled_from([P, 4 * P]), ill_formed))
    def create_bo(self, data: st.DataObject, size: object) -> None:
        f = self._file(data)
        self.call("create_bo", f.create_bo, P)
        self.call("create_bo", f.create_bo, size)

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def gem_close(self, data: st.DataObject) -> None:
        f = self._file(data)
        self.call("gem_close", f.gem_close, self._handle(data, f))

    @precondition(lambda self: self.files)
    @rule(data=st.data(), flags=st.one_of(st.just(0), ill_formed))
    def export_import(self, data: st.DataObject, flags: object) -> None:
        f = self._file(data)
        fd = self.call("prime_handle_to_fd", f.prime_handle_to_fd, self._handle(data, f), flags)
        g = self._file(data)
        if fd is None:
            fd = self._arg(data, list(f.fds.fds) if hasattr(f.fds, "fds") else [])
        elif g.fds is not f.fds and not g.closed and not f.closed:
            fd = self.call("fd send", f.fds.send, fd, g.fds)
        if fd is not None:
            self.call("prime_fd_to_handle", g.prime_fd_to_handle, fd, data.draw(st.just(0)))

    @precondition(lambda self: any(f.device is self.dev for f in self.files))
    @rule(data=st.data())
    def add_fb(self, data: st.DataObject) -> None:
        f = data.draw(st.sampled_from([f for f in self.files if f.device is self.dev]))
        n = data.draw(st.integers(0, 5))
        fb = self.call("add_fb", f.add_fb, *[self._handle(data, f) for _ in range(n)])
        if fb is not None:
            self.fbs.append(fb)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), close=st.booleans())
    def rm_fb(self, data: st.DataObject, close: bool) -> None:
        f = self._file(data)
        fb = self._arg(data, list(self.fbs))
        self.call("close_fb" if close else "rm_fb", f.close_fb if close else f.rm_fb, fb)

    @precondition(lambda self: any(f.device is self.dev for f in self.files))
    @rule(data=st.data())
    def page_flip(self, data: st.DataObject) -> None:
        f = data.draw(st.sampled_from([f for f in self.files if f.device is self.dev]))
        plane = self._arg(data, list(self.dev.planes))
        fb = data.draw(st.one_of(st.none(), st.sampled_from([*self.fbs, 1, "fb"])))
        self.call("page_flip", f.page_flip, plane, fb)

    @rule(index=st.one_of(st.integers(-3, 40), ill_formed))
    def plane(self, index: object) -> None:
        self.call("plane", self.dev.plane, index)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), iova=st.one_of(st.sampled_from([0, 0x100000, 0x1_0000_0000]), ill_formed))
    def legacy_calls(self, data: st.DataObject, iova: object) -> None:
        f = self._file(data)
        which = data.draw(st.sampled_from(["get_iova", "set_iova", "submit"]))
        h = self._handle(data, f)
        if which == "get_iova":
            self.call(which, f.get_iova, h)
        elif which == "set_iova":
            self.call(which, f.set_iova, h, iova)
        else:
            handles = data.draw(st.one_of(st.just([h]), st.just(h), st.just([h, h])))
            self.call(which, f.submit, handles)

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def vm_bind(self, data: st.DataObject) -> None:
        f = self._file(data)
        if f.state.value == "fresh" and data.draw(st.booleans()):
            self.call("set_param_vm_bind", f.set_param_vm_bind)
        h = self._handle(data, f)
        addr = data.draw(st.one_of(st.sampled_from([BIND_BASE, BIND_BASE + 4 * P]), ill_formed))
        op = data.draw(
            st.sampled_from(
                [BindMap(addr, P, h, 0), BindMap(addr, P, None, 0), BindUnmap(addr, P)]  # type: ignore[arg-type]
            )
        )
        ops = data.draw(st.one_of(st.just([op]), st.just(op), st.just([op, "op"])))
        self.call("vm_bind", f.vm_bind, ops)
        if data.draw(st.booleans()):
            self.call("exec", f.exec)

    @rule(data=st.data())
    def device_calls(self, data: st.DataObject) -> None:
        bos = [bo for f in self.files for bo in f.handles.values()]
        bo = self._arg(data, list(bos))
        which = data.draw(st.sampled_from(["evict", "purge", "wait_idle", "retire"]))
        dev = bo.device if hasattr(bo, "device") else self.dev
        self.call(which, getattr(dev, which), bo)

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def close_file(self, data: st.DataObject) -> None:
        """Close a file (again, if it is closed already: ``-EBADF``)."""
        f = self._file(data)
        self.call("close", f.close)

    # --- checks --------------------------------------------------------------------------

    @invariant()
    def invariants_and_lifetimes(self) -> None:
        for dev in (self.dev, self.other):
            dev.check_invariants()
        self.checker.check()
        self.checker.assert_ok()

    def teardown(self) -> None:
        for f in self.files:
            if not f.closed:
                f.close()
        for dev in (self.dev, self.other):
            while dev.jobs:
                dev.retire()
        self.checker.check()
        self.checker.assert_ok()


def api_machine_class(policy: Any, *, flavour: str = "msm") -> type[ApiFuzzMachine]:
    """:class:`ApiFuzzMachine` bound to ``policy``."""
    name = getattr(policy, "name", policy)
    return type(f"ApiFuzzMachine_{name}", (ApiFuzzMachine,), {"policy": policy, "flavour": flavour})
