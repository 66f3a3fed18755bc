"""The scenarios' common ground: the setup constants, the frozen :class:`ScenarioResult`,
the meter that counts migrations, pins, attachment maps and importer page-table writes from
the model's events, the two-device world, and the PRIME sharing helpers every scenario uses
(``drm_prime.c``'s export / import round trip, a scanout pin as KMS ``prepare_fb`` takes it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import attrs

from gpuvm.core.errors import GpuvmError, InvalidValue
from gpuvm.core.events import Event, Mapped, Migrated, Unmapped
from gpuvm.drm.caps import (
    DeviceCaps,
    Topology,
)
from gpuvm.drm.device import Device, snapshot
from gpuvm.drm.dmabuf import (
    AttachmentMapped,
    AttachmentUnmapped,
    DmaBuf,
    MoveNotified,
    revalidate_import,
)
from gpuvm.drm.driver import Bo, DriverVm
from gpuvm.drm.file import DrmFile
from gpuvm.drm.placement import (
    MIB,
    PAGE_SIZE,
    Domain,
    Link,
    MigrationTally,
    Place,
)

__all__ = ["DEFAULT_GBPS", "FRAME_BYTES", "ScenarioResult", "format_result", "scanout_pin"]

MOVE_NOTIFY: ContextVar[bool] = ContextVar("dmabuf_move_notify", default=True)
"""``CONFIG_DMABUF_MOVE_NOTIFY`` for the scenarios' exporters (set by ``run(move_notify=)``)."""

FRAME_BYTES = 3840 * 2160 * 4
"""A 4K XRGB8888 linear buffer: 33,177,600 B, 8100 pages."""
PAGES = FRAME_BYTES // PAGE_SIZE
HZ = 60.0
DEFAULT_GBPS = 24.0
IMPORT_VA = 0x1_0000_0000


@attrs.frozen(slots=True)
class ScenarioResult:
    """One scenario's numbers.  Totals cover the whole run (setup included);
    ``frame_*`` numbers are the steady state per frame over ``frames`` frames."""

    key: str
    title: str
    gbps: float
    """Link bandwidth the milliseconds are priced at (GB/s)."""
    moves: int
    """Backing changes with a source and a destination (``Migrated`` events)."""
    link_bytes: int
    """Bytes those moves copied over the VRAM<->system link."""
    migration_ms: float
    pins: int
    """Pins held on the shared buffers at the end."""
    pinned_tt_bytes: int
    pinned_vram_bytes: int
    maps: int
    """Attachment maps (``dma_buf_map_attachment``)."""
    unmaps: int
    notifies: int
    """``move_notify`` calls."""
    pte_writes: int
    """Pages written in importer GPU VMs (``Mapped``)."""
    pte_clears: int
    errors: tuple[tuple[str, str], ...]
    """Refused calls: (what, errno name).  Each left every device unchanged."""
    frames: int
    frame_moves: float
    frame_copy_ms: float
    """Milliseconds of copies per frame: migrations plus copies userspace must do."""
    frame_link_bytes: float
    frame_pte: float
    facts: tuple[tuple[str, object], ...] = ()
    rfc: str | None = None
    """Set when the scenario relies on an RFC that mainline does not carry (S3, S4: the
    NO_MOVE import flag); its numbers describe that RFC, not a stock kernel."""
    kernel: str = "mainline"
    """The kernel profile the scenario's devices ran under (:mod:`gpuvm.drm.kernels`)."""
    move_notify: bool = True
    """``CONFIG_DMABUF_MOVE_NOTIFY`` of the exporters: the scenarios study dynamic importers
    and their ``move_notify``, so they build it (``y``) unless run with
    ``move_notify=False``; a stock kernel has it ``n`` (dynamic importers then pin at map)."""

    def fact(self, name: str) -> object:
        for k, v in self.facts:
            if k == name:
                return v
        raise KeyError(name)

    @property
    def link_gbps(self) -> float:
        """Steady-state link traffic in GB/s at 60 Hz."""
        return self.frame_link_bytes * HZ / 1e9

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            f.name: getattr(self, f.name) for f in attrs.fields(ScenarioResult) if f.name != "facts"
        }
        out["errors"] = [list(e) for e in self.errors]
        out["link_gbps"] = round(self.link_gbps, 3)
        out["facts"] = {k: v for k, v in self.facts}
        return out


# --- measurement --------------------------------------------------------------------------


