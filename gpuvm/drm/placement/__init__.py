"""Memory domains and buffer placement, modelled on TTM (``drivers/gpu/drm/ttm``).

A :class:`MemoryManager` is one device's set of TTM resource managers: a capacity per
memory :class:`Domain` (SYSTEM, TT, VRAM, TTM's numbering), resident-byte accounting, one
LRU per domain and the driver's eviction table.  A buffer (any object, usually a
:class:`~gpuvm.core.gem.GemObject`) gets a :class:`Backing` from :meth:`MemoryManager.add`:
its size, preferred and allowed :class:`Place` lists, current :class:`Resource`, pin
count and LRU stamp.  :meth:`MemoryManager.validate` is ``ttm_bo_validate``'s two-pass
search (DESIRED places skipped in the evicting pass, FALLBACK places used only in it),
evicting unpinned LRU victims to the driver's eviction placement; :meth:`pin` and
:meth:`unpin` follow ``amdgpu_bo_pin_restricted`` / ``ttm_bo_pin``.

The model counts bytes, not addresses: there is no fragmentation, so a CONTIGUOUS or
TOPDOWN allocation succeeds whenever the bytes fit.  CONTIGUOUS and ``lpfn`` are recorded
on the resource, so a later request for contiguous (or range-limited) backing does not
match an existing non-contiguous (or unlimited) one and forces a move, as in the kernel.

Every mutation plans first (on a copy of the accounting) and applies after, so a rejected
call leaves every buffer and the manager unchanged; :meth:`MemoryManager.plan_validate` is
the side-effect-free dry run.  Moves emit :class:`~gpuvm.core.events.Migrated` on the bus and
call the ``on_move`` hooks first (where a dma-buf exporter calls ``move_notify``).

The package has one module per concept: :mod:`~gpuvm.drm.placement.domains` (domains,
places, resources), :mod:`~gpuvm.drm.placement.cost` (the migration cost model) and
:mod:`~gpuvm.drm.placement.manager` (:class:`MemoryManager` and :class:`Backing`).  Every
public name is importable from ``gpuvm.drm.placement``.
"""

from gpuvm.drm.placement.cost import (
    PCIE3_X16,
    PCIE4_X16,
    PCIE5_X16,
    Link,
    MigrationTally,
    Move,
    copy_bytes,
    crosses_link,
    migration_ms,
)
from gpuvm.drm.placement.domains import (
    GIB,
    KIB,
    MIB,
    PAGE_SIZE,
    Domain,
    Place,
    PlaceFlags,
    PlaceSpec,
    Resource,
    amdgpu_domains,
    places,
)
from gpuvm.drm.placement.manager import AMDGPU_EVICTION, Backing, MemoryManager, MoveHook

__all__ = [
    "AMDGPU_EVICTION",
    "GIB",
    "KIB",
    "MIB",
    "PAGE_SIZE",
    "PCIE3_X16",
    "PCIE4_X16",
    "PCIE5_X16",
    "Backing",
    "Domain",
    "Link",
    "MemoryManager",
    "MigrationTally",
    "Move",
    "MoveHook",
    "Place",
    "PlaceFlags",
    "PlaceSpec",
    "Resource",
    "amdgpu_domains",
    "copy_bytes",
    "crosses_link",
    "migration_ms",
    "places",
]
