"""Issue 14, dma-buf / PRIME part: the driver layer as the kernel does it.  Each test names
the kernel function that decides the behaviour and says in its docstring what the model did
before; refusals are checked with :func:`gpuvm.drm.device.snapshot` before and after."""

from __future__ import annotations

import errno as E

import pytest
from test_dmabuf_sharing import SIZE, devices

from gpuvm.core.errors import BackingConflict, GpuvmError
from gpuvm.core.gem import GemObject
from gpuvm.drm.caps import (
    EXPORTERS,
    amdgpu_dgpu,
    i915_igpu,
    soc_display,
    xe_igpu,
)
from gpuvm.drm.device import Device, snapshot
from gpuvm.drm.dmabuf import Attachment, DmaBuf, Exporter, ImporterOps, evict_importer_vms
from gpuvm.drm.file import DrmFile
from gpuvm.drm.placement import Domain, MemoryManager, Place
from gpuvm.observe.checker import LifetimeChecker

XE = xe_igpu("igpu")


def dynamic_import() -> tuple[Device, Device, DrmFile, DrmFile, int, Attachment]:
    """An amdgpu buffer exported by ``client`` (handle ``h``) and imported by an xe iGPU
    (a dynamic importer), mapped once (in GTT: the iGPU is not peer-to-peer)."""
    dgpu, igpu, client, comp, h = devices(XE)
    fd = client.fds.send(client.prime_handle_to_fd(h), comp.fds)
    ih = comp.prime_fd_to_handle(fd)
    att = comp.bo(ih).import_attach
    assert att is not None and att.dynamic
    att.dmabuf.map(att)
    return dgpu, igpu, client, comp, h, att


def dom(d: DmaBuf) -> Domain | None:
    return d.backing.domain


def flag(x: object) -> bool:
    """A call, so mypy does not narrow attributes across model calls."""
    return bool(x)


# --- 1: no move_notify after the exporter's last handle closed ---------------------------------


def test_move_after_last_exporter_handle_is_not_notified() -> None:
    """``drm_gem_object_exported_dma_buf_free`` clears ``obj->dma_buf`` when the exporter's
    handle count reaches 0, and ``amdgpu_bo_move_notify`` calls ``dma_buf_move_notify``
    only through ``obj->dma_buf``: a later move reaches no importer.  Before, the model
    notified every dynamic importer on every move (``att.notifies`` went to 1 and the
    mapping was marked stale)."""
    dgpu, igpu, client, _comp, h, att = dynamic_import()
    d = att.dmabuf
    bo = client.bo(h)
    assert dom(d) == Domain.TT
    n = att.notifies
    d.move(Domain.VRAM)  # still exported: notified
    assert att.notifies == n + 1 and flag(att.stale)
    d.remap(att)
    assert dom(d) == Domain.TT and flag(att.usable)
    client.gem_close(h)  # the exporter's last handle
    assert bo.dma_buf is None and not d.exported and not d.released
    n = att.notifies
    d.move(Domain.VRAM)
    assert att.notifies == n  # unchanged: nobody was told
    assert not flag(att.stale) and flag(att.usable) and att.unnotified is not None
    assert att.unnotified.domain == Domain.TT and dom(d) == Domain.VRAM
    assert d.stale_mappings() == [att]
    dgpu.check_invariants()  # the kernel's behaviour, not a model invariant breach
    igpu.check_invariants()


def test_lifetime_checker_reports_the_stale_importer_mapping() -> None:
    """The stale mapping left by the unnotified move (see above) is a finding of kind
    ``stale-mapping`` naming ``drm_gem_object_exported_dma_buf_free``; a re-map by the
    importer clears it.  Before, there was nothing to report: the model always notified."""
    dgpu, igpu, client, _comp, h, att = dynamic_import()
    d = att.dmabuf
    checker = LifetimeChecker(dgpu, igpu)
    assert checker.check() == []
    client.gem_close(h)
    d.move(Domain.VRAM)
    found = [v for v in checker.check() if v.kind == "stale-mapping"]
    assert len(found) == 1 and found[0].fatal
    assert "drm_gem_object_exported_dma_buf_free" in found[0].message
    assert not checker.ok
    d.remap(att)  # the importer maps again (it would after its own validate)
    assert att.unnotified is None and d.stale_mappings() == []
    assert dom(d) == Domain.TT
    dgpu.check_invariants()


def test_self_import_restores_obj_dma_buf_and_notification() -> None:
    """``drm_gem_prime_fd_to_handle`` sets ``obj->dma_buf`` again when the exporter's device
    re-imports the fd (self-import): moves are notified again from then on."""
    dgpu, _igpu, client, _comp, h, att = dynamic_import()
    d = att.dmabuf
    fd = client.fds.install(d)
    client.gem_close(h)
    assert not d.exported
    h2 = client.prime_fd_to_handle(fd)
    assert flag(d.exported) and client.bo(h2).dma_buf is d
    n = att.notifies
    d.move(Domain.VRAM)
    assert att.notifies == n + 1 and flag(att.stale) and att.unnotified is None
    dgpu.check_invariants()