class _Meter:
    """Bus listener counting migrations, attachment maps, move_notify and page-table
    writes in importer VMs."""

    def __init__(self, link: Link) -> None:
        self.tally = MigrationTally(link)
        self.maps = 0
        self.unmaps = 0
        self.notifies = 0
        self.pte_writes = 0
        self.pte_clears = 0
        self.vms: list[object] = []

    def __call__(self, e: Event) -> None:
        if isinstance(e, Migrated):
            self.tally(e)
        elif isinstance(e, AttachmentMapped):
            self.maps += 1
        elif isinstance(e, AttachmentUnmapped):
            self.unmaps += 1
        elif isinstance(e, MoveNotified):
            self.notifies += 1
        elif isinstance(e, Mapped) and any(e.vm is v for v in self.vms):
            self.pte_writes += e.range // PAGE_SIZE
        elif isinstance(e, Unmapped) and any(e.vm is v for v in self.vms):
            self.pte_clears += e.range // PAGE_SIZE

    def mark(self) -> tuple[int, int, int]:
        return (self.tally.moves, self.tally.link_bytes, self.pte_writes + self.pte_clears)


_KINDS: list[type[Event]] = [
    Migrated,
    AttachmentMapped,
    AttachmentUnmapped,
    MoveNotified,
    Mapped,
    Unmapped,
]


class _World:
    """Devices of one scenario with a meter on each bus, and the refused calls."""

    def __init__(self, gbps: float) -> None:
        if gbps <= 0:
            raise InvalidValue(f"bandwidth must be positive, got {gbps}")
        self.move_notify = MOVE_NOTIFY.get()
        self.gbps = gbps
        self.link = Link(f"{gbps:g} GB/s", gbps * 1e9)
        self.meter = _Meter(self.link)
        self.topology = Topology()
        self.devices: list[Device] = []
        self.errors: list[tuple[str, str]] = []
        self.shared: list[DmaBuf] = []

    def device(self, caps: DeviceCaps, **loc: str) -> Device:
        flavour = "xe" if caps.driver == "xe" else "nouveau"  # the ioctl tables of its driver
        dev = Device(
            flavour,
            name=caps.name,
            display=False,
            caps=caps,
            topology=self.topology,
            dmabuf_move_notify=self.move_notify,
        )
        self.topology.add(caps, **loc)
        dev.bus.subscribe(self.meter, _KINDS)
        self.devices.append(dev)
        return dev

    def importer_vm(self, dev: Device) -> DriverVm:
        vm = DriverVm(1 << 32, 1 << 40, name=f"{dev.name}.ctx", bus=dev.bus)
        self.meter.vms.append(vm)
        return vm

    @contextmanager
    def refused(self, what: str) -> Iterator[None]:
        """The body must raise a GpuvmError and leave every device unchanged."""
        before = snapshot(*self.devices)
        try:
            yield
        except GpuvmError as e:
            if snapshot(*self.devices) != before:
                raise AssertionError(f"{what}: refused but the model changed") from e
            self.errors.append((what, e.errno_name))
        else:
            raise AssertionError(f"{what}: expected a refusal")

    def check(self) -> None:
        for d in self.devices:
            d.check_invariants()
        for b in self.shared:
            b.check_invariants()

    def result(
        self,
        key: str,
        title: str,
        *,
        frames: int = 0,
        frame_mark: tuple[int, int, int] | None = None,
        extra_copy_bytes: int = 0,
        facts: tuple[tuple[str, object], ...] = (),
        rfc: str | None = None,
    ) -> ScenarioResult:
        self.check()
        m = self.meter
        pins = 0
        tt = vram = 0
        for d in self.shared:
            if d.released or d.sharing is None:
                continue
            b = d.backing
            pins += b.pin_count
            if b.pinned and b.domain == Domain.TT:
                tt += b.size
            if b.pinned and b.domain == Domain.VRAM:
                vram += b.size
        fmoves = flink = fpte = 0.0
        if frames and frame_mark is not None:
            now = m.mark()
            fmoves = (now[0] - frame_mark[0]) / frames
            flink = (now[1] - frame_mark[1]) / frames
            fpte = (now[2] - frame_mark[2]) / frames
        flink_total = flink + extra_copy_bytes
        return ScenarioResult(
            key=key,
            title=title,
            gbps=self.gbps,
            moves=m.tally.moves,
            link_bytes=m.tally.link_bytes,
            migration_ms=m.tally.ms,
            pins=pins,
            pinned_tt_bytes=tt,
            pinned_vram_bytes=vram,
            maps=m.maps,
            unmaps=m.unmaps,
            notifies=m.notifies,
            pte_writes=m.pte_writes,
            pte_clears=m.pte_clears,
            errors=tuple(self.errors),
            frames=frames,
            frame_moves=fmoves,
            frame_copy_ms=self.link.ms(int(flink_total)),
            frame_link_bytes=flink_total,
            frame_pte=fpte,
            facts=facts,
            rfc=rfc,
            kernel=self.devices[0].kernel.name if self.devices else "mainline",
            move_notify=self.move_notify,
        )


