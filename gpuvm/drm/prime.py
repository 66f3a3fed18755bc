"""PRIME: sharing buffers between DRM files and devices through dma-buf fds
(``drivers/gpu/drm/drm_prime.c``).

* :func:`handle_to_fd` (``drm_gem_prime_handle_to_fd``): an imported buffer re-exports the
  dma-buf it came from; an exported one reuses its export cache (``obj->dma_buf``);
  otherwise the driver exports a new dma-buf, which holds the buffer (edge 2) and is held
  by ``obj->dma_buf`` (edge 3).  The file's PRIME cache remembers one handle per dma-buf.
* :func:`fd_to_handle` (``drm_gem_prime_fd_to_handle``): a PRIME cache hit returns the same
  handle (no new buffer, no VMA work); a dma-buf exported by this very device is a
  *self-import* (the exporter's buffer itself, no attachment); anything else is a *foreign*
  import: a new buffer around an attachment, sharing the dma-buf's reservation, holding the
  dma-buf until it is freed (edge 4).  A second file importing the same foreign dma-buf gets
  its own buffer.

Both validate first.  Without placement the only failures are a bad handle or fd and bad
flags.  When the exporting device has a memory manager and exporter rules
(``Device(caps=...)``), the dma-buf carries an :class:`~gpuvm.drm.dmabuf.Exporter` and a foreign
import on a device with caps attaches with them: dynamic if the importer implements
``move_notify`` (then its ``move_notify`` evicts the import's VmBos), static otherwise
(mapped at import if the driver uses the generic helper); a driver without a foreign-import
path fails ``-EINVAL``.  Mainline ``drm_prime_fd_to_handle_ioctl`` ignores
``args->flags``; only on an importer whose caps set ``rfc_no_move`` (the 2024 RFC) are
unknown flags ``-EINVAL`` and :data:`DRM_PRIME_FD_TO_HANDLE_NO_MOVE` fails ``-EINVAL`` if
the import would migrate the buffer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuvm.core.args import check_fd, check_handle, check_u32
from gpuvm.core.errors import BadHandle, InvalidValue, NoImportPath, PermissionDenied
from gpuvm.core.gem import GemObject
from gpuvm.core.refs import Holder
from gpuvm.drm.dmabuf import DmaBuf, Exporter, ImporterOps, dma_buf_holder, evict_importer_vms
from gpuvm.drm.driver import Bo

if TYPE_CHECKING:
    from gpuvm.drm.file import DrmFile

__all__ = [
    "DRM_CLOEXEC",
    "DRM_PRIME_FD_TO_HANDLE_NO_MOVE",
    "DRM_RDWR",
    "export",
    "fd_to_handle",
    "handle_to_fd",
    "rfc_no_move",
]

DRM_CLOEXEC = 0o2000000
DRM_RDWR = 0o2
DRM_PRIME_FD_TO_HANDLE_NO_MOVE = 1 << 0
"""[P] Simon Ser's RFC (Oct 2024): bit 0 of ``drm_prime_handle.flags`` on import."""


def rfc_no_move(device: object) -> bool:
    """Whether ``device``'s kernel carries the NO_MOVE RFC (``caps.rfc_no_move``)."""
    caps = getattr(device, "caps", None)
    return bool(caps is not None and caps.rfc_no_move)


def prime_cache_holder(file: DrmFile) -> Holder:
    return Holder("prime cache", who=file)


def export(bo: Bo) -> DmaBuf:
    """The driver's ``gem_prime_export`` (msm ``msm_gem_prime_export``): a new dma-buf
    around ``bo``, holding it (edge 2), with the exporter's release op; the policy sees the
    export (msm 6.17 raises ``vma_ref``)."""
    from gpuvm.drm.device import Device

    device = bo.device
    assert isinstance(device, Device)
    sharing = None
    mem = device.mem
    caps = device.caps
    if caps is not None and caps.exporter is not None and mem is not None and bo in mem:
        sharing = Exporter(
            caps, mem, topology=device.topology, move_notify_built=device.dmabuf_move_notify
        )
    d = DmaBuf(
        bo, device, bo.size, bo.resv, bus=device.bus, name=f"{bo.name}.dmabuf", sharing=sharing
    )
    bo.get(d)
    device.policy.on_export(bo, d)
    d.release_hooks.append(_exporter_release)
    device.dmabufs[d] = None
    return d


