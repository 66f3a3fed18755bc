"""Reference counts that know their holders, and explanations of what keeps objects alive.

The kernel's ``kref`` only knows a number.  The model's :class:`RefCount` records, per
holder, how many references that holder owns, so an underflow names the wrong holder, a
leak report says *which path* keeps a buffer alive, and :func:`explain` prints every chain
of holders from an object up to a root (a user handle, a driver owner, a VA in a tree).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, runtime_checkable

import attrs

from gpuvm.core.errors import RefcountUnderflow
from gpuvm.core.events import EventBus, RefGot, RefPut


@attrs.frozen(slots=True, cache_hash=True)
class Holder:
    """A named holder of references that is not itself a model entity, e.g. the driver's
    owner reference on a VM (``Holder("owner")``) or a caller's ``bo_obtain`` reference.

    ``who`` optionally names the entity acting for it (a DRM file, a framebuffer), so
    :func:`explain` can continue the chain through it.
    """

    kind: str
    who: object = None

    def keepers(self) -> Iterable[object]:
        return () if self.who is None else (self.who,)

    def __str__(self) -> str:
        return self.kind if self.who is None else f"{self.kind} of {self.who!r}"


OWNER = Holder("owner")
"""The reference the creator of an object holds (``kref_init``'s 1)."""

CALLER = Holder("caller")
"""A transient reference returned to a caller (``bo_obtain``, ``bo_find``)."""


@attrs.define(slots=True, eq=False, repr=False)
class RefCount:
    """A reference count with holders, modelling ``struct kref`` plus bookkeeping.

    ``on_zero`` runs when the count drops to zero (the kref release function).
    """

    target: object
    holders: dict[object, int] = attrs.field(factory=dict)
    total: int = 0
    released: bool = False
    on_zero: Callable[[], None] | None = None

    def get(self, holder: object) -> None:
        """Take one reference for ``holder`` (``kref_get``)."""
        if self.released:
            from gpuvm.core.errors import UseAfterFree

            raise UseAfterFree(f"get on released {self.target!r} by {holder!r}")
        holders = self.holders
        holders[holder] = holders.get(holder, 0) + 1
        self.total += 1

    def check_put(self, holder: object) -> None:
        """Raise :class:`RefcountUnderflow` if ``holder`` holds no reference (validation
        step of a put, so callers can check before mutating anything)."""
        if self.holders.get(holder, 0) <= 0:
            held = ", ".join(describe(h) for h in self.holders) or "nobody"
            raise RefcountUnderflow(
                f"put on {self.target!r} by {describe(holder)}, which holds no reference "
                f"(held by: {held})"
            )

    def put(self, holder: object, on_zero: Callable[[], None] | None = None) -> bool:
        """Drop one reference of ``holder`` (``kref_put``); True if the count reached zero,
        in which case ``on_zero`` has run (the call's own release function if given, as
        ``kref_put`` takes one per call, else the count's).  No event: see
        :meth:`release`."""
        return self.release(holder, None, on_zero)

    def acquire(self, holder: object, bus: EventBus) -> None:
        """:meth:`get`, then tell ``bus`` (``RefGot``) if anyone listens: the shared body
        of every counted object's ``get``."""
        self.get(holder)
        if bus.route[RefGot]:
            bus.emit(RefGot(self.target, holder))

    def release(
        self, holder: object, bus: EventBus | None, on_zero: Callable[[], None] | None = None
    ) -> bool:
        """Check ``holder`` holds a reference, tell ``bus`` (``RefPut``, if a bus is given
        and anyone listens), then drop the reference as :meth:`put` describes: the shared
        body of every counted object's ``put``.  An underflow raises before the event, so
        nothing changes."""
        holders = self.holders
        n = holders.get(holder, 0) - 1
        if n < 0:
            self.check_put(holder)  # raises RefcountUnderflow naming the holders
        if bus is not None and bus.route[RefPut]:
            bus.emit(RefPut(self.target, holder))
        if n:
            holders[holder] = n
        else:
            del holders[holder]
        self.total -= 1
        if self.total == 0:
            self.released = True
            release = on_zero if on_zero is not None else self.on_zero
            if release is not None:
                release()
            return True
        return False

    def count(self, holder: object) -> int:
        return self.holders.get(holder, 0)

    def check(self) -> None:
        """The invariant: the total equals the sum over holders, and nothing is negative."""
        s = sum(self.holders.values())
        if s != self.total or any(v <= 0 for v in self.holders.values()):
            raise AssertionError(f"refcount of {self.target!r}: total {self.total} != {s}")

    def __repr__(self) -> str:
        hs = ", ".join(f"{describe(h)}x{n}" for h, n in self.holders.items())
        return f"RefCount({self.total}: {hs})"


@runtime_checkable
class Kept(Protocol):
    """Anything that can say what keeps it alive."""

    def keepers(self) -> Iterable[object]: ...


def describe(obj: object) -> str:
    """A short human name for a holder or counted object."""
    return str(obj) if isinstance(obj, Holder) else repr(obj)


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
