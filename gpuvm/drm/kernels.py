"""Kernel-version profiles: the behaviours of the driver layer that changed between kernels.

A :class:`~gpuvm.drm.device.Device` runs under one profile (``Device(kernel="6.17")``); the
driver layer asks the profile, never a version number, whether a behaviour applies.  Four
profiles are built in:

* ``"msm-pre-6.17"``: msm before the VM_BIND series (no ``MSM_PARAM_EN_VM_BIND``;
  ``msm_gem_purge`` frees the VMAs and their iovas with ``put_iova_vmas``).
* ``"msm-pre-vma-ref"``: the VM_BIND series up to 3bebfd53af0f^ (the drm_gpuvm conversion
  without ``vma_ref``: ``msm_gem_unpin_iova`` detaches the VM at every unpin); the default of
  the ``gpuvm_eager`` policy, which models those commits.
* ``"6.17"``: the VM_BIND series (``vma_ref``; purge keeps the VMAs; ``lookup_op`` checks
  alignment but not ``obj_offset + range`` against the buffer's size).
* ``"mainline"``: the newest tree read for this model: as 6.17, plus the VM_BIND size check
  in ``vm_bind_job_lookup_ops`` and the GPUVM core API of ``drm_gpuvm_bo_obtain_locked``.

The default is ``"mainline"``, except for the ``legacy_pre_6_17`` policy, which models the
msm driver before 6.17 and so defaults to ``"msm-pre-6.17"``, and ``gpuvm_eager``, which
defaults to ``"msm-pre-vma-ref"`` (see ``docs/kernel-versions.md``).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

__all__ = ["DEFAULT_KERNEL", "KERNELS", "KernelProfile", "kernel_profile"]


@attrs.frozen(slots=True)
class KernelProfile:
    """One kernel version's behaviours (each flag names the kernel function it follows)."""

    name: str
    msm_vm_bind: bool
    """msm has ``MSM_PARAM_EN_VM_BIND`` and ``VM_BIND`` (the 6.17 series)."""
    purge_frees_vmas: bool
    """``msm_gem_purge`` ends with ``put_iova_vmas``: the VMAs and their iovas are freed
    (before "Don't close VMAs on purge" in the 6.17 series)."""
    bind_checks_bo_range: bool
    """``vm_bind_job_lookup_ops`` refuses ``obj_offset + range`` past the buffer's size
    (``-EINVAL``); not in 6.17's ``lookup_op``."""
    bo_obtain_locked: bool
    """The GPUVM core API of the newest tree: ``drm_gpuvm_bo_obtain_locked`` (warns in
    immediate mode) and a ``drm_gpuvm_bo_obtain_prealloc`` that requires immediate mode and
    takes the buffer's gpuva lock itself."""
    summary: str = ""
    dmabuf_move_notify: bool = False
    """``CONFIG_DMABUF_MOVE_NOTIFY`` (``drivers/dma-buf/Kconfig``: ``default n`` in every
    tree read, hence False in every built-in profile).  Off: ``dma_buf_pin_on_map`` pins
    dynamic importers too, and ``amdgpu_dma_buf_pin`` / ``xe_dma_buf_pin`` never pin in VRAM.
    ``Device(dmabuf_move_notify=...)`` overrides it per device."""
    unpin_detaches_vm: bool = False
    """``msm_gem_unpin_iova`` before 3bebfd53af0f ("drm/msm: Defer VMA unmap for fb unpins"):
    after the unpin, ``detach_vm`` unmaps and closes the buffer's VMA in that VM
    unconditionally, even while another framebuffer still pins it for scanout."""


KERNELS: Mapping[str, KernelProfile] = {
    p.name: p
    for p in (
        KernelProfile(
            "msm-pre-6.17",
            msm_vm_bind=False,
            purge_frees_vmas=True,
            bind_checks_bo_range=False,
            bo_obtain_locked=False,
            summary="msm before the VM_BIND series",
        ),
        KernelProfile(
            "msm-pre-vma-ref",
            msm_vm_bind=True,
            purge_frees_vmas=False,
            bind_checks_bo_range=False,
            bo_obtain_locked=False,
            summary="the msm VM_BIND series before 3bebfd53af0f (eager unpin, no vma_ref)",
            unpin_detaches_vm=True,
        ),
        KernelProfile(
            "6.17",
            msm_vm_bind=True,
            purge_frees_vmas=False,
            bind_checks_bo_range=False,
            bo_obtain_locked=False,
            summary="the msm VM_BIND series (vma_ref)",
        ),
        KernelProfile(
            "mainline",
            msm_vm_bind=True,
            purge_frees_vmas=False,
            bind_checks_bo_range=True,
            bo_obtain_locked=True,
            summary="the newest tree read (VM_BIND size check, drm_gpuvm_bo_obtain_locked)",
        ),
    )
}
"""The built-in profiles by name."""

DEFAULT_KERNEL = "mainline"


def kernel_profile(kernel: str | KernelProfile) -> KernelProfile:
    """A profile from a name or a profile (``ValueError`` for an unknown name)."""
    if isinstance(kernel, KernelProfile):
        return kernel
    try:
        return KERNELS[kernel]
    except KeyError:
        raise ValueError(f"unknown kernel {kernel!r}; known: {', '.join(KERNELS)}") from None
