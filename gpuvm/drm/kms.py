"""KMS: framebuffers, planes and atomic page flips (``drm_framebuffer``, ``drm_plane``,
the atomic helpers' ``prepare_fb`` / ``cleanup_fb``).

A :class:`Framebuffer` holds one reference on each buffer it scans out (one per colour
plane, ``drm_gem_fb_create``) and is itself counted: the file that created it holds one
until ``RMFB`` / ``CLOSEFB`` or file close, and each plane showing it holds one.  Its
prepares are counted per framebuffer (msm "Refcount framebuffer pins"): only the first
prepare calls the policy's ``on_fb_prepare`` (pin, and map if needed, in the device's
display VM) and only the last cleanup calls ``on_fb_cleanup``, so a framebuffer shown on two
planes is not unmapped while one still shows it.

:func:`commit` is an atomic commit of one plane: validate, prepare the new framebuffer,
swap, clean up the old one.  ``RMFB`` of a framebuffer still shown disables those planes
first (``drm_framebuffer_remove``); ``CLOSEFB`` leaves them showing it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import attrs

from gpuvm.core.args import check_handle, check_instance, check_optional, check_sequence
from gpuvm.core.errors import BadHandle, Busy, InvalidValue, UseAfterFree
from gpuvm.core.events import Freed
from gpuvm.core.refs import Holder, RefCount
from gpuvm.drm.driver import Bo
from gpuvm.drm.private import check_pinnable

if TYPE_CHECKING:
    from gpuvm.drm.device import Device
    from gpuvm.drm.file import DrmFile

__all__ = ["Framebuffer", "Plane", "add_fb", "commit", "prepare_fb", "rm_fb"]

_ids = itertools.count(1)


@attrs.define(slots=True, eq=False, repr=False)
class Plane:
    """A display plane; ``fb`` is the framebuffer its current state shows."""

    device: Device
    index: int
    fb: Framebuffer | None = None
    holder: Holder = attrs.field(init=False)
    """The holder of the plane state's framebuffer reference."""

    def __attrs_post_init__(self) -> None:
        self.holder = Holder("plane state", who=self)

    def keepers(self) -> Iterable[object]:
        """A plane belongs to its device: a root."""
        return ()

    def __repr__(self) -> str:
        return f"plane{self.index}({self.device.name})"


@attrs.define(slots=True, eq=False, repr=False)
class Framebuffer:
    """``struct drm_framebuffer`` over ``bos`` (one per colour plane; a buffer may appear
    more than once).  ``prepare_count`` is the per-framebuffer pin count."""

    device: Device
    bos: tuple[Bo, ...]
    file: DrmFile | None
    id: int = attrs.field(factory=lambda: next(_ids))
    refs: RefCount = attrs.field(init=False)
    prepare_count: int = attrs.field(default=0, init=False)
    freed: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        self.refs = RefCount(self, on_zero=self._destroy)

    def __repr__(self) -> str:
        names = "+".join(b.name for b in self.bos)
        return f"FB{self.id}({names})" + (" (freed)" if self.freed else "")

    def keepers(self) -> Iterable[object]:
        return list(self.refs.holders)

    def _destroy(self) -> None:
        """``drm_gem_fb_destroy``: drop each buffer reference."""
        if self.prepare_count:
            raise AssertionError(f"{self!r} destroyed while prepared")
        self.freed = True
        self.device.framebuffers.pop(self, None)
        for bo in self.bos:
            bo.put(self)
        self.device.bus.emit(Freed(self))

    def get(self, holder: object) -> None:
        if self.freed:
            raise UseAfterFree(f"get on freed {self!r}")
        self.refs.get(holder)

    def put(self, holder: object) -> None:
        self.refs.put(holder)


def file_holder(file: DrmFile) -> Holder:
    """The holder of a file's reference on a framebuffer it created (``file->fbs``)."""
    return Holder("fb list", who=file)


def add_fb(file: DrmFile, handles: Sequence[int]) -> Framebuffer:
    """``ADDFB2``: a framebuffer over the buffers of ``handles`` (1 to 4 colour planes)."""
    handles = check_sequence("handles", handles)  # type: ignore[assignment]
    if not 1 <= len(handles) <= 4:
        raise InvalidValue(f"ADDFB2 with {len(handles)} planes")
    for h in handles:
        check_handle("handle", h)
    bos = tuple(file.bo(h) for h in handles)
    device = file.device
    device.require_display()
    fb = Framebuffer(device, bos, file)
    for bo in bos:
        bo.get(fb)
    fb.get(file_holder(file))
    file.fbs[fb.id] = fb
    device.framebuffers[fb] = None
    return fb


def rm_fb(file: DrmFile, fb: Framebuffer, *, disable: bool) -> None:
    """``RMFB`` (``disable``: planes showing it are disabled first) or ``CLOSEFB``."""
    check_instance("fb", fb, Framebuffer)
    if file.fbs.get(fb.id) is not fb:
        raise BadHandle(f"{fb!r} is not a framebuffer of {file.name}")
    if disable:
        for plane in fb.device.planes:
            if plane.fb is fb:
                commit(fb.device, plane, None)
    del file.fbs[fb.id]
    fb.file = None
    fb.put(file_holder(file))


def prepare_fb(device: Device, plane: Plane, fb: Framebuffer | None) -> None:
    """``prepare_fb`` of one new plane state (``msm_atomic`` -> ``msm_framebuffer_prepare``
    on the first prepare of the framebuffer).  Raises before changing anything."""
    if fb is None:
        return
    for bo in fb.bos:
        if bo.purged:
            raise Busy(f"scanout of purged {bo!r}")
        check_pinnable(bo, "prepare_fb")
    if fb.prepare_count == 0:
        device.policy.check_fb_prepare(fb)
    fb.get(plane.holder)
    if fb.prepare_count == 0:
        device.policy.on_fb_prepare(fb)
    fb.prepare_count += 1


def commit(device: Device, plane: Plane, fb: Framebuffer | None) -> None:
    """An atomic commit of ``plane`` to ``fb`` (None disables it): ``prepare_fb`` on the new
    state, swap, ``cleanup_fb`` on the old state."""
    check_instance("plane", plane, Plane)
    check_optional("fb", fb, Framebuffer)
    if plane.device is not device:
        raise InvalidValue(f"{plane!r} is not a plane of {device.name}")
    if fb is not None and (fb.freed or fb.device is not device):
        raise InvalidValue(f"{fb!r} cannot be shown on {device.name}")
    prepare_fb(device, plane, fb)
    old = plane.fb
    plane.fb = fb
    if old is not None:
        old.prepare_count -= 1
        if old.prepare_count == 0:
            device.policy.on_fb_cleanup(old)
        old.put(plane.holder)
