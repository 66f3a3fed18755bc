"""The importer side of dynamic sharing: what an importing driver's ``move_notify``
does to its GPU VMs (``amdgpu_dma_buf_move_notify``, ``xe_dma_buf_move_notify``: evict
every VmBo of the buffer) and the revalidation that re-maps the attachment afterwards
(the driver's ``vm_bo_validate`` over ``dma_buf_map_attachment``).
"""

from __future__ import annotations

from gpuvm.core.events import Mapped, TlbInvalidated, Unmapped
from gpuvm.core.gem import GemObject
from gpuvm.drm.dmabuf.attachment import Attachment

__all__ = ["evict_importer_vms", "revalidate_import"]

# --- importer side: a GPU VM over imported buffers ----------------------------------------


def evict_importer_vms(att: Attachment) -> None:
    """An importer's ``move_notify`` (``amdgpu_dma_buf_move_notify`` /
    ``xe_dma_buf_move_notify``): its buffer's mappings in every GPU VM are invalid, so
    each VmBo is evicted (GPUVM's evict list) after clearing its page-table entries
    (``Unmapped`` + ``TlbInvalidated`` per VA).  The next ``vm.validate`` re-maps."""
    bo = att.bo
    if not isinstance(bo, GemObject) or bo.freed:
        return
    for vm_bo in list(bo.vm_bos):
        if vm_bo.evicted or vm_bo.freed:
            continue
        vm = vm_bo.vm
        if vm.bus.route[Unmapped] or vm.bus.route[TlbInvalidated]:
            for va in vm_bo.vas:
                vm.bus.emit(Unmapped(vm, va.addr, va.range))
                vm.bus.emit(TlbInvalidated(vm, va.addr, va.range))
        vm_bo.evict(True)


def revalidate_import(vm_bo: object) -> int:
    """``vm_bo_validate`` for a VM holding imported buffers: re-map the dma-buf
    attachment (the exporter may move the buffer back within reach), rewrite the VAs'
    page-table entries (``Mapped``), and clear the eviction."""
    from gpuvm.core.vmbo import VmBo

    assert isinstance(vm_bo, VmBo)
    obj = vm_bo.obj
    att = getattr(obj, "import_attach", None)
    if isinstance(att, Attachment) and not att.detached:
        att.dmabuf.remap(att)
    vm = vm_bo.vm
    if vm.bus.route[Mapped]:
        for va in vm_bo.vas:
            vm.bus.emit(Mapped(vm, va.addr, va.range, va.obj, va.offset))
    vm_bo.evict(False)
    return 0
