"""Reference counts that know their holders (``struct kref`` plus bookkeeping), and the
named holders that are not model entities.

Re-exported by :mod:`gpuvm.core.refs`, which adds the explanations of what keeps an object
alive.  :class:`Holder` and :class:`RefCount` are plain classes with ``__slots__`` and
hand-written ``__init__`` / ``__eq__`` / ``__hash__`` / ``__repr__`` (what attrs generated
before) rather than attrs classes, the documented exception to the house rule: mypyc
compiles them as native classes for the compiled core and cannot compile attrs classes
(``docs/compiled.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from gpuvm.core.errors import RefcountUnderflow
from gpuvm.core.events import EventBus, RefGot, RefPut
from gpuvm.core.frozen import freeze

__all__ = ["CALLER", "OWNER", "Holder", "RefCount", "describe"]


class Holder:
    """A named holder of references that is not itself a model entity, e.g. the driver's
    owner reference on a VM (``Holder("owner")``) or a caller's ``bo_obtain`` reference.

    ``who`` optionally names the entity acting for it (a DRM file, a framebuffer), so
    :func:`~gpuvm.core.refs.explain` can continue the chain through it.  A frozen value:
    equal holders are the same holder.
    """

    __slots__ = ("_hash", "kind", "who")

    kind: Final[str]
    who: Final[object]
    _hash: Final[int]

    def __init__(self, kind: str, who: object = None) -> None:
        self.kind = kind
        self.who = who
        self._hash = _holder_hash(self)

    def keepers(self) -> Iterable[object]:
        return () if self.who is None else (self.who,)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Holder:
            return NotImplemented
        return (self.kind, self.who) == (other.kind, other.who)

    def __hash__(self) -> int:
        h = self._hash
        return h if h != -1 else hash(("Holder", self.kind, self.who))

    def __str__(self) -> str:
        return self.kind if self.who is None else f"{self.kind} of {self.who!r}"

    def __repr__(self) -> str:
        return f"Holder(kind={self.kind!r}, who={self.who!r})"


def _holder_hash(holder: object) -> int:
    """The hash of a holder, computed once at construction: holders are dict keys on
    every get and put.  An unhashable ``who`` gives -1 (never a hash value), and hashing
    such a holder raises then, as it did before the cache."""
    assert isinstance(holder, Holder)
    try:
        return hash(("Holder", holder.kind, holder.who))
    except TypeError:
        return -1


freeze(Holder, derived={"_hash": _holder_hash})

OWNER = Holder("owner")
"""The reference the creator of an object holds (``kref_init``'s 1)."""

CALLER = Holder("caller")
"""A transient reference returned to a caller (``bo_obtain``, ``bo_find``)."""


class RefCount:
    """A reference count with holders, modelling ``struct kref`` plus bookkeeping.

    ``on_zero`` runs when the count drops to zero (the kref release function).
    """

    __slots__ = ("holders", "on_zero", "released", "target", "total")

    target: object
    holders: dict[object, int]
    total: int
    released: bool
    on_zero: Callable[[], None] | None

    def __init__(
        self,
        target: object,
        holders: dict[object, int] | None = None,
        total: int = 0,
        released: bool = False,
        on_zero: Callable[[], None] | None = None,
    ) -> None:
        self.target = target
        self.holders = {} if holders is None else holders
        self.total = total
        self.released = released
        self.on_zero = on_zero

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


def describe(obj: object) -> str:
    """A short human name for a holder or counted object."""
    return str(obj) if isinstance(obj, Holder) else repr(obj)
