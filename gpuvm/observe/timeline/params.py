"""Parameters of the vblank timeline: the display, the compositor's repaint loop, the GPU and
the per-commit costs (milliseconds) that the cost presets priced from the model's counts.

Every assumption is a field with a default and a source in :data:`ASSUMPTIONS`.  The model
stays clock-free: time exists only here, in the observer layer."""

from __future__ import annotations

import errno as _errno
import math
from typing import Final

import attrs

from gpuvm.core.errors import GpuvmError

__all__ = ["ASSUMPTIONS", "TimelineError", "TimelineParams"]


class TimelineError(GpuvmError):
    """A timeline parameter out of range (refresh 0, a negative time, ...): EINVAL."""

    errno = _errno.EINVAL


ASSUMPTIONS: Final = {
    "repaint_window_ms": (
        "Weston's default repaint window: DEFAULT_REPAINT_WINDOW 7 ms in libweston/compositor.c "
        "(weston.ini [core] repaint-window); the compositor starts a repaint that long before "
        "the predicted next vblank, i.e. at last flip + period - window."
    ),
    "render_ms": (
        "Estimate (E): GPU time to compose one frame; a parameter, no public figure fits all."
    ),
    "nonblocking": (
        "Compositors (Weston, wlroots) use DRM_MODE_ATOMIC_NONBLOCK with a page-flip event; "
        "a blocking commit runs commit_tail in the ioctl (drm_atomic_helper_commit)."
    ),
    "close_waits": (
        "msm_gem_close (drivers/gpu/drm/msm/msm_gem.c, 6.17 on): once the file's context VM "
        "exists and is not a VM_BIND VM, handle close waits on every fence of the buffer "
        "(dma_resv_wait_timeout, DMA_RESV_USAGE_BOOKKEEP, no timeout). The compositor "
        "renders with the GPU, so its context VM exists; a VM_BIND context (vm_bind_ms > 0) "
        "returns before the wait. KMS adds no fence to the buffer's reservation "
        "(drm_gem_plane_helper_prepare_fb only reads it into the plane state), so the "
        "fence waited for is the GPU job that wrote the buffer."
    ),
    "serial_worker": (
        "One commit worker per CRTC (tails run in order, like an ordered workqueue); False: "
        "the kernel's system_unbound_wq, where a tail only waits for its predecessor's "
        "hw_done / flip_done (drm_atomic_helper_wait_for_dependencies)."
    ),
}
"""Each assumption's source (atomic helper files read at torvalds/linux 2d705c0b3676;
``msm_gem_close`` in its 6.17 form, from the msm VM_BIND series)."""


def _check(name: str, value: float, *, positive: bool = False) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise TimelineError(f"{name} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise TimelineError(f"{name} must be > 0, got {value!r}")
    if value < 0:
        raise TimelineError(f"{name} must be >= 0, got {value!r}")


@attrs.frozen(slots=True, kw_only=True)
class TimelineParams:
    """One timeline setting.  Costs are per plane per commit: ``prepare_ms`` runs in the
    ioctl (``drm_atomic_helper_prepare_planes`` -> ``prepare_fb``: pin and map), ``tail_ms``
    in the commit tail after the flip (``drm_atomic_helper_cleanup_planes`` ->
    ``cleanup_fb``: unpin, an eager policy's unmap and TLB invalidation).  ``ioctl_ms`` is
    the rest of the ioctl path per commit, ``vm_bind_ms`` a VM_BIND job per frame that the
    render job waits for (0: none).  ``gem_closes`` is the GEM_CLOSE ioctls per commit on
    handles of the buffers it flips (a compositor that imports, adds the framebuffer and
    closes the handle every frame); with ``close_waits`` (the policy waits in
    ``msm_gem_close``) and no VM_BIND, the first of them blocks the ioctl path until the
    frame's render fence signals."""

    refresh_hz: float = 60.0
    layers: int = 1
    frames: int = 120
    crtcs: int = 1
    render_ms: float = 3.0
    repaint_window_ms: float = 7.0
    nonblocking: bool = True
    serial_worker: bool = True
    ioctl_ms: float = 0.0
    prepare_ms: float = 0.0
    tail_ms: float = 0.0
    vm_bind_ms: float = 0.0
    gem_closes: int = 0
    close_waits: bool = True

    def __attrs_post_init__(self) -> None:
        _check("refresh rate", self.refresh_hz, positive=True)
        for name in ("render_ms", "repaint_window_ms", "ioctl_ms", "prepare_ms", "tail_ms"):
            _check(name.replace("_ms", " time (ms)"), getattr(self, name))
        _check("vm_bind time (ms)", self.vm_bind_ms)
        for name, low in (("layers", 1), ("frames", 1), ("crtcs", 1), ("gem_closes", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise TimelineError(f"{name} must be an integer >= {low}, got {v!r}")

        if not isinstance(self.close_waits, bool):
            raise TimelineError(f"close_waits must be a bool, got {self.close_waits!r}")

    @property
    def period_ms(self) -> float:
        return 1000.0 / self.refresh_hz

    @property
    def close_blocks(self) -> bool:
        """Whether a GEM_CLOSE in the ioctl path waits for the buffer's fences: the policy
        waits (``close_waits``), the workload closes handles, the context is not VM_BIND."""
        return self.close_waits and self.gem_closes > 0 and self.vm_bind_ms == 0
