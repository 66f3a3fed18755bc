"""The lifetime of a :class:`GpuVm`: references, the final free, close and teardown.

Models ``drm_gpuvm_get`` / ``drm_gpuvm_put`` and what the last put runs
(``drm_gpuvm_free``: ``drm_gpuvm_fini``, with its WARNs on VAs and listed VmBos left, then
the driver's ``vm_free``) of ``drivers/gpu/drm/drm_gpuvm.c``, plus a driver's VM close
(unmap everything, drop the owner's reference) and a teardown that names what would leak.
These are the bodies of the ``GpuVm`` methods of the same names (see :mod:`gpuvm.core.vm`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuvm.core.errors import LeakError
from gpuvm.core.events import Freed
from gpuvm.core.ops import OpList, UnmapOp
from gpuvm.core.refcount import OWNER
from gpuvm.core.va import Va
from gpuvm.core.vmbo import VmBo

if TYPE_CHECKING:
    from gpuvm.core.vm import GpuVm


def get(vm: GpuVm, holder: object = OWNER) -> GpuVm:
    """``drm_gpuvm_get``."""
    vm.check_alive("get")
    vm.refs.acquire(holder, vm.bus)
    return vm


def put(vm: GpuVm, holder: object = OWNER) -> None:
    """``drm_gpuvm_put``; at zero the VM is torn down and ``vm_free`` called."""
    if vm.freed:
        vm.check_alive("put")
    vm.refs.release(holder, vm.bus)


def _fini(vm: GpuVm) -> None:
    """What the last put runs (``drm_gpuvm_free``): ``drm_gpuvm_fini``'s checks, recorded
    as WARNs, then the driver's ``vm_free``."""
    if vm.kernel_node is not None:
        vm.index.discard(vm.kernel_node)
        vm.kernel_node.inserted = False
    if len(vm.index) or vm.extobj or vm.evict:
        vm._warn(f"{vm.name} freed with VAs or listed VmBos left (possible leak)")
    if vm.bo_defer:
        vm._warn(f"{vm.name} freed with VmBos on its deferred cleanup list")
    vm.freed = True
    vm.r_obj.put(vm)
    if vm.vm_free is not None:
        vm.vm_free(vm)
    else:
        vm._warn(f"{vm.name} has no vm_free callback: its memory leaks")
    vm.bus.emit(Freed(vm))


def leaks(vm: GpuVm) -> list[str]:
    """What keeps this VM alive besides its owner: one line per VA and VmBo."""
    out = [f"{va!r} still inserted" for va in vm.vas]
    out += [
        f"{vb!r} on the deferred list, never cleaned up (bo_deferred_cleanup)"
        if vb.zombie
        else f"{vb!r} still alive (kref {vb.kref})"
        for vb in vm.vm_bos
    ]
    for h, n in vm.refs.holders.items():
        if isinstance(h, Va | VmBo):
            continue
        n -= h == OWNER  # the owner's own reference is the one being dropped
        if n > 0:
            out.append(f"held by {h!r}" + (f" x{n}" if n > 1 else ""))
    return out


def close(vm: GpuVm) -> None:
    """A driver's VM close: unmap and unlink every VA, then drop the owner reference
    (``msm_gem_vm_close``-style).  The VM is freed unless something else still holds
    it (a VmBo reference held by a caller, another owner)."""
    vm.check_alive("close")
    vm._no_fence("VM close")
    vm.refs.check_put(OWNER)
    ops = OpList(vm, vm.generation, tuple(UnmapOp(va) for va in vm.vas))
    vm.apply(ops)
    vm.put(OWNER)


def teardown(vm: GpuVm, *, strict: bool = True) -> list[str]:
    """Drop the owner reference, reporting whatever would keep the VM alive.  With
    ``strict`` a VM that would not be freed raises :class:`LeakError` naming each VA and
    VmBo left, and nothing changes; otherwise the put happens and the leaks are
    returned."""
    vm.check_alive("teardown")
    vm._no_fence("VM teardown")
    vm.refs.check_put(OWNER)
    would_leak = vm.refs.total > 1
    report = vm.leaks() if would_leak else []
    if would_leak and strict:
        raise LeakError(f"teardown of {vm.name} leaks: " + "; ".join(report))
    vm.put(OWNER)
    return report
