"""Pageflip (msm KMS VM) and dma-buf re-import scenarios, as functions that
build a device with a policy, run the workload, and return steady-state counts of page-table
events per flip (or per frame).  Shared by the KMS and policy tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import attrs

from gpuvm.core.events import Event, EventLog, Mapped, TlbInvalidated, Unmapped
from gpuvm.drm.device import Device
from gpuvm.drm.file import BindMap, BindUnmap, DrmFile
from gpuvm.drm.kms import Framebuffer
from gpuvm.drm.policies import TeardownPolicy

Policy = str | TeardownPolicy | type[TeardownPolicy]

FB_SIZE = 1920 * 1080 * 4  # one 1080p ARGB scanout buffer
N_BUFFERS = 3
WARMUP = 2 * N_BUFFERS
MEASURE = 4 * N_BUFFERS


E = TypeVar("E", bound=Event)


def of(log: EventLog, kind: type[E], vm: object = None) -> list[E]:
    """The events of ``kind`` in ``log`` (on ``vm`` if given), typed."""
    return [e for e in log.events if isinstance(e, kind) and (vm is None or e.vm is vm)]  # type: ignore[attr-defined]


def freed(*objs: object) -> bool:
    """True if every object is freed (a call, so a check does not narrow types)."""
    return all(bool(getattr(o, "freed", False)) for o in objs)


@attrs.frozen
class PerFlip:
    """Steady-state page-table events per flip on one VM."""

    maps: float
    unmaps: float
    tlb: float
    warmup_maps: int = 0


def _counts(log: EventLog, vm: object, frames: int) -> tuple[float, float, float]:
    m = len(of(log, Mapped, vm))
    u = len(of(log, Unmapped, vm))
    t = len(of(log, TlbInvalidated, vm))
    return m / frames, u / frames, t / frames


def run_flips(dev: Device, frame: Callable[[int], None]) -> PerFlip:
    """Run ``frame(i)`` for the warm-up frames, then count display-VM events over the
    measured frames."""
    log = EventLog()
    dev.bus.subscribe(log)
    for i in range(WARMUP):
        frame(i)
    warm = len(of(log, Mapped, dev.display_vm))
    log.clear()
    for i in range(WARMUP, WARMUP + MEASURE):
        frame(i)
        dev.check_invariants()
    m, u, t = _counts(log, dev.display_vm, MEASURE)
    return PerFlip(m, u, t, warm)


# --- KMS VM per pageflip --------------------------------------------------------------------


def swapchain(policy: Policy) -> tuple[Device, PerFlip]:
    """The compositor's own swapchain: it keeps its GBM buffers, handles and framebuffers."""
    dev = Device("msm", policy)
    comp = dev.open(name="compositor")
    fbs = [comp.add_fb(comp.create_bo(FB_SIZE)) for _ in range(N_BUFFERS)]
    plane = dev.plane()
    return dev, run_flips(dev, lambda i: comp.page_flip(plane, fbs[i % N_BUFFERS]))


def same_device_client(policy: Policy) -> tuple[Device, PerFlip]:
    """A client of the same msm device shares its buffers as dma-bufs; it keeps its
    handles; the compositor imports (self-import), adds a framebuffer and closes its own
    handle (wlroots)."""
    dev = Device("msm", policy)
    comp = dev.open(name="compositor")
    client = dev.open(name="client")
    fbs = []
    for _ in range(N_BUFFERS):
        h = client.create_bo(FB_SIZE)
        fd = client.fds.send(client.prime_handle_to_fd(h), comp.fds)
        ch = comp.prime_fd_to_handle(fd)
        fbs.append(comp.add_fb(ch))
        comp.gem_close(ch)
    plane = dev.plane()
    return dev, run_flips(dev, lambda i: comp.page_flip(plane, fbs[i % N_BUFFERS]))


def _foreign_exporter(n: int = N_BUFFERS) -> tuple[Device, DrmFile, list[int]]:
    """Another DRM device (a discrete GPU, or a dma-heap) exporting ``n`` buffers."""
    other = Device("nouveau", "gpuvm_vma_ref", name="dgpu", display=False)
    producer = other.open(name="producer")
    fds = [producer.prime_handle_to_fd(producer.create_bo(FB_SIZE)) for _ in range(n)]
    return other, producer, fds


