"""Workloads: pageflips and dma-buf re-imports as plain functions over the driver layer.

* :func:`pageflip` runs a display compositor for ``frames`` frames on an msm device with a
  teardown policy: ``layers`` planes, each flipping through a swapchain of
  ``swapchain_depth`` scanout buffers of a named resolution.  The buffers come from the
  compositor's own swapchain, a client of the same device, or a foreign device (a dma-buf
  from a discrete GPU or a dma-heap), imported with a compositor's pattern (weston keeps
  its handle, wlroots closes it after ``ADDFB2``, Android's slot cache, or a framebuffer
  re-created every frame): wlroots ``backend/drm/fb.c`` closes the GEM handles right after
  ``ADDFB2`` and keeps the framebuffer per buffer; weston ``libweston/backend-drm/fb.c``
  keeps the ``gbm_bo`` (and its handle); drm_hwcomposer ``DrmFbImporter.cpp`` /
  ``HwcLayer.cpp`` keeps one framebuffer per layer slot.
* :func:`reimport` runs a GPU consumer that textures from an imported buffer in its own
  context VM, importing it again every frame and keeping or closing its handle
  (``drm_gem_prime_fd_to_handle`` in ``drivers/gpu/drm/drm_prime.c`` returns the same handle
  while the file holds one for that dma-buf; after the last close a foreign import makes a
  new GEM object, a self-import returns the exporter's).

Each frame ends with a :class:`~gpuvm.core.events.FrameEnd` on the device's bus, so
:class:`~gpuvm.observe.costs.CostCounters` split the run into frames; the first ``warmup`` frames
(default ``swapchain_depth + 1``: every buffer's first use) are left out of the steady state.
The model is clock-free: a :class:`WorkloadRun` holds counts, and presets price them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import attrs

from gpuvm.core.errors import GpuvmError, InvalidValue, NoMemory, NoSpace, UseAfterFree
from gpuvm.core.events import FrameEnd
from gpuvm.drm import xe
from gpuvm.drm.device import Device
from gpuvm.drm.dmabuf import FdTable
from gpuvm.drm.file import BindMap, BindUnmap, DrmFile
from gpuvm.drm.kms import Framebuffer, Plane
from gpuvm.drm.modes import FLAVOURS
from gpuvm.drm.policies import PolicyArg, UnknownPolicy, policy_ref
from gpuvm.observe.checker import LifetimeChecker
from gpuvm.observe.costs import CostCounters, Counts, Resolution, resolution

__all__ = [
    "CONSUMERS",
    "PAGEFLIP_PATTERNS",
    "PAGE_SIZES",
    "REIMPORT_PATTERNS",
    "REIMPORT_SOURCES",
    "SOURCES",
    "STATUSES",
    "Failure",
    "UnknownPolicy",
    "WorkloadError",
    "WorkloadRun",
    "WorkloadSpec",
    "check_policy",
    "pageflip",
    "reimport",
    "run_spec",
]

PAGE_SIZES: Final[Mapping[str, int]] = {"4K": 4096, "64K": 65536, "2M": 2 << 20}
"""The GPU page sizes a workload may run with (the VMs' page-table granule)."""

STATUSES: Final = ("ok", "exhausted", "refused", "leaked", "use-after-free")
"""How a run ended: ``ok``; ``exhausted`` (a VM's window or memory ran out: ``-ENOSPC`` /
``-ENOMEM`` at some frame); ``refused`` (another ioctl was refused); ``leaked`` (the run
finished but teardown left objects alive); ``use-after-free`` (refused as one, or reported
by the device).  A run that is not ``ok`` is a finding, never a cheap result."""

SOURCES: Final[Mapping[str, str]] = {
    "swapchain": "the compositor's own swapchain (it keeps its GBM buffers and handles)",
    "client": "a client of the same msm device shares dma-bufs and keeps its handles",
    "foreign": "dma-bufs of another DRM device (separate_gpu_kms, a dGPU, a dma-heap)",
}
"""Where the scanout buffers of :func:`pageflip` come from."""

PAGEFLIP_PATTERNS: Final[Mapping[str, str]] = {
    "own": "no import: the compositor flips the buffers it allocated (swapchain only)",
    "weston": "import once, keep the GEM handle (gbm_bo_import), cache the framebuffer",
    "wlroots": "import once, ADDFB2, close the GEM handle at once; the framebuffer is cached",
    "android": "framebuffer per layer slot, handle kept; PRIME_FD_TO_HANDLE every frame "
    "hits the per-file cache (older drm_hwcomposer)",
    "recreate": "no cache: import, ADDFB2, close the handle, flip and RMFB the previous "
    "framebuffer every frame",
}
"""How a compositor imports a client's buffer (see the module docstring for the sources)."""

REIMPORT_SOURCES: Final[Mapping[str, str]] = {
    "same_device": "the producer is another file of the same device (self-import)",
    "foreign": "the producer is another DRM device (a new GEM object per import)",
}
REIMPORT_PATTERNS: Final[Mapping[str, str]] = {
    "keep_handle": "import every frame; the handle stays open (the PRIME cache hits)",
    "close_each_frame": "import, submit, wait, close the handle: every frame",
}
CONSUMERS: Final[Mapping[str, str]] = {
    "legacy": "legacy context VM (the kernel maps at submit)",
    "vm_bind": "VM_BIND context (userspace maps on import, unmaps before close)",
}


class WorkloadError(InvalidValue):
    """A workload parameter that is not valid (``-EINVAL``)."""


def check_policy(policy: PolicyArg) -> str:
    """The reference of ``policy`` (a built-in or entry-point name, else ``module:Class``:
    :func:`~gpuvm.drm.policies.policy_ref`); one that does not resolve raises
    :class:`~gpuvm.drm.policies.UnknownPolicy`."""
    return policy_ref(policy)


def _check_int(name: str, value: object, low: int) -> int:
    if type(value) is not int or value < low:
        raise WorkloadError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_hz(value: object) -> float:
    if type(value) not in (int, float) or not value > 0 or value == float("inf"):  # type: ignore[operator]
        raise WorkloadError(f"refresh_hz must be a number > 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _check_choice(name: str, value: object, table: Mapping[str, str]) -> str:
    if not isinstance(value, str) or value not in table:
        raise WorkloadError(f"unknown {name} {value!r}; known: {', '.join(table)}")
    return value


@attrs.frozen(slots=True)
class WorkloadSpec:
    """Every parameter of one workload run, as a value (what a study row is keyed by).

    ``workload`` is ``"pageflip"`` or ``"reimport"``; ``source`` / ``pattern`` /
    ``consumer`` take the names of :data:`SOURCES` / :data:`PAGEFLIP_PATTERNS` (pageflip,
    consumer ``"kms"``) or :data:`REIMPORT_SOURCES` / :data:`REIMPORT_PATTERNS` /
    :data:`CONSUMERS` (reimport).  ``swapchain_depth`` is the buffers per layer (reimport:
    buffers imported per frame).  ``warmup`` frames are left out of the steady state.
    ``page_size`` is the device's GPU page size (:data:`PAGE_SIZES`), ``flavour`` the driver
    flavour of the device under study, ``seed`` the buffer order: 0 cycles the swapchain
    round-robin (FIFO); another seed draws each frame's buffer at random among those not on
    screen (a mailbox-like presenter; a re-import shuffles its imports)."""

    workload: str
    source: str
    pattern: str
    consumer: str
    resolution: str
    refresh_hz: float
    layers: int
    swapchain_depth: int
    frames: int
    warmup: int
    page_size: int = 4096
    flavour: str = "msm"
    seed: int = 0

    @property
    def case(self) -> str:
        """A short unique name, e.g. ``pageflip/foreign/wlroots`` or
        ``reimport/foreign/close_each_frame/vm_bind``."""
        if self.workload == "pageflip":
            return f"pageflip/{self.source}/{self.pattern}"
        return f"reimport/{self.source}/{self.pattern}/{self.consumer}"

    def validate(self) -> None:
        """Raise :class:`WorkloadError` (or ``UnknownResolution``) for any bad field."""
        resolution(self.resolution)
        _check_hz(self.refresh_hz)
        _check_int("layers", self.layers, 1)
        _check_int("swapchain_depth", self.swapchain_depth, 1)
        _check_int("frames", self.frames, 1)
        _check_int("warmup", self.warmup, 0)
        _check_int("seed", self.seed, 0)
        if self.page_size not in PAGE_SIZES.values():
            raise WorkloadError(
                f"page_size must be one of {', '.join(PAGE_SIZES)} "
                f"({', '.join(str(v) for v in PAGE_SIZES.values())}), got {self.page_size!r}"
            )
        _check_choice("flavour", self.flavour, FLAVOURS)  # type: ignore[arg-type]
        if self.warmup >= self.frames:
            raise WorkloadError(
                f"frames ({self.frames}) must exceed the {self.warmup} warm-up frames"
            )
        if self.workload == "pageflip":
            _check_choice("source", self.source, SOURCES)
            _check_choice("pattern", self.pattern, PAGEFLIP_PATTERNS)
            if (self.source == "swapchain") != (self.pattern == "own"):
                raise WorkloadError(
                    "pattern 'own' goes with source 'swapchain' only, and the swapchain has "
                    f"no import pattern (got source {self.source!r}, pattern {self.pattern!r})"
                )
            if self.consumer != "kms":
                raise WorkloadError(f"a pageflip's consumer is 'kms', got {self.consumer!r}")
        elif self.workload == "reimport":
            _check_choice("source", self.source, REIMPORT_SOURCES)
            _check_choice("pattern", self.pattern, REIMPORT_PATTERNS)
            _check_choice("consumer", self.consumer, CONSUMERS)
        else:
            raise WorkloadError(f"unknown workload {self.workload!r}; known: pageflip, reimport")
        if self.flavour.startswith("xe") and self.consumer != "vm_bind":
            raise WorkloadError(
                f"flavour {self.flavour!r} runs only reimport with consumer 'vm_bind' (xe has "
                f"no legacy path, and its display is not modelled), got {self.case}"
            )


@attrs.frozen(slots=True)
class Failure:
    """Why a run stopped early: its :data:`STATUSES` entry, the frame it happened at
    (None: while setting up), the kernel errno (name) and the error's one line."""

    status: str
    frame: int | None
    errno: str
    error: str

    @classmethod
    def of(cls, exc: GpuvmError, frame: int | None) -> Failure:
        if isinstance(exc, NoSpace | NoMemory):
            status = "exhausted"
        elif isinstance(exc, UseAfterFree):
            status = "use-after-free"
        else:
            status = "refused"
        line = str(exc.args[0] if exc.args else exc).splitlines()[0]
        return cls(status, frame, exc.errno_name, f"{type(exc).__name__}: {line}")


@attrs.define(slots=True, eq=False)
class WorkloadRun:
    """The outcome of one workload under one policy: its ``WorkloadSpec``, the device (closed if the
    run was torn down) and its counters, the steady-state counts (``steady.frames`` frames
    after warm-up), and, after a teardown, the device's leak report and lifetime reports
    (use-after-free).  With ``tolerate``, a refused frame stops the run and is kept as
    :attr:`failure` (the counts then cover the frames before it); :attr:`finding` is the
    lifetime checker's first finding at teardown."""

    spec: WorkloadSpec
    policy: str
    device: Device
    counters: CostCounters
    steady: Counts
    warmup_counts: Counts
    leaks: list[str] = attrs.field(factory=list)
    reports: list[str] = attrs.field(factory=list)
    torn_down: bool = False
    failure: Failure | None = None
    finding: str = ""

    @property
    def status(self) -> str:
        """One of :data:`STATUSES`: the failure's, else what teardown found."""
        if self.failure is not None:
            return self.failure.status
        if any("use-after-free" in r for r in self.reports):
            return "use-after-free"
        if self.leaks:
            return "leaked"
        return "ok"

    def per_flip(self) -> dict[str, float]:
        """Steady-state counts per frame (a frame flips every layer once)."""
        return self.steady.per_frame()


# --- helpers -------------------------------------------------------------------------------


def _foreign_exporter(n: int, size: int) -> tuple[Device, DrmFile, list[int]]:
    """Another DRM device (render-only; a dGPU or a dma-heap) exporting ``n`` buffers."""
    other = Device("nouveau", "gpuvm_vma_ref", name="dgpu", display=False)
    producer = other.open(name="producer")
    fds = [producer.prime_handle_to_fd(producer.create_bo(size)) for _ in range(n)]
    return other, producer, fds


def _run(
    spec: WorkloadSpec,
    policy: str,
    device: Device,
    counters: CostCounters,
    frame: Callable[[int], None],
    extra: list[Device],
    *,
    teardown: bool,
    check: bool,
    tolerate: bool = False,
) -> WorkloadRun:
    bus = device.bus
    start = len(counters.frames)
    failure: Failure | None = None
    done = spec.frames
    for i in range(spec.frames):
        try:
            frame(i)
        except GpuvmError as exc:
            if not tolerate:
                raise
            failure = Failure.of(exc, i)
            done = i
            break
        if check:
            device.check_invariants()
        bus.emit(FrameEnd(i))
    warm_end = min(spec.warmup, done)
    steady = counters.frames_sum(start + warm_end, start + done)
    warm = counters.frames_sum(start, start + warm_end)
    run = WorkloadRun(spec, policy, device, counters, steady, warm, failure=failure)
    if teardown:
        _teardown(run, extra)
    return run


def _teardown(run: WorkloadRun, extra: list[Device]) -> None:
    """Close every file, fd table and device: the leak report says what stays alive."""
    for dev in [run.device, *extra]:
        tables: dict[int, FdTable] = {id(f.fds): f.fds for f in dev.files}
        for f in list(dev.files):
            f.close()
        for t in tables.values():
            t.close_all()
    run.leaks = run.device.close()
    for dev in extra:
        if not dev.closed:
            dev.close()
    run.reports = list(run.device.reports)
    run.torn_down = True
    if run.leaks or run.reports:
        found = LifetimeChecker().after_teardown(run.device)
        if found:
            run.finding = str(found[0]).splitlines()[0]
        else:
            run.finding = (run.reports or run.leaks)[0].splitlines()[0]


def _order(n: int, frames: int, seed: int) -> list[int]:
    """The buffer shown at each frame: round-robin for seed 0, else a seeded draw among the
    buffers not on screen."""
    if seed == 0 or n == 1:
        return [i % n for i in range(frames)]
    rng = random.Random(seed)
    out: list[int] = []
    cur = -1
    for _ in range(frames):
        cur = rng.choice([k for k in range(n) if k != cur])
        out.append(cur)
    return out


def _make(
    policy: PolicyArg, counters: CostCounters | None, flavour: str = "msm", **kw: object
) -> tuple[Device, CostCounters]:
    device = Device(flavour, policy, **kw)  # type: ignore[arg-type]
    if counters is None:
        counters = CostCounters(device.bus)
    else:
        counters.attach(device.bus)
    return device, counters


# --- pageflip ------------------------------------------------------------------------------


def pageflip(
    resolution: str | Resolution = "1080p",
    refresh_hz: float = 60,
    swapchain_depth: int = 3,
    layers: int = 1,
    frames: int = 120,
    *,
    source: str = "swapchain",
    pattern: str | None = None,
    policy: PolicyArg = "gpuvm_vma_ref",
    counters: CostCounters | None = None,
    warmup: int | None = None,
    teardown: bool = False,
    check: bool = False,
    page_size: int = 4096,
    flavour: str = "msm",
    seed: int = 0,
    tolerate: bool = False,
) -> WorkloadRun:
    """A compositor flipping ``layers`` planes for ``frames`` frames on an msm device with
    ``policy``: each plane cycles through ``swapchain_depth`` buffers of ``resolution``
    (``msm_framebuffer_prepare`` / ``cleanup`` at each atomic commit).

    ``source`` is ``"swapchain"`` (pattern ``"own"``, the default for it), ``"client"`` or
    ``"foreign"`` (pattern ``"weston"``, the default, ``"wlroots"``, ``"android"`` or
    ``"recreate"``); see :data:`SOURCES` and :data:`PAGEFLIP_PATTERNS`.  ``counters``
    (attached to the new device's bus) default to fresh ones; ``teardown`` closes everything
    afterwards and fills the run's leak report; ``check`` runs the device's invariants
    every frame; ``page_size``, ``flavour`` and ``seed`` as in :class:`WorkloadSpec`;
    ``tolerate`` keeps a refused frame as the run's :attr:`~WorkloadRun.failure` instead of
    raising.  Bad parameters raise :class:`WorkloadError` before anything runs."""
    if pattern is None:
        pattern = "own" if source == "swapchain" else "weston"
    res = _resolution_name(resolution)
    spec = WorkloadSpec(
        "pageflip",
        source,
        pattern,
        "kms",
        res,
        refresh_hz,
        layers,
        swapchain_depth,
        frames,
        swapchain_depth + 1 if warmup is None else warmup,
        page_size,
        flavour,
        seed,
    )
    spec.validate()
    name = check_policy(policy)
    size = _size(resolution)
    device, counters = _make(policy, counters, flavour, planes=layers, page_size=page_size)
    comp = device.open(name="compositor")
    extra: list[Device] = []
    n = swapchain_depth
    order = _order(n, frames, seed)
    planes: list[Plane] = list(device.planes)
    frame: Callable[[int], None]

    if source == "swapchain":
        fbs = [[comp.add_fb(comp.create_bo(size)) for _ in range(n)] for _ in planes]

        def frame(i: int) -> None:
            for plane, chain in zip(planes, fbs, strict=True):
                comp.page_flip(plane, chain[order[i]])

    else:
        # Each layer's buffers reach the compositor as fds in its process.
        if source == "client":
            client = device.open(name="client")
            fds = [
                [
                    client.fds.send(client.prime_handle_to_fd(client.create_bo(size)), comp.fds)
                    for _ in range(n)
                ]
                for _ in planes
            ]
        else:
            other, producer, flat = _foreign_exporter(n * layers, size)
            extra.append(other)
            mine = [producer.fds.send(fd, comp.fds) for fd in flat]
            fds = [mine[k * n : (k + 1) * n] for k in range(layers)]
        if pattern == "recreate":
            shown: list[Framebuffer | None] = [None] * layers

            def frame(i: int) -> None:
                for k, plane in enumerate(planes):
                    h = comp.prime_fd_to_handle(fds[k][order[i]])
                    fb = comp.add_fb(h)
                    comp.gem_close(h)
                    comp.page_flip(plane, fb)
                    old = shown[k]
                    if old is not None:
                        comp.rm_fb(old)
                    shown[k] = fb

        else:
            fbs = []
            for layer_fds in fds:
                chain = []
                for fd in layer_fds:
                    h = comp.prime_fd_to_handle(fd)
                    chain.append(comp.add_fb(h))
                    if pattern == "wlroots":
                        comp.gem_close(h)
                fbs.append(chain)
            if pattern == "android":

                def frame(i: int) -> None:
                    for k, plane in enumerate(planes):
                        comp.prime_fd_to_handle(fds[k][order[i]])  # cache hit: same handle
                        comp.page_flip(plane, fbs[k][order[i]])

            else:

                def frame(i: int) -> None:
                    for plane, chain in zip(planes, fbs, strict=True):
                        comp.page_flip(plane, chain[order[i]])

    return _run(
        spec,
        name,
        device,
        counters,
        frame,
        extra,
        teardown=teardown,
        check=check,
        tolerate=tolerate,
    )


# --- reimport ------------------------------------------------------------------------------


def reimport(
    pattern: str = "close_each_frame",
    frames: int = 120,
    *,
    source: str = "same_device",
    consumer: str = "legacy",
    resolution: str | Resolution = "1080p",
    refresh_hz: float = 60,
    buffers: int = 1,
    policy: PolicyArg = "gpuvm_vma_ref",
    counters: CostCounters | None = None,
    warmup: int | None = None,
    teardown: bool = False,
    check: bool = False,
    page_size: int = 4096,
    flavour: str = "msm",
    seed: int = 0,
    tolerate: bool = False,
) -> WorkloadRun:
    """A GPU consumer on an msm device with ``policy`` texturing from ``buffers`` imported
    buffers in its own context VM: every frame it calls ``PRIME_FD_TO_HANDLE`` on each fd,
    submits, waits, and with ``pattern="close_each_frame"`` closes the handles.
    ``consumer="vm_bind"`` makes it a VM_BIND file that maps each buffer on import and
    unmaps it before closing (a policy without VM_BIND raises ``ModeError``).  ``source``
    is ``"same_device"`` (self-import) or ``"foreign"``.  Other arguments as
    :func:`pageflip`."""
    res = _resolution_name(resolution)
    spec = WorkloadSpec(
        "reimport",
        source,
        pattern,
        consumer,
        res,
        refresh_hz,
        1,
        buffers,
        frames,
        2 if warmup is None else warmup,
        page_size,
        flavour,
        seed,
    )
    spec.validate()
    name = check_policy(policy)
    size = _size(resolution)
    span = size + (-size % page_size)
    device, counters = _make(
        policy, counters, flavour, name="gpu", display=False, page_size=page_size
    )
    rng = random.Random(seed) if seed else None
    consumer_file = device.open(name="consumer")
    vm_bind = consumer == "vm_bind"
    xe_vm = 0  # xe: the consumer's VM (DRM_IOCTL_XE_VM_CREATE) instead of the file's
    if vm_bind and flavour.startswith("xe"):
        xe_vm = xe.vm_create(consumer_file)
    elif vm_bind:
        consumer_file.set_param_vm_bind()

    def bind(ops: Sequence[BindMap | BindUnmap]) -> None:
        if xe_vm:
            xe.vm_bind(consumer_file, xe_vm, ops)
        else:
            consumer_file.vm_bind(ops)

    extra: list[Device] = []
    if source == "foreign":
        other, producer, flat = _foreign_exporter(buffers, size)
        extra.append(other)
        fds = [producer.fds.send(fd, consumer_file.fds) for fd in flat]
    else:
        prod = device.open(name="producer")
        fds = [
            prod.fds.send(prod.prime_handle_to_fd(prod.create_bo(size)), consumer_file.fds)
            for _ in range(buffers)
        ]
    base = device.context_window[0]
    addrs = [base + k * span for k in range(buffers)]
    bound: dict[int, int] = {}
    close = pattern == "close_each_frame"

    def frame(i: int) -> None:
        todo = list(fds)
        if rng is not None:
            rng.shuffle(todo)
        by_fd = {fd: consumer_file.prime_fd_to_handle(fd) for fd in todo}
        handles = [by_fd[fd] for fd in fds]
        if vm_bind:
            binds = [BindMap(addrs[k], span, h) for k, h in enumerate(handles) if k not in bound]
            if binds:
                bind(binds)
            bound.update((k, h) for k, h in enumerate(handles))
            if xe_vm:
                xe.submit(consumer_file, xe_vm)
            else:
                consumer_file.exec()
        else:
            consumer_file.submit(handles)
        device.retire_all()
        if close:
            if vm_bind:
                bind([BindUnmap(addrs[k], span) for k in sorted(bound)])
                bound.clear()
            for h in dict.fromkeys(handles):
                consumer_file.gem_close(h)

    return _run(
        spec,
        name,
        device,
        counters,
        frame,
        extra,
        teardown=teardown,
        check=check,
        tolerate=tolerate,
    )


def run_spec(
    spec: WorkloadSpec,
    policy: PolicyArg,
    *,
    counters: CostCounters | None = None,
    teardown: bool = False,
    check: bool = False,
    tolerate: bool = False,
) -> WorkloadRun:
    """Run the workload ``spec`` describes under ``policy`` (``tolerate``: a refused frame
    ends the run as its :attr:`~WorkloadRun.failure`)."""
    common: dict[str, object] = {
        "page_size": spec.page_size,
        "flavour": spec.flavour,
        "seed": spec.seed,
        "tolerate": tolerate,
    }
    if spec.workload == "pageflip":
        return pageflip(
            spec.resolution,
            spec.refresh_hz,
            spec.swapchain_depth,
            spec.layers,
            spec.frames,
            source=spec.source,
            pattern=spec.pattern,
            policy=policy,
            counters=counters,
            warmup=spec.warmup,
            teardown=teardown,
            check=check,
            **common,  # type: ignore[arg-type]
        )
    if spec.workload == "reimport":
        return reimport(
            spec.pattern,
            spec.frames,
            source=spec.source,
            consumer=spec.consumer,
            resolution=spec.resolution,
            refresh_hz=spec.refresh_hz,
            buffers=spec.swapchain_depth,
            policy=policy,
            counters=counters,
            warmup=spec.warmup,
            teardown=teardown,
            check=check,
            **common,  # type: ignore[arg-type]
        )
    spec.validate()
    raise AssertionError("unreachable")


def _resolution_name(res: str | Resolution) -> str:
    if isinstance(res, Resolution):
        return res.name
    return resolution(res).name


def _size(res: str | Resolution) -> int:
    return resolution(res).size
