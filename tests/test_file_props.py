"""Random ioctl sequences against the driver layer, for every policy: valid and invalid
handles, fds, iovas, modes and flips.  After every step the invariants hold, and a refused
call (any :class:`~gpuvm.core.errors.GpuvmError`) left the snapshot unchanged.  At the end,
closing every file, fd and device frees every object under the leak-free policies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gpuvm.core.errors import GpuvmError
from gpuvm.drm.device import Device, snapshot
from gpuvm.drm.file import BindMap, BindUnmap, DrmFile
from gpuvm.drm.kms import Framebuffer
from gpuvm.drm.policies import POLICIES

P = 4096
N_FILES = 3
files = st.integers(0, N_FILES - 1)


class DriverMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dev: Device
        self.dgpu: Device
        self.files: list[DrmFile] = []
        self.fbs: list[Framebuffer] = []
        self.refusals = 0

    @initialize(
        policy=st.sampled_from(sorted(POLICIES)),
        flavour=st.sampled_from(["msm", "nouveau"]),
        modes=st.lists(st.sampled_from(["fresh", "legacy", "vm_bind"]), min_size=N_FILES),
    )
    def setup(self, policy: str, flavour: str, modes: list[str]) -> None:
        self.dev = Device(
            flavour,
            policy,
            planes=2,
            display_window=(P, 32 * P),
            context_window=(1 << 32, 16 * P),
        )
        self.dgpu = Device("nouveau", "gpuvm_vma_ref", name="dgpu", display=False)
        self.files = [self.dev.open(name=f"f{i}") for i in range(N_FILES)]
        producer = self.dgpu.open(name="producer")
        for _ in range(2):
            fd = producer.prime_handle_to_fd(producer.create_bo(4 * P))
            for f in self.files:  # every file starts with two (foreign) handles, mode-neutral
                f.prime_fd_to_handle(producer.fds.send(fd, f.fds))
        for f, mode in zip(self.files, modes, strict=False):
            if mode == "legacy":
                (f.get_param if flavour == "msm" else f.channel_alloc)()
            elif mode == "vm_bind" and self.dev.policy.supports_vm_bind:
                (f.set_param_vm_bind if flavour == "msm" else f.vm_init)()

    # --- helpers -------------------------------------------------------------------------

    def all_devs(self) -> tuple[Device, Device]:
        return self.dev, self.dgpu

    def attempt(self, fn: Callable[..., Any], *args: Any) -> Any:
        before = snapshot(*self.all_devs())
        try:
            return fn(*args)
        except GpuvmError:
            self.refusals += 1
            after = snapshot(*self.all_devs())
            assert after == before, f"refused {fn} changed the model"
            return None

    def bo_of(self, f: DrmFile, h: int) -> Any:
        return f.handles.get(h)

    def handle(self, data: st.DataObject, f: int) -> int:
        """Mostly an open handle of file ``f``, sometimes one that is not."""
        open_ = sorted(self.files[f].handles)
        if open_ and data.draw(st.integers(0, 5)) > 0:
            return int(data.draw(st.sampled_from(open_)))
        return data.draw(st.integers(0, 8))

    def fd(self, data: st.DataObject, f: int) -> int:
        open_ = sorted(self.files[f].fds.fds)
        if open_ and data.draw(st.integers(0, 5)) > 0:
            return int(data.draw(st.sampled_from(open_)))
        return data.draw(st.integers(0, 12))

    # --- ioctls --------------------------------------------------------------------------

    @rule(f=files, pages=st.integers(1, 12))
    def create(self, f: int, pages: int) -> None:
        self.attempt(self.files[f].create_bo, pages * P)

    @rule(f=files, data=st.data())
    def close_handle(self, f: int, data: st.DataObject) -> None:
        self.attempt(self.files[f].gem_close, self.handle(data, f))

    @rule(f=files, to=files, data=st.data())
    def export_and_send(self, f: int, to: int, data: st.DataObject) -> None:
        src = self.files[f]
        fd = self.attempt(src.prime_handle_to_fd, self.handle(data, f))
        if fd is not None and to != f:
            src.fds.send(fd, self.files[to].fds)
            src.fds.close(fd)

    @rule(f=files, data=st.data())
    def import_fd(self, f: int, data: st.DataObject) -> None:
        self.attempt(self.files[f].prime_fd_to_handle, self.fd(data, f))

    @rule(f=files, data=st.data())
    def close_fd(self, f: int, data: st.DataObject) -> None:
        self.attempt(self.files[f].fds.close, self.fd(data, f))

    @rule(f=files, n=st.integers(1, 2), data=st.data())
    def add_fb(self, f: int, n: int, data: st.DataObject) -> None:
        hs = [self.handle(data, f) for _ in range(n)]
        fb = self.attempt(self.files[f].add_fb, *hs)
        if fb is not None:
            self.fbs.append(fb)

    @rule(i=st.integers(0, 7), keep_shown=st.booleans())
    def remove_fb(self, i: int, keep_shown: bool) -> None:
        if i >= len(self.fbs):
            return
        fb = self.fbs[i]
        owner = fb.file if fb.file is not None else self.files[0]
        self.attempt(owner.close_fb if keep_shown else owner.rm_fb, fb)

    @rule(plane=st.integers(0, 1), i=st.integers(-1, 7))
    def flip(self, plane: int, i: int) -> None:
        fb = self.fbs[i] if 0 <= i < len(self.fbs) else None
        self.attempt(self.files[0].page_flip, self.dev.plane(plane), fb)

    @rule(f=files, data=st.data())
    def get_iova(self, f: int, data: st.DataObject) -> None:
        self.attempt(self.files[f].get_iova, self.handle(data, f))

    @rule(f=files, page=st.integers(0, 40), data=st.data())
    def set_iova(self, f: int, page: int, data: st.DataObject) -> None:
        iova = 0 if page == 0 else (1 << 32) + (page - 1) * P
        self.attempt(self.files[f].set_iova, self.handle(data, f), iova)

    @rule(f=files, n=st.integers(1, 3), data=st.data())
    def submit(self, f: int, n: int, data: st.DataObject) -> None:
        self.attempt(self.files[f].submit, [self.handle(data, f) for _ in range(n)])

    @rule()
    def retire(self) -> None:
        self.dev.retire()

    @rule(f=files, which=st.sampled_from(["vm_bind", "vm_init", "get_param", "channel"]))
    def choose(self, f: int, which: str) -> None:
        file = self.files[f]
        call = {
            "vm_bind": file.set_param_vm_bind,
            "vm_init": file.vm_init,
            "get_param": file.get_param,
            "channel": file.channel_alloc,
        }[which]
        self.attempt(call)

    @rule(f=files, page=st.integers(0, 40), n=st.integers(1, 8), null=st.booleans(), data=st.data())
    def bind_map(self, f: int, page: int, n: int, null: bool, data: st.DataObject) -> None:
        h = None if null else self.handle(data, f)
        self.attempt(self.files[f].vm_bind, [BindMap((1 << 32) + page * P, n * P, h)])

    @rule(f=files, page=st.integers(0, 40), n=st.integers(1, 8))
    def bind_unmap(self, f: int, page: int, n: int) -> None:
        self.attempt(self.files[f].vm_bind, [BindUnmap((1 << 32) + page * P, n * P)])

    @rule(f=files)
    def exec_(self, f: int) -> None:
        self.attempt(self.files[f].exec)

    @rule(f=files, purge=st.booleans(), data=st.data())
    def shrink(self, f: int, purge: bool, data: st.DataObject) -> None:
        bo = self.bo_of(self.files[f], self.handle(data, f))
        if bo is not None:
            self.attempt(self.dev.purge if purge else self.dev.evict, bo)

    @rule(f=files)
    def reopen(self, f: int) -> None:
        old = self.files[f]
        old.close()
        self.files[f] = self.dev.open(fds=old.fds, name=f"{old.name}'")

    # --- checks --------------------------------------------------------------------------

    @invariant()
    def consistent(self) -> None:
        if not hasattr(self, "dev"):
            return
        if self.dev.audit():
            assert self.dev.policy.name == "weak_ref_quirk"
            return
        self.dev.check_invariants()
        self.dgpu.check_invariants()

    def teardown(self) -> None:
        if not hasattr(self, "dev"):
            return
        dev, dgpu = self.dev, self.dgpu
        tables = {id(f.fds): f.fds for d in (dev, dgpu) for f in d.files}
        for f in list(dev.files) + list(dgpu.files):
            f.close()
        for t in tables.values():
            t.close_all()
        report = dev.close() + dgpu.close()
        if dev.policy.name != "gpuvm_legacy_trigger":
            assert report == [], report
            assert dev.live_bos == {} and dev.live_vms == {} and dgpu.live_bos == {}


DriverMachine.TestCase.settings = settings(DriverMachine.TestCase.settings, stateful_step_count=40)
TestDriverMachine = DriverMachine.TestCase
