"""Frame budgets and scanout buffer sizes (linear ARGB8888, 4 bytes a pixel).

Helpers that turn a refresh rate into a frame time and a cost into a share of it, and the
table of the linear ARGB8888 scanout buffers the workloads flip (1080p, 1440p, 4k).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

from gpuvm.core.errors import InvalidValue
from gpuvm.observe.costs.errors import UnknownResolution

__all__ = [
    "REFRESH_RATES",
    "RESOLUTIONS",
    "Resolution",
    "budget_pct",
    "frame_ms",
    "resolution",
]

REFRESH_RATES: Final = (60, 90, 120, 144, 165, 240)
"""Common panel refresh rates in Hz (60 Hz: 16.67 ms a frame, 240 Hz: 4.17 ms)."""


def _check_hz(refresh_hz: float) -> float:
    if type(refresh_hz) not in (int, float) or not math.isfinite(refresh_hz) or refresh_hz <= 0:
        raise InvalidValue(f"refresh rate must be a number > 0 Hz, got {refresh_hz!r}")
    return float(refresh_hz)


def frame_ms(refresh_hz: float) -> float:
    """The frame time in milliseconds at ``refresh_hz`` (60 Hz: 16.67 ms)."""
    return 1000.0 / _check_hz(refresh_hz)


def budget_pct(ms: float, refresh_hz: float) -> float:
    """``ms`` as a percentage of one frame at ``refresh_hz`` (5 ms at 60 Hz: 30 %)."""
    return 100.0 * ms * _check_hz(refresh_hz) / 1000.0


@attrs.frozen(slots=True)
class Resolution:
    """A linear scanout buffer: ``width`` x ``height`` pixels of ``bytes_per_pixel``
    (ARGB8888: 4), pitch ``width * bytes_per_pixel`` (msm's 32-pixel pitch alignment is met
    by every width in the table)."""

    name: str
    width: int
    height: int
    bytes_per_pixel: int = 4

    @property
    def pitch(self) -> int:
        return self.width * self.bytes_per_pixel

    @property
    def size(self) -> int:
        """Buffer size in bytes."""
        return self.pitch * self.height

    @property
    def mib(self) -> float:
        return self.size / (1 << 20)

    def pages(self, page_size: int = 4096) -> int:
        """Page-table entries of ``page_size`` that map the buffer (rounded up)."""
        if type(page_size) is not int or page_size <= 0:
            raise InvalidValue(f"page_size must be an int > 0, got {page_size!r}")
        return -(-self.size // page_size)


RESOLUTIONS: Final[Mapping[str, Resolution]] = MappingProxyType(
    {
        "1080p": Resolution("1080p", 1920, 1080),
        "1440p": Resolution("1440p", 2560, 1440),
        "4k": Resolution("4k", 3840, 2160),
    }
)
"""Linear ARGB8888 buffers, pitch = width x 4: 1080p 8,294,400 B (2025 pages), 1440p 14,745,600 B
(3600 pages), 4k 33,177,600 B (8100 pages)."""

_ALIASES: Final = {"2160p": "4k", "uhd": "4k", "fhd": "1080p", "qhd": "1440p"}

MAX_SIDE: Final = 16384
"""The largest width or height a ``WxH`` resolution may have (msm's DPU limit is lower;
larger buffers would not fit the 4 GiB KMS window a few times over)."""


def _wxh(key: str) -> Resolution | None:
    w, sep, h = key.partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        return None
    width, height = int(w), int(h)
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise UnknownResolution(
            f"resolution {key!r}: width and height must be 1..{MAX_SIDE} pixels"
        )
    for r in RESOLUTIONS.values():
        if (r.width, r.height) == (width, height):
            return r
    return Resolution(f"{width}x{height}", width, height)


def resolution(name: str | Resolution) -> Resolution:
    """The table entry called ``name`` (case-insensitive; ``2160p``/``uhd``, ``fhd`` and
    ``qhd`` are aliases), or ``WIDTHxHEIGHT`` (e.g. ``2560x1080``: an ARGB8888 buffer of that
    size; a size in the table gets the table's name); a :class:`Resolution` is returned
    unchanged.  An unknown name raises :class:`UnknownResolution` listing the known ones."""
    if isinstance(name, Resolution):
        return name
    key = name.lower() if isinstance(name, str) else name
    key = _ALIASES.get(key, key) if isinstance(key, str) else key
    if isinstance(key, str) and key in RESOLUTIONS:
        return RESOLUTIONS[key]
    if isinstance(key, str) and (custom := _wxh(key)) is not None:
        return custom
    raise UnknownResolution(
        f"unknown resolution {name!r}; known: {', '.join(RESOLUTIONS)} "
        f"(aliases: {', '.join(sorted(_ALIASES))}) or WIDTHxHEIGHT"
    )
