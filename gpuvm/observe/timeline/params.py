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
    "serial_worker": (
        "One commit worker per CRTC (tails run in order, like an ordered workqueue); False: "
        "the kernel's system_unbound_wq, where a tail only waits for its predecessor's "
        "hw_done / flip_done (drm_atomic_helper_wait_for_dependencies)."
    ),
}
"""Each assumption's source (kernel files read at torvalds/linux 2d705c0b3676)."""


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
    render job waits for (0: none)."""

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

    def __attrs_post_init__(self) -> None:
        _check("refresh rate", self.refresh_hz, positive=True)
        for name in ("render_ms", "repaint_window_ms", "ioctl_ms", "prepare_ms", "tail_ms"):
            _check(name.replace("_ms", " time (ms)"), getattr(self, name))
        _check("vm_bind time (ms)", self.vm_bind_ms)
        for name, low in (("layers", 1), ("frames", 1), ("crtcs", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise TimelineError(f"{name} must be an integer >= {low}, got {v!r}")

    @property
    def period_ms(self) -> float:
        return 1000.0 / self.refresh_hz