def _exporter_release(d: DmaBuf) -> None:
    """``msm_gem_dmabuf_release`` / ``drm_gem_dmabuf_release``: tell the policy, then drop
    the dma-buf's buffer reference (edge 2)."""
    from gpuvm.drm.device import Device

    bo = d.priv
    device = d.exporter
    assert isinstance(bo, Bo) and isinstance(device, Device)
    device.policy.on_release(bo, d)
    device.dmabufs.pop(d, None)
    bo.put(d)


def handle_to_fd(file: DrmFile, handle: int, flags: int = 0) -> int:
    """``PRIME_HANDLE_TO_FD``: the dma-buf of ``handle`` as a new fd in the file's process."""
    check_handle("handle", handle)
    check_u32("flags", flags)
    if flags & ~(DRM_CLOEXEC | DRM_RDWR):
        raise InvalidValue(f"PRIME_HANDLE_TO_FD flags {flags:#o}")
    bo = file.bo(handle)
    if bo.import_attach is not None:
        d = bo.import_attach.dmabuf
    elif bo.dma_buf is not None:
        d = bo.dma_buf
    else:
        if bo.handle_count == 0:
            raise BadHandle(f"{bo!r} has no handle left (raced with GEM_CLOSE)")
        if bo.private_vm is not None:  # xe_gem_prime_export, msm / amdgpu likewise
            raise PermissionDenied(f"{bo!r} is private to {bo.private_vm.name}: no export")
        d = export(bo)
        bo.dma_buf = d
        d.get(dma_buf_holder(bo))
    if d not in file.prime_cache:
        file.prime_cache[d] = handle
        d.get(prime_cache_holder(file))
    return file.fds.install(d)


def fd_to_handle(file: DrmFile, fd: int, flags: int = 0) -> int:
    """``PRIME_FD_TO_HANDLE``: cache hit, self-import or foreign import.  Mainline
    (``drm_prime_fd_to_handle_ioctl``) never reads ``flags`` beyond the uAPI struct's u32;
    under the NO_MOVE RFC (:func:`rfc_no_move`) they may hold
    :data:`DRM_PRIME_FD_TO_HANDLE_NO_MOVE` (self-imports and cache hits never move) and
    nothing else."""
    check_fd("fd", fd)
    check_u32("flags", flags)
    rfc = rfc_no_move(file.device)
    if not rfc:
        flags = 0
    elif flags & ~DRM_PRIME_FD_TO_HANDLE_NO_MOVE:
        raise InvalidValue(f"PRIME_FD_TO_HANDLE flags {flags:#x} (NO_MOVE RFC)")
    d = file.fds.get(fd)
    d.check_alive("import")
    cached = file.prime_cache.get(d)
    if cached is not None:
        return cached
    device = file.device
    if d.exporter is device and isinstance(d.priv, Bo):
        bo = d.priv
        h = file._new_handle(bo)
    else:
        bo = _import_foreign(file, d, no_move=bool(flags & DRM_PRIME_FD_TO_HANDLE_NO_MOVE))
        h = file._new_handle(bo)
        bo.put()
    if bo.dma_buf is None:
        bo.dma_buf = d
        d.get(dma_buf_holder(bo))
    file.prime_cache[d] = h
    d.get(prime_cache_holder(file))
    return h


def _import_foreign(file: DrmFile, d: DmaBuf, *, no_move: bool = False) -> Bo:
    """``drm_gem_prime_import_dev`` for another device's dma-buf (msm ``msm_gem_import``):
    attach, then a new buffer sharing the dma-buf's reservation and holding it (edge 4).
    At its free it detaches and drops the dma-buf."""
    device = file.device
    caps = device.caps
    if caps is None:
        att = d.attach(device)
    else:
        mode = caps.import_mode(False)
        if mode is None:
            raise NoImportPath(f"{caps.name} ({caps.driver}) cannot import foreign {d!r}")
        ops = None
        if mode == "dynamic":
            ops = ImporterOps(evict_importer_vms, allow_peer2peer=caps.allow_peer2peer)
        map_now = mode == "static" and caps.maps_at_import
        att = d.attach(device, caps, ops, no_move=no_move, map_now=map_now)
    bo = device.new_bo(d.size, f"{d.name}@{device.name}", resv=d.resv, placement=False)
    bo.import_attach = att
    att.bo = bo
    d.get(bo)
    bo.free_hooks.append(_imported_free)
    return bo


def _imported_free(obj: GemObject) -> None:
    """``drm_prime_gem_destroy``: detach and drop the imported buffer's dma-buf (edge 4)."""
    assert isinstance(obj, Bo) and obj.import_attach is not None
    att = obj.import_attach
    att.dmabuf.detach(att, teardown=True)
    att.dmabuf.put(obj)