# --- 12: i915 as an exporter is not dynamic ----------------------------------------------------


def i915_export() -> tuple[MemoryManager, DmaBuf]:
    """A buffer of an i915 iGPU (TT or SYSTEM) behind a dma-buf with i915's exporter rules."""
    caps = i915_igpu("igpu")
    mem = MemoryManager(vram=0, name="igpu", eviction={})
    obj = GemObject(SIZE, name="buf")
    mem.add(obj, [Place(Domain.TT), Place(Domain.SYSTEM)])
    mem.validate(obj)
    d = DmaBuf(obj, "igpu", SIZE, obj.resv, name="buf", bus=mem.bus, sharing=Exporter(caps, mem))
    d.get("fd")
    return mem, d


def test_i915_exporter_has_no_pin_so_static_maps_do_not_pin() -> None:
    """``i915_dmabuf_ops`` has ``attach``/``detach`` (migrate to SMEM, pin the pages) but no
    ``.pin``/``.unpin``, so ``dma_buf_pin_on_map`` is false for every importer: a static
    mapping adds no pin beyond the attach-time one.  Before, ``EXPORTERS["i915"]`` was
    dynamic and the map took a second pin (``map_pins == 1``, ``pin_count == 2``)."""
    assert EXPORTERS["i915"].dynamic is False
    _mem, d = i915_export()
    s = d.attach("display", soc_display("display"))  # a static importer
    assert s.attach_pins == 1 and d.backing.pin_count == 1
    d.map(s)
    assert s.map_pins == 0 and d.backing.pin_count == 1
    d.unmap(s)
    d.detach(s)
    assert d.backing.pin_count == 0
    d.check_invariants()


def test_i915_exporter_dma_buf_pin_is_a_no_op() -> None:
    """``dma_buf_pin`` calls ``dmabuf->ops->pin`` only if the exporter has one; i915 has
    none, so a dynamic importer's pin changes no placement.  Before, the model pinned the
    backing a second time (``pin_count == 2``)."""
    _mem, d = i915_export()
    a = d.attach("dgpu", amdgpu_dgpu("dgpu"), ImporterOps(evict_importer_vms))
    d.pin(a)
    assert a.pins == 1 and d.backing.pin_count == 1  # only the attach-time pin
    d.check_invariants()
    d.unpin(a)
    assert a.pins == 0 and d.backing.pin_count == 1
    d.detach(a)
    assert d.backing.pin_count == 0


def test_i915_exporter_never_calls_move_notify() -> None:
    """Only TTM exporters call ``dma_buf_move_notify`` (from their move callbacks); an i915
    buffer that moves (here after the attach-time pin was dropped behind the model's back,
    the only way a move can reach ``_on_move`` with an attachment) notifies nobody.  Before,
    i915 was treated as dynamic with ``notify_from_system`` and notified every move."""
    mem, d = i915_export()
    log: list[Attachment] = []
    a = d.attach("dgpu", amdgpu_dgpu("dgpu"), ImporterOps(log.append))
    mem.unpin(d.priv)
    a.attach_pins = 0
    d.move(Domain.TT)
    assert log == [] and a.notifies == 0


# --- 4: a late attacher against a pinned backing -----------------------------------------------


def test_late_import_of_a_pinned_buffer_succeeds_and_the_first_map_fails_ebusy() -> None:
    """``amdgpu_dma_buf_attach`` only clears ``peer2peer`` (``pci_p2pdma_distance``); it
    never looks at the pin, so PRIME_FD_TO_HANDLE succeeds and ``amdgpu_dma_buf_map`` fails
    ``-EBUSY`` (pinned outside GTT) at the first map.  Before, the model failed the import
    itself with ``-EBUSY``.  The refused map leaves both devices unchanged."""
    dgpu, igpu, client, comp, h = devices(i915_igpu("igpu"))
    assert dgpu.mem is not None
    bo = client.bo(h)
    dgpu.mem.pin(bo, Domain.VRAM)  # the exporter's own scanout
    fd = client.fds.send(client.prime_handle_to_fd(h), comp.fds)
    ih = comp.prime_fd_to_handle(fd)
    att = comp.bo(ih).import_attach
    assert att is not None and att in att.dmabuf.attachments
    before = snapshot(dgpu, igpu)
    with pytest.raises(BackingConflict) as info:
        att.dmabuf.map(att)
    assert info.value.errno == E.EBUSY
    assert snapshot(dgpu, igpu) == before
    dgpu.check_invariants()
    igpu.check_invariants()
    dgpu.mem.unpin(bo)
    att.dmabuf.map(att)  # once unpinned the map migrates to GTT
    assert dom(att.dmabuf) == Domain.TT


