"""VM-private buffers of msm (``MSM_BO_NO_SHARE``, commit b58e12a66e47 "drm/msm: Add
_NO_SHARE flag", the 6.17 VM_BIND series).

``msm_gem_new_handle`` with ``MSM_BO_NO_SHARE`` points the new buffer's reservation at the
file's VM (``obj->resv = drm_gpuvm_resv_obj(vm)->resv``, taking a reference on that
resv object, dropped in ``msm_gem_free_object``), so GPUVM never counts it as an external
object of that VM.  Such a buffer:

* cannot be exported: ``msm_gem_prime_export`` is ``-EPERM`` (checked in
  :func:`gpuvm.drm.prime.handle_to_fd` for every VM-private buffer: xe
  ``xe_gem_prime_export`` and amdgpu ``amdgpu_gem_prime_export`` for ``VM_ALWAYS_VALID``
  buffers refuse the same way);
* cannot be pinned by the kernel: ``get_and_pin_iova_range_locked`` is ``-EINVAL``, so a
  legacy SUBMIT naming it and a scanout of it (``msm_framebuffer_prepare``) fail;
* needs per-process page tables: on the shared GPU VM the flag is ``-EINVAL`` ("not
  supported with shared VM", a 2026 fix; the original dereferenced a missing VM);
* does not exist before the 6.17 series (``MSM_BO_FLAGS`` lacks it: ``-EINVAL``).

The xe form (``DRM_XE_GEM_CREATE.vm_id``) is :func:`gpuvm.drm.xe.gem_create`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuvm.core.args import check_instance
from gpuvm.core.errors import InvalidValue
from gpuvm.core.gem import GemObject
from gpuvm.core.refs import Holder
from gpuvm.core.u64 import check_u64
from gpuvm.core.vm import GpuVm
from gpuvm.drm.driver import Bo

if TYPE_CHECKING:
    from gpuvm.drm.file import DrmFile

__all__ = ["check_pinnable", "msm_gem_new_no_share"]


def _resv_holder(bo: Bo) -> Holder:
    return Holder("NO_SHARE resv", who=bo)


def msm_gem_new_no_share(file: DrmFile, size: int, name: str = "") -> int:
    """``GEM_NEW`` with ``MSM_BO_NO_SHARE``: a buffer sharing the file's VM reservation
    (the VM is created if needed, as ``msm_context_vm`` does); returns its handle."""
    file._ioctl("GEM_NEW")
    check_u64("size", size)
    check_instance("name", name, str)
    device = file.device
    if device.flavour.name != "msm":
        raise InvalidValue(f"MSM_BO_NO_SHARE is an msm flag, not {device.flavour.name}")
    if not device.kernel.msm_vm_bind:
        raise InvalidValue(f"kernel {device.kernel.name}: MSM_BO_FLAGS has no NO_SHARE")
    if size == 0:
        raise InvalidValue("GEM_NEW with size 0")
    if not device.per_process_pgtables:
        raise InvalidValue("MSM_BO_NO_SHARE: not supported with shared VM")
    rule = file._gate("get_param")  # msm_context_vm: the VM the flag needs
    vm = file._vm_for(rule)
    if not isinstance(vm, GpuVm):
        raise InvalidValue(f"MSM_BO_NO_SHARE needs a GPUVM context VM, not {vm!r}")
    file._enter(rule, vm)
    bo = device.new_bo(size, name, resv=vm.resv)
    bo.private_vm = vm
    vm.r_obj.get(_resv_holder(bo))
    bo.free_hooks.append(_put_resv_obj)
    h = file._new_handle(bo)
    bo.put()
    return h


def _put_resv_obj(obj: GemObject) -> None:
    """``msm_gem_free_object``: drop the reference on the shared resv object."""
    assert isinstance(obj, Bo) and obj.private_vm is not None
    vm = obj.private_vm
    obj.private_vm = None
    vm.r_obj.put(_resv_holder(obj))


def check_pinnable(bo: Bo, where: str) -> None:
    """``get_and_pin_iova_range_locked``: an msm ``NO_SHARE`` buffer is never pinned by the
    kernel (``-EINVAL``)."""
    if bo.private_vm is None:
        return
    flavour = getattr(bo.device, "flavour", None)
    if getattr(flavour, "name", None) == "msm":
        raise InvalidValue(f"{where}: {bo!r} is MSM_BO_NO_SHARE (cannot be pinned)")
