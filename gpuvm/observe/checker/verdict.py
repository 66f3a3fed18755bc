"""What the lifetime checker reports: a :class:`Violation` (its kind and message), the
kinds that fail a run (:data:`FATAL_KINDS`: use-after-free, leak, cycle, underflow,
refcount, stale-import, attributes, dma-buf, stale-mapping, unmapped-scanout) versus
non-fatal hazards, and
the findings of several checkers.  The kinds name the kernel bug classes the checks look for: a
``drm_gem_object_put`` / ``drm_gpuvm_bo_put`` on a freed object, a reference
``kref_put`` never drops, and so on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from gpuvm.observe.checker.lifetime import LifetimeChecker

__all__ = [
    "FATAL_KINDS",
    "Violation",
    "iter_findings",
]


FATAL_KINDS = frozenset(
    {
        "use-after-free",
        "leak",
        "cycle",
        "underflow",
        "refcount",
        "stale-import",
        "attributes",
        "dma-buf",
        "stale-mapping",
        "unmapped-scanout",
    }
)


@attrs.frozen(slots=True)
class Violation:
    """One finding: ``kind`` (see the module docstring) and a human-readable message."""

    kind: str
    message: str

    @property
    def fatal(self) -> bool:
        return self.kind in FATAL_KINDS

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def iter_findings(checkers: Iterable[LifetimeChecker]) -> Iterator[Violation]:
    for c in checkers:
        yield from c.violations
