"""Reference counts that know their holders, and explanations of what keeps objects alive.

The kernel's ``kref`` only knows a number.  The model's :class:`RefCount` records, per
holder, how many references that holder owns, so an underflow names the wrong holder, a
leak report says *which path* keeps a buffer alive, and :func:`explain` prints every chain
of holders from an object up to a root (a user handle, a driver owner, a VA in a tree).
:class:`Holder` and :class:`RefCount` live in :mod:`gpuvm.core.refcount` (compiled in the
compiled build) and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

from gpuvm.core.refcount import CALLER, OWNER, Holder, RefCount, describe

__all__ = [
    "CALLER",
    "OWNER",
    "Holder",
    "Kept",
    "RefCount",
    "cycles",
    "describe",
    "explain",
    "format_chain",
    "holder_chains",
    "iter_counted",
    "keepers_of",
]


@runtime_checkable
class Kept(Protocol):
    """Anything that can say what keeps it alive."""

    def keepers(self) -> Iterable[object]: ...


def keepers_of(obj: object) -> list[object]:
    """The direct keepers of ``obj``: its reference holders, or what it declares."""
    if isinstance(obj, Kept):
        return list(obj.keepers())
    refs = getattr(obj, "refs", None)
    if isinstance(refs, RefCount):
        return list(refs.holders)
    return []


def holder_chains(obj: object, max_depth: int = 32) -> list[tuple[object, ...]]:
    """Every chain ``(obj, holder, holder-of-holder, ..., root)`` that keeps ``obj`` alive.

    A chain that returns to an object already on it ends with that object repeated: a
    reference cycle, e.g. ``(buffer, vma, vm_bo, buffer)``.
    """
    chains: list[tuple[object, ...]] = []

    def walk(path: tuple[object, ...]) -> None:
        node = path[-1]
        ks = keepers_of(node)
        if not ks or len(path) > max_depth:
            chains.append(path)
            return
        for k in ks:
            if any(k is p for p in path):
                chains.append((*path, k))
            else:
                walk((*path, k))

    walk((obj,))
    return chains


def cycles(obj: object) -> list[tuple[object, ...]]:
    """The reference cycles that pass through ``obj``'s keepers (chains that loop)."""
    out = []
    for chain in holder_chains(obj):
        last = chain[-1]
        if any(last is p for p in chain[:-1]):
            start = next(i for i, p in enumerate(chain) if p is last)
            out.append(chain[start:])
    return out


def format_chain(chain: tuple[object, ...]) -> str:
    loop = len(chain) > 1 and any(chain[-1] is p for p in chain[:-1])
    text = " <- ".join(describe(c) for c in chain)
    return text + ("  [cycle]" if loop else "")


def explain(obj: object) -> str:
    """Print-ready text listing every chain of holders that keeps ``obj`` alive."""
    chains = holder_chains(obj)
    if chains == [(obj,)]:
        return f"{describe(obj)} is held by nothing"
    return "\n".join(format_chain(c) for c in chains)


def iter_counted(objs: Iterable[object]) -> Iterator[RefCount]:
    for o in objs:
        refs = getattr(o, "refs", None)
        if isinstance(refs, RefCount):
            yield refs
