"""Atomic commits carrying several planes in one ioctl (``DRM_IOCTL_MODE_ATOMIC`` through
``drm_atomic_helper_commit``).

The kernel's order, as in ``drivers/gpu/drm/drm_atomic_helper.c``
(``drm_atomic_helper_commit`` -> ``drm_atomic_helper_prepare_planes`` -> swap ->
``drm_atomic_helper_cleanup_planes``):

1. every new plane state is checked before anything happens (unknown plane or framebuffer:
   the commit is refused and nothing changes);
2. ``prepare_fb`` runs for each new plane state in plane-index order
   (``for_each_new_plane_in_state`` walks ``state->planes[]`` by ``drm_plane_index``).  If
   the prepare of plane ``k`` fails, ``cleanup_fb`` runs on the new states of the planes
   before it (the ``j < i`` unwind of ``drm_atomic_helper_prepare_planes``), nothing is
   swapped and the error is returned: the planes keep showing what they showed;
3. all planes swap to their new state at once (one flip);
4. ``cleanup_fb`` runs on every old plane state (``drm_atomic_helper_cleanup_planes``).

Prepares are counted per framebuffer as in :func:`gpuvm.drm.kms.commit` (msm "Refcount
framebuffer pins"), so a framebuffer that stays on a plane, or moves from one plane to
another in the same commit, is never unpinned in between.  A commit that sets the same
plane twice keeps the last value (an atomic state has one state per plane).
"""

from __future__ import annotations

import errno as E
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gpuvm.core.args import check_instance, check_int, check_optional, check_sequence
from gpuvm.core.errors import ArgumentTypeError, GpuvmError, InjectedFault, InvalidValue
from gpuvm.drm.kms import Framebuffer, Plane, prepare_fb

if TYPE_CHECKING:
    from gpuvm.drm.device import Device

__all__ = ["PlaneUpdate", "atomic_commit"]

PlaneUpdate = tuple[Plane, Framebuffer | None]
"""One plane of an atomic commit and the framebuffer it should show (None disables it)."""


def _check_updates(device: Device, updates: object) -> list[PlaneUpdate]:
    """The commit's plane states in plane-index order, the last value per plane kept;
    refuses (changing nothing) an unknown plane or an unusable framebuffer."""
    items = check_sequence("updates", updates, 32)
    if not items:
        raise InvalidValue("atomic commit with no plane")
    states: dict[Plane, Framebuffer | None] = {}
    for item in items:
        if not isinstance(item, tuple) or len(item) != 2:
            raise ArgumentTypeError(f"not a (plane, fb) pair: {item!r}")
        plane, fb = item
        check_instance("plane", plane, Plane)
        check_optional("fb", fb, Framebuffer)
        assert isinstance(plane, Plane)
        assert fb is None or isinstance(fb, Framebuffer)
        if plane.device is not device:
            raise InvalidValue(f"{plane!r} is not a plane of {device.name}")
        if fb is not None and (fb.freed or fb.device is not device):
            raise InvalidValue(f"{fb!r} cannot be shown on {device.name}")
        states[plane] = fb
    return sorted(states.items(), key=lambda s: s[0].index)


def _cleanup_fb(device: Device, plane: Plane, fb: Framebuffer | None) -> None:
    """``cleanup_fb`` of one plane state: the last cleanup of a framebuffer unpins it."""
    if fb is None:
        return
    fb.prepare_count -= 1
    if fb.prepare_count == 0:
        device.policy.on_fb_cleanup(fb)
    fb.put(plane.holder)


def atomic_commit(
    device: Device,
    updates: Sequence[PlaneUpdate],
    *,
    fail_prepare_at: int | None = None,
    errno: int = E.ENOMEM,
) -> None:
    """One atomic commit of several planes (see the module docstring for the order).

    ``fail_prepare_at=k`` injects a failure into the ``prepare_fb`` of the ``k``-th plane
    state (in plane-index order): the ``k`` states before it are cleaned up and
    :class:`~gpuvm.core.errors.InjectedFault` (``errno``) is raised with no flip.  A real
    prepare failure (a purged buffer, no iova) unwinds the same way and raises its own
    error.  Validation failures raise before any prepare."""
    states = _check_updates(device, updates)
    if fail_prepare_at is not None:
        check_int("fail_prepare_at", fail_prepare_at, 0, len(states) - 1)
    check_int("errno", errno, 1, 4095)
    done = 0
    try:
        for i, (plane, fb) in enumerate(states):
            if i == fail_prepare_at:
                raise InjectedFault(
                    f"prepare_fb of {plane!r} (plane state {i}) failed (injected)", errno=errno
                )
            prepare_fb(device, plane, fb)  # the one-plane prepare of gpuvm.drm.kms
            done = i + 1
    except GpuvmError:
        for plane, fb in states[:done]:
            _cleanup_fb(device, plane, fb)
        raise
    old = [(plane, plane.fb) for plane, _ in states]
    for plane, fb in states:
        plane.fb = fb
    for plane, prev in old:
        _cleanup_fb(device, plane, prev)
