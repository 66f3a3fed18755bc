"""dma-bufs, their attachments, and the file-descriptor tables that hold them
(``struct dma_buf``, ``struct dma_buf_attachment``, a process's fd table).

What PRIME export/import needs (the file references and who holds each, the exporter's
buffer and release operation, attachments), plus dynamic sharing with placement: a
dma-buf whose exporter has a :class:`~gpuvm.drm.placement.MemoryManager` carries an
:class:`Exporter` (``dma_buf_ops`` of a TTM driver, its behaviour taken as data from
:data:`gpuvm.drm.caps.EXPORTERS`).  Its attachments are static or dynamic (``importer_ops``
with ``move_notify``), peer-to-peer or not; :meth:`DmaBuf.map` / :meth:`DmaBuf.unmap`
(``dma_buf_map_attachment``), :meth:`DmaBuf.pin` / :meth:`DmaBuf.unpin`
(``dma_buf_pin``), :meth:`DmaBuf.move` (an exporter-side ``ttm_bo_validate``) and the
exporter's move callback, which calls every dynamic importer's ``move_notify`` before the
backing changes.  Static mappings of a dynamic exporter pin; i915/GEM-helper exporters
pin at attach.  Attach takes the importer's :class:`~gpuvm.drm.caps.DeviceCaps`: the exporter
refuses what its rules refuse, a ``NO_MOVE`` attach that would migrate fails ``-EINVAL``,
and a late attacher that cannot use an immovable backing fails ``-EBUSY``.  Deferred
allocation: a backing not yet resident is placed at the first map from
:func:`~gpuvm.drm.caps.choose_backing` over every attachment.  Every call validates first, so
a refused one changes nothing.  The other seams are :attr:`DmaBuf.release_hooks` (the
exporter's ``release`` op) and :attr:`DmaBuf.attach_hooks` / :attr:`DmaBuf.detach_hooks`.

Reference edges (``drivers/dma-buf/dma-buf.c``, ``drivers/gpu/drm/drm_prime.c``), each
recorded with its holder:

1. an open fd -> DmaBuf (``Holder("fd N", who=table)``);
2. DmaBuf -> exporter buffer (holder: the DmaBuf), dropped at release;
3. exporter ``obj.dma_buf`` -> DmaBuf (``Holder("obj.dma_buf", who=buffer)``), dropped when
   the buffer's last handle closes: edges 2 and 3 form the deliberate cycle;
4. imported buffer -> DmaBuf (holder: the imported buffer), dropped at its free;
5. imported ``obj.dma_buf`` -> DmaBuf (same holder kind as 3);
6. a file's PRIME cache entry -> DmaBuf (``Holder("prime cache", who=file)``).

The package has one module per concept: :mod:`~gpuvm.drm.dmabuf.attachment` (importer
ops, the exporter's placement side, attachments and their events),
:mod:`~gpuvm.drm.dmabuf.buffer` (:class:`DmaBuf`), :mod:`~gpuvm.drm.dmabuf.importer` (the
importer's ``move_notify`` and revalidation) and :mod:`~gpuvm.drm.dmabuf.fds` (fd tables).
Every public name is importable from ``gpuvm.drm.dmabuf``.
"""

from gpuvm.drm.dmabuf.attachment import (
    AccessAnswer,
    AccessPath,
    Attachment,
    AttachmentMapped,
    AttachmentUnmapped,
    AttachView,
    Exporter,
    ImporterOps,
    MoveNotified,
)
from gpuvm.drm.dmabuf.buffer import DmaBuf, dma_buf_holder
from gpuvm.drm.dmabuf.fds import FdTable, fd_holder
from gpuvm.drm.dmabuf.importer import evict_importer_vms, revalidate_import

__all__ = [
    "AccessAnswer",
    "AccessPath",
    "AttachView",
    "Attachment",
    "AttachmentMapped",
    "AttachmentUnmapped",
    "DmaBuf",
    "Exporter",
    "FdTable",
    "ImporterOps",
    "MoveNotified",
    "dma_buf_holder",
    "evict_importer_vms",
    "fd_holder",
    "revalidate_import",
]
