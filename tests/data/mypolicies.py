"""A user's own teardown policy, as a driver author would write it in their own module:
the tests name it ``mypolicies:LruDisplayCache`` (study, flip, replay, testing machines)."""

from __future__ import annotations

from gpuvm.drm.policies import GpuvmVmaRef


class LruDisplayCache(GpuvmVmaRef):
    """The VMA-refcount policy under the user's own name (the study records the
    ``module:Class`` reference, so another process can rebuild it)."""

    name = "lru_display_cache"
