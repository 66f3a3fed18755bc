"""Op-list creation and the callback walks of a :class:`GpuVm` (split and merge).

Models ``drm_gpuvm_sm_map_ops_create`` and ``drm_gpuvm_madvise_ops_create`` (one body,
``__drm_gpuvm_sm_map_ops_create``), ``drm_gpuvm_sm_unmap_ops_create``,
``drm_gpuvm_prefetch_ops_create``, ``drm_gpuvm_bo_unmap_ops_create`` and the callback forms
``drm_gpuvm_sm_map`` / ``drm_gpuvm_sm_unmap`` of ``drivers/gpu/drm/drm_gpuvm.c``.  The ops
themselves come from :mod:`gpuvm.core.splitmerge`; here requests are validated and lists
stamped with the VM's generation.  These are the bodies of the ``GpuVm`` methods of the
same names (see :mod:`gpuvm.core.vm`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gpuvm.core.errors import InvalidValue, LinkError
from gpuvm.core.ops import MapRequest, Op, OpList, UnmapOp
from gpuvm.core.splitmerge import (
    madvise_list,
    prefetch_steps,
    sm_map_list,
    sm_map_steps,
    sm_unmap_list,
    sm_unmap_steps,
)
from gpuvm.core.u64 import check_u64
from gpuvm.core.vmbo import VmBo

if TYPE_CHECKING:
    from gpuvm.core.vm import GpuVm


_ISSUED_MAX = 64
"""Op lists remembered per generation as built by this VM (see :func:`_issue`)."""

Step = Callable[[Op], int | None]
"""A ``drm_gpuvm_ops`` step callback: 0 / None to go on, non-zero to stop."""


def _check_map_request(vm: GpuVm, req: MapRequest) -> None:
    if not isinstance(req, MapRequest):
        raise InvalidValue(f"not a map request: {req!r}")
    vm._check_target("sm_map", req.addr, req.range, req.obj, req.offset)


def _issue(vm: GpuVm, ops: tuple[Op, ...]) -> OpList:
    """Stamp ``ops`` with the current generation and remember the list as built here,
    so :meth:`apply` can skip re-deriving what the generator guarantees (every named
    VA inserted here, pieces inside their VA, new ranges free) while the VA space is
    unchanged."""
    gen = vm.generation
    if vm._issued_gen != gen or len(vm._issued) >= _ISSUED_MAX:
        vm._issued.clear()
        vm._issued_gen = gen
    out = OpList(vm, gen, ops)
    vm._issued[id(out)] = out
    return out


def sm_map_ops(vm: GpuVm, req: MapRequest) -> OpList:
    """``drm_gpuvm_sm_map_ops_create``: the ops that map ``req`` over the current
    layout (the tree is untouched)."""
    return vm._map_ops_create(req, madvise=False)


def madvise_ops(vm: GpuVm, req: MapRequest) -> OpList:
    """``drm_gpuvm_madvise_ops_create``: the ops that split the object-less VAs at the
    edges of ``req``, so a driver can give ``[req.addr, req.addr+req.range)`` new
    attributes: VAs with an object are left alone, nothing is unmapped, at most two
    REMAPs and two MAPs (see :func:`gpuvm.core.splitmerge.madvise_list`); often empty.  The
    request is validated as for :meth:`sm_map_ops`; the tree is untouched."""
    return vm._map_ops_create(req, madvise=True)


def _map_ops_create(vm: GpuVm, req: MapRequest, *, madvise: bool) -> OpList:
    """``__drm_gpuvm_sm_map_ops_create``: the body both entry points share (validate
    the request, refuse in a fence-signalling section, walk, stamp the list)."""
    what = "drm_gpuvm_madvise_ops_create" if madvise else "drm_gpuvm_sm_map_ops_create"
    if vm.freed:
        vm.check_alive(what)
    vm._check_map_request(req)
    if vm.fence_depth:
        vm._no_fence(what)
    return vm._issue((madvise_list if madvise else sm_map_list)(vm.index, req))


def sm_unmap_ops(vm: GpuVm, addr: int, range: int) -> OpList:
    """``drm_gpuvm_sm_unmap_ops_create``: the ops that empty ``[addr, addr+range)``."""
    if vm.freed:
        vm.check_alive("sm_unmap")
    vm._check_range("sm_unmap", addr, range)
    if vm.fence_depth:
        vm._no_fence("drm_gpuvm_sm_unmap_ops_create")
    return vm._issue(sm_unmap_list(vm.index, addr, range))


def prefetch_ops(vm: GpuVm, addr: int, range: int) -> OpList:
    """``drm_gpuvm_prefetch_ops_create``: one PREFETCH per VA in the range walk (no range
    validation, kernel node included, as in the kernel)."""
    check_u64("addr", addr)
    check_u64("range", range)
    vm._no_fence("drm_gpuvm_prefetch_ops_create")
    return OpList(vm, vm.generation, tuple(prefetch_steps(vm.index, addr, range)))


def bo_unmap_ops(vm: GpuVm, vm_bo: VmBo) -> OpList:
    """``drm_gpuvm_bo_unmap_ops_create``: one UNMAP per VA linked to ``vm_bo``."""
    vm_bo.check_alive("bo_unmap_ops")
    if vm_bo.vm is not vm:
        raise LinkError(f"{vm_bo!r} belongs to another VM")
    vm._no_fence("drm_gpuvm_bo_unmap_ops_create")
    vm.need_gem_lock(vm_bo.obj, "drm_gpuvm_bo_unmap_ops_create")
    return OpList(vm, vm.generation, tuple(UnmapOp(va, False) for va in vm_bo.vas))


def sm_map(vm: GpuVm, req: MapRequest, step: Step) -> int:
    """``drm_gpuvm_sm_map``: hand each op to ``step`` as it is generated; ``step`` may
    change the tree (the walk is the safe variant).  Returns 0 or the first non-zero
    value ``step`` returned; earlier steps are not rolled back, as in the kernel."""
    vm.check_alive("sm_map")
    vm._check_map_request(req)
    for op in sm_map_steps(vm.index, req):
        ret = step(op)
        if ret:
            return ret
    return 0


def sm_unmap(vm: GpuVm, addr: int, range: int, step: Step) -> int:
    """``drm_gpuvm_sm_unmap`` with a step callback; see :meth:`sm_map`."""
    vm.check_alive("sm_unmap")
    vm._check_range("sm_unmap", addr, range)
    for op in sm_unmap_steps(vm.index, addr, range):
        ret = step(op)
        if ret:
            return ret
    return 0
