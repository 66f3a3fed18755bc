"""Memory domains, places and resources as values: TTM's memory types
(``TTM_PL_SYSTEM``, ``TTM_PL_TT``, ``TTM_PL_VRAM``), ``struct ttm_place`` with its
``TTM_PL_FLAG_*`` flags and ``lpfn``, ``struct ttm_resource``, and the preferred/allowed
place lists a driver builds (``amdgpu_bo_placement_from_domain``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs

from gpuvm.core.errors import InvalidValue
from gpuvm.core.u64 import check_u64

__all__ = [
    "GIB",
    "KIB",
    "MIB",
    "PAGE_SIZE",
    "Domain",
    "Place",
    "PlaceFlags",
    "PlaceSpec",
    "Resource",
    "amdgpu_domains",
    "places",
]


PAGE_SIZE = 4096
KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30


class Domain(enum.IntEnum):
    """A TTM memory type (``TTM_PL_SYSTEM``/``TT``/``VRAM``); amdgpu calls TT "GTT"."""

    SYSTEM = 0
    """CPU pages, not GPU-visible."""
    TT = 1
    """System pages bound into the GPU aperture (GART)."""
    VRAM = 2
    """Device-local memory."""


class PlaceFlags(enum.IntFlag):
    """``TTM_PL_FLAG_*`` (values as in ``ttm_placement.h``)."""

    NONE = 0
    CONTIGUOUS = 1 << 0
    """One physically contiguous range (recorded on the resource; always fits here)."""
    TOPDOWN = 1 << 1
    """Allocate from the top of the domain (recorded only: the model has no addresses)."""
    TEMPORARY = 1 << 2
    """A multihop bounce: the resulting resource never matches a later validate."""
    DESIRED = 1 << 3
    """Only tried in the first (non-evicting) pass."""
    FALLBACK = 1 << 4
    """Only tried in the second (evicting) pass."""


_ALL_FLAGS = 0x1F
_KEPT = PlaceFlags.CONTIGUOUS | PlaceFlags.TOPDOWN | PlaceFlags.TEMPORARY


def _lpfn(_: object, __: attrs.Attribute[int], value: int) -> None:
    check_u64("lpfn", value)


def _domain(value: object) -> Domain:
    try:
        return Domain(value)  # type: ignore[arg-type]
    except ValueError:
        raise InvalidValue(f"not a memory domain: {value!r}") from None


def _flags(value: object) -> PlaceFlags:
    if not isinstance(value, int) or isinstance(value, bool) or value & ~_ALL_FLAGS:
        raise InvalidValue(f"not placement flags: {value!r}")
    return PlaceFlags(value)


@attrs.frozen(slots=True)
class Place:
    """A ``struct ttm_place``: a domain, flags and ``lpfn``, the exclusive upper page frame
    the backing must stay below (0: no limit).  ``fpfn`` is not modelled."""

    domain: Domain = attrs.field(converter=_domain)
    flags: PlaceFlags = attrs.field(default=PlaceFlags.NONE, converter=_flags)
    lpfn: int = attrs.field(default=0, validator=_lpfn)

    def __str__(self) -> str:
        parts = [self.domain.name]
        parts += [f.name for f in PlaceFlags if f and f in self.flags and f.name]
        if self.lpfn:
            parts.append(f"lpfn={self.lpfn:#x}")
        return "|".join(parts)


@attrs.frozen(slots=True)
class Resource:
    """A buffer's current backing (``struct ttm_resource``): the domain and the flags and
    limit it was allocated with."""

    domain: Domain
    flags: PlaceFlags = PlaceFlags.NONE
    lpfn: int = 0

    @classmethod
    def from_place(cls, place: Place) -> Resource:
        return cls(place.domain, place.flags & _KEPT, place.lpfn)

    @property
    def contiguous(self) -> bool:
        return PlaceFlags.CONTIGUOUS in self.flags

    def compatible(self, place: Place) -> bool:
        """Whether this backing satisfies ``place`` (``ttm_resource_compatible`` for one
        place): same domain, contiguous if asked, inside the place's limit, not a
        temporary bounce."""
        if PlaceFlags.TEMPORARY in self.flags or self.domain != place.domain:
            return False
        if PlaceFlags.CONTIGUOUS in place.flags and not self.contiguous:
            return False
        return not place.lpfn or (self.lpfn != 0 and self.lpfn <= place.lpfn)


PlaceSpec = Domain | Place | Iterable[Domain | Place]
"""What the API accepts for a placement list: a domain, a place, or a sequence of them."""


def places(*items: Domain | Place, flags: PlaceFlags = PlaceFlags.NONE) -> tuple[Place, ...]:
    """An ordered placement list; bare domains become places with ``flags``."""
    out = []
    for item in items:
        if isinstance(item, Place):
            out.append(item)
        elif isinstance(item, Domain):
            out.append(Place(item, flags))
        else:
            raise InvalidValue(f"not a Domain or Place: {item!r}")
    return tuple(out)


def _as_places(spec: PlaceSpec) -> tuple[Place, ...]:
    if isinstance(spec, Domain | Place):
        return places(spec)
    return places(*spec)


def amdgpu_domains(
    preferred: Iterable[Domain], *, kernel_or_discardable: bool = False
) -> tuple[tuple[Place, ...], tuple[Place, ...]]:
    """amdgpu's ``(preferred, allowed)`` for a BO created with ``preferred`` domains
    (``amdgpu_gem_create_ioctl``): allowed = preferred, plus GTT when preferred is VRAM
    alone (except kernel or discardable BOs)."""
    pref = tuple(dict.fromkeys(Domain(d) for d in preferred))
    allowed = pref
    if pref == (Domain.VRAM,) and not kernel_or_discardable:
        allowed = (Domain.VRAM, Domain.TT)
    return places(*pref), places(*allowed)