def test_import_that_maps_at_import_still_fails_ebusy_unchanged() -> None:
    """``drm_gem_prime_import_dev`` (the generic helper) maps at import time, so an importer
    using it (a SoC display) meets ``amdgpu_dma_buf_map``'s ``-EBUSY`` inside
    PRIME_FD_TO_HANDLE; the refusal leaves both devices unchanged."""
    dgpu, disp, client, comp, h = devices(soc_display("display"))
    assert dgpu.mem is not None
    dgpu.mem.pin(client.bo(h), Domain.VRAM)
    fd = client.fds.send(client.prime_handle_to_fd(h), comp.fds)
    before = snapshot(dgpu, disp)
    with pytest.raises(GpuvmError) as info:
        comp.prime_fd_to_handle(fd)
    assert info.value.errno == E.EBUSY
    assert snapshot(dgpu, disp) == before
    assert comp.fds.get(fd).attachments == []


# --- 3: NO_MOVE is an RFC ----------------------------------------------------------------------


def test_mainline_fd_to_handle_ignores_flags() -> None:
    """Mainline ``drm_prime_fd_to_handle_ioctl`` passes only ``args->fd`` and
    ``&args->handle`` on: ``args->flags`` is never read, so NO_MOVE (and any other bit)
    changes nothing and the iGPU import attaches as without it.  Before, the model always
    applied the RFC (``-EINVAL``: the import would migrate) and refused unknown bits."""
    from gpuvm.drm.prime import DRM_PRIME_FD_TO_HANDLE_NO_MOVE, rfc_no_move

    dgpu, igpu, client, comp, h = devices(i915_igpu("igpu"))
    assert not rfc_no_move(igpu)
    fd = client.fds.send(client.prime_handle_to_fd(h), comp.fds)
    ih = comp.prime_fd_to_handle(fd, DRM_PRIME_FD_TO_HANDLE_NO_MOVE | 0x2)
    att = comp.bo(ih).import_attach
    assert att is not None and att in att.dmabuf.attachments
    dgpu.check_invariants()


def test_rfc_switch_keeps_the_no_move_refusal_unchanged() -> None:
    """With ``DeviceCaps.rfc_no_move`` (a kernel carrying the RFC) the flag is honoured:
    ``-EINVAL`` when the import would migrate, unknown flags ``-EINVAL``, both leaving the
    devices unchanged."""
    import attrs

    from gpuvm.core.errors import InvalidValue, WouldMigrate
    from gpuvm.drm.prime import DRM_PRIME_FD_TO_HANDLE_NO_MOVE

    dgpu, igpu, client, comp, h = devices(attrs.evolve(i915_igpu("igpu"), rfc_no_move=True))
    fd = client.fds.send(client.prime_handle_to_fd(h), comp.fds)
    for flags, exc in ((DRM_PRIME_FD_TO_HANDLE_NO_MOVE, WouldMigrate), (0x2, InvalidValue)):
        before = snapshot(dgpu, igpu)
        with pytest.raises(exc) as info:
            comp.prime_fd_to_handle(fd, flags)
        assert info.value.errno == E.EINVAL
        assert snapshot(dgpu, igpu) == before


def test_only_the_no_move_scenarios_are_labelled_rfc() -> None:
    """Every scenario result says whether it used the RFC: S3 and S4 do, the rest run a
    stock kernel (``rfc`` is None)."""
    from gpuvm.study.dmabuf_scenarios import run

    labelled = {r.key for r in run("all", 24.0) if r.rfc is not None}
    assert labelled == {"S3", "S4"}


# --- dma-buf llseek ----------------------------------------------------------------------------


def test_dma_buf_llseek_size_query_and_einval() -> None:
    """``dma_buf_llseek``: ``lseek(fd, 0, SEEK_END)`` is the size, ``(0, SEEK_SET)`` is 0;
    ``SEEK_CUR`` (or any other whence) and a non-zero offset are ``-EINVAL``, and the
    refusals change nothing.  Before, dma-buf fds had no llseek."""
    import os

    from gpuvm.core.errors import BadFd, InvalidValue

    dgpu, igpu, client, _comp, h = devices(i915_igpu("igpu"))
    fd = client.prime_handle_to_fd(h)
    assert client.fds.lseek(fd, 0, os.SEEK_END) == SIZE
    assert client.fds.lseek(fd, 0, os.SEEK_SET) == 0
    for offset, whence in ((0, os.SEEK_CUR), (4096, os.SEEK_SET), (-1, os.SEEK_END), (0, 7)):
        before = snapshot(dgpu, igpu)
        with pytest.raises(InvalidValue) as info:
            client.fds.lseek(fd, offset, whence)
        assert info.value.errno == E.EINVAL
        assert snapshot(dgpu, igpu) == before
    with pytest.raises(BadFd) as bad:
        client.fds.lseek(fd + 100, 0, os.SEEK_END)
    assert bad.value.errno == E.EBADF