def foreign(policy: Policy, *, keep_handle: bool) -> tuple[Device, PerFlip]:
    """Foreign dma-bufs with cached framebuffers; the importer closes its GEM handle after
    ADDFB (wlroots) or keeps it (weston, drm_hwcomposer)."""
    dev = Device("msm", policy)
    comp = dev.open(name="compositor")
    _, producer, fds = _foreign_exporter()
    fbs = []
    for fd in fds:
        h = comp.prime_fd_to_handle(producer.fds.send(fd, comp.fds))
        fbs.append(comp.add_fb(h))
        if not keep_handle:
            comp.gem_close(h)
    plane = dev.plane()
    return dev, run_flips(dev, lambda i: comp.page_flip(plane, fbs[i % N_BUFFERS]))


def recreate_every_frame(policy: Policy) -> tuple[Device, PerFlip]:
    """No cache: each frame the compositor imports the client's dma-buf, adds a framebuffer,
    closes its handle, flips to it and removes the previous framebuffer."""
    dev = Device("msm", policy)
    comp = dev.open(name="compositor")
    _, producer, fds = _foreign_exporter()
    mine = [producer.fds.send(fd, comp.fds) for fd in fds]
    plane = dev.plane()
    shown: list[Framebuffer] = []

    def frame(i: int) -> None:
        h = comp.prime_fd_to_handle(mine[i % N_BUFFERS])
        fb = comp.add_fb(h)
        comp.gem_close(h)
        comp.page_flip(plane, fb)
        if shown:
            comp.rm_fb(shown.pop())
        shown.append(fb)

    return dev, run_flips(dev, frame)


FLIP_SCENARIOS: dict[str, Callable[[Policy], tuple[Device, PerFlip]]] = {
    "swapchain": swapchain,
    "same_device_client": same_device_client,
    "foreign_handle_closed": lambda p: foreign(p, keep_handle=False),
    "foreign_handle_kept": lambda p: foreign(p, keep_handle=True),
    "recreate_every_frame": recreate_every_frame,
}


# --- re-import by a GPU consumer ------------------------------------------------------------


def reimport(
    policy: Policy, *, foreign_src: bool, close_each_frame: bool, vm_bind: bool
) -> PerFlip:
    """A GPU consumer texturing from an imported buffer in its own context VM, each frame
    importing the producer's fd again, submitting, and (optionally) closing its handle.
    With ``vm_bind`` the consumer is a VM_BIND file that maps on import and unmaps before
    closing.  Returns events per frame on the consumer's VM."""
    dev = Device("msm", policy, name="gpu")
    consumer = dev.open(name="consumer")
    if vm_bind:
        consumer.set_param_vm_bind()
    if foreign_src:
        _, producer, fds = _foreign_exporter(1)
        fd = producer.fds.send(fds[0], consumer.fds)
    else:
        producer = dev.open(name="producer")
        fd = producer.fds.send(
            producer.prime_handle_to_fd(producer.create_bo(FB_SIZE)), consumer.fds
        )
    addr = dev.context_window[0]
    state: dict[str, int] = {}

    def frame(i: int) -> None:
        h = consumer.prime_fd_to_handle(fd)
        if vm_bind:
            if "h" not in state:
                consumer.vm_bind([BindMap(addr, FB_SIZE + (-FB_SIZE % 4096), h)])
            state["h"] = h
            consumer.exec()
        else:
            consumer.submit([h])
        dev.retire_all()
        if close_each_frame:
            if vm_bind:
                consumer.vm_bind([BindUnmap(addr, FB_SIZE + (-FB_SIZE % 4096))])
                state.pop("h")
            consumer.gem_close(h)

    log = EventLog()
    dev.bus.subscribe(log)
    for i in range(WARMUP):
        frame(i)
    log.clear()
    for i in range(WARMUP, WARMUP + MEASURE):
        frame(i)
        dev.check_invariants()
    m, u, t = _counts(log, consumer.vm, MEASURE)
    return PerFlip(m, u, t)
