"""Issue 14, dma-buf / PRIME part: the driver layer as the kernel does it.  Each test names
the kernel function that decides the behaviour and says in its docstring what the model did
before; refusals are checked with :func:`gpuvm.drm.device.snapshot` before and after."""

from __future__ import annotations

from gpuvm.drm.caps import DeviceCaps, Topology, amdgpu_dgpu, xe_igpu
from gpuvm.drm.device import Device
from gpuvm.drm.dmabuf import Attachment, DmaBuf
from gpuvm.drm.file import DrmFile
from gpuvm.drm.placement import Domain
from gpuvm.observe.checker import LifetimeChecker

SIZE = 8 << 20
XE = xe_igpu("igpu")


def devices(importer: DeviceCaps) -> tuple[Device, Device, DrmFile, DrmFile, int]:
    topo = Topology()
    dgpu = Device("nouveau", name="dgpu", display=False, caps=amdgpu_dgpu("dgpu"), topology=topo)
    topo.add(amdgpu_dgpu("dgpu"), root="pci0")
    other = Device("nouveau", name=importer.name, display=False, caps=importer, topology=topo)
    client, comp = dgpu.open(name="client"), other.open(name="comp")
    h = client.create_bo(SIZE)
    return dgpu, other, client, comp, h


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
