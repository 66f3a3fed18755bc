"""Errors raised by the cost observers, presets and budget helpers.

They extend the library's :class:`~gpuvm.core.errors.GpuvmError` hierarchy (each carries an
errno like every other rejected operation) but live here so the cost layer stays
additive: the core error module does not need to know about presets.
"""

from __future__ import annotations

import errno as _errno

from gpuvm.core.errors import GpuvmError, InvalidValue


class PresetError(GpuvmError):
    """A cost preset that cannot be used (base class)."""

    errno = _errno.EINVAL


class PresetFormatError(PresetError):
    """A malformed preset definition (TOML syntax, unknown or missing key, a value of the
    wrong type or sign); the message names the file, the preset and the key."""

    errno = _errno.EINVAL


class UnknownPreset(PresetError):
    """A preset name that is neither built in nor loaded; the message lists the known ones."""

    errno = _errno.ENOENT


class UnknownResolution(InvalidValue):
    """A resolution name outside the table; the message lists the known ones."""


class FrameScopeError(GpuvmError):
    """A frame scope used wrongly: nested ``with counters.frame()`` scopes, or per-frame
    averages asked of counts that span no frame."""

    errno = _errno.EBUSY