def _share(client: DrmFile, comp: DrmFile, handle: int, flags: int = 0) -> int:
    """Client exports ``handle``, passes the fd to the compositor, which imports it."""
    fd = client.prime_handle_to_fd(handle)
    cfd = client.fds.send(fd, comp.fds)
    client.fds.close(fd)
    try:
        return comp.prime_fd_to_handle(cfd, flags)
    finally:
        comp.fds.close(cfd)


def _dmabuf(client: DrmFile, handle: int) -> DmaBuf:
    d = client.bo(handle).dma_buf
    assert d is not None
    return d


def _bind(vm: DriverVm, bo: Bo, slot: int) -> None:
    """First GPU use of an import: map the attachment, then the VA."""
    att = bo.import_attach
    if att is not None and not att.usable:
        att.dmabuf.map(att)
    vm.map(IMPORT_VA + slot * 2 * FRAME_BYTES, bo.size, bo)


def _use(vm: DriverVm) -> None:
    """Next GPU use: revalidate what ``move_notify`` evicted (re-map, rewrite PTEs)."""
    vm.exec_lock()
    vm.validate(revalidate_import)


def _dmabuf_of_export(client: DrmFile, h: int) -> DmaBuf:
    fd = client.prime_handle_to_fd(h)
    client.fds.close(fd)
    return _dmabuf(client, h)


def scanout_pin(dev: Device, bo: Bo) -> None:
    """The display pins a framebuffer in a scanout domain (``amdgpu_display``'s pin):
    a native buffer in ``caps.scanout_domains`` (``-EINVAL`` if pinned elsewhere); an
    imported one only where the driver can pin imports (amdgpu: GTT), else ``-EINVAL``."""
    caps = dev.caps
    assert caps is not None and dev.mem is not None
    where = [Place(d) for d in sorted(caps.scanout_domains, reverse=True)]
    if bo.import_attach is not None:
        rules = caps.exporter
        ok = rules.imported_pin_domains if rules is not None else frozenset()
        allowed = [p for p in where if p.domain in ok]
        if not allowed:
            raise InvalidValue(
                f"{caps.name} cannot pin imported {bo!r} for scanout in "
                f"{'/'.join(d.name for d in caps.scanout_domains)} (imports pin in "
                f"{'/'.join(d.name for d in ok) or 'nothing'})"
            )
        return
    dev.mem.pin(bo, where)


def _swapchain(client: DrmFile, n: int = 3) -> list[int]:
    return [client.create_bo(FRAME_BYTES, name=f"swap{i}") for i in range(n)]


def format_result(r: ScenarioResult) -> str:
    """A scenario's numbers as a few lines of text (the CLI's output)."""
    rfc = f"  [RFC: {r.rfc}]" if r.rfc else ""
    # label the config both ways: =y is what the scenarios study, =n is the stock Kconfig
    rfc += (
        "  [CONFIG_DMABUF_MOVE_NOTIFY=y, not the stock default]"
        if r.move_notify
        else ("  [CONFIG_DMABUF_MOVE_NOTIFY=n]")
    )
    lines = [f"{r.key}: {r.title}  [link {r.gbps:g} GB/s]{rfc}"]
    lines.append(
        f"  migrations {r.moves}, {r.link_bytes:,} B over the link "
        f"({r.link_bytes / MIB:.1f} MiB) = {r.migration_ms:.2f} ms"
    )
    lines.append(
        f"  pins {r.pins} (GTT {r.pinned_tt_bytes / MIB:.1f} MiB, VRAM "
        f"{r.pinned_vram_bytes / MIB:.1f} MiB); attachment maps {r.maps} / unmaps {r.unmaps}; "
        f"move_notify {r.notifies}; importer PTE writes {r.pte_writes} / clears {r.pte_clears}"
    )
    for what, err in r.errors:
        lines.append(f"  refused: {what} -> {err} (state unchanged)")
    if r.frames:
        lines.append(
            f"  per frame ({r.frames} frames): {r.frame_moves:g} migrations, "
            f"{r.frame_copy_ms:.2f} ms of copies, {r.frame_link_bytes:,.0f} B "
            f"({r.link_gbps:.2f} GB/s at 60 Hz), {r.frame_pte:g} PTE rewrites"
        )
    if r.facts:
        lines.append("  " + ", ".join(f"{k}={v}" for k, v in r.facts))
    return "\n".join(lines)
