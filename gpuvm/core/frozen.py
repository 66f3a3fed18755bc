"""Immutability of the core's hand-written frozen value classes, as ``attrs.frozen`` gave it.

The compiled core's hot classes (ops, requests, pieces, holders) are plain classes with
``__slots__`` rather than attrs classes, because mypyc cannot compile attrs classes
(``docs/compiled.md``).  :func:`freeze` gives them what ``attrs.frozen`` did: assigning or
deleting an attribute raises ``attrs.exceptions.FrozenInstanceError`` (an
``AttributeError``), in both builds.  Interpreted, ``__init__`` is regenerated to store its
fields past that guard, as attrs' generated ``__init__`` does; compiled, the class's own
``__init__`` stays (mypyc stores ``Final`` attributes directly, never through
``__setattr__``).  This module stays interpreted in both builds (it generates code).
"""

from __future__ import annotations

import importlib.machinery
import inspect
import sys
from collections.abc import Callable
from typing import NoReturn

from attrs.exceptions import FrozenInstanceError

__all__ = ["freeze", "is_native"]

_EXT = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def _refuse_set(self: object, name: str, value: object) -> NoReturn:
    raise FrozenInstanceError()


def _refuse_del(self: object, name: str) -> NoReturn:
    raise FrozenInstanceError()


def is_native(cls: type) -> bool:
    """True when ``cls`` was compiled by mypyc as a native class (its module is an
    extension module and the class keeps no instance ``__dict__``)."""
    path = getattr(sys.modules.get(cls.__module__), "__file__", None) or ""
    return path.endswith(_EXT) and hasattr(cls, "__mypyc_attrs__")


def freeze(*classes: type, derived: dict[str, Callable[[object], object]] | None = None) -> None:
    """Make each class of ``classes`` frozen as ``attrs.frozen`` would.

    Interpreted, each class's ``__init__`` must only store its parameters in the slots of
    the same names, plus the ``derived`` slots (name -> function of the instance, run after
    the parameters are stored, in order; the class's own ``__init__`` must compute the same
    values); it is regenerated with the same signature and defaults, storing through
    ``object.__setattr__``.
    """
    for cls in classes:
        if not is_native(cls):
            _regenerate_init(cls, derived or {})
        setattr(cls, "__setattr__", _refuse_set)  # noqa: B010
        setattr(cls, "__delattr__", _refuse_del)  # noqa: B010


def _regenerate_init(cls: type, derived: dict[str, Callable[[object], object]]) -> None:
    init = cls.__dict__["__init__"]
    params = list(inspect.signature(init).parameters)[1:]
    slots = set(cls.__dict__.get("__slots__", ()))
    if not set(params) <= slots or not set(derived) <= slots:
        raise TypeError(f"{cls.__name__}.__init__ stores names that are not slots")
    body = "".join(f"    _set(self, {p!r}, {p})\n" for p in params)
    body += "".join(f"    _set(self, {d!r}, _derived[{d!r}](self))\n" for d in derived)
    src = f"def __init__(self, {', '.join(params)}):\n{body or '    pass' + chr(10)}"
    ns: dict[str, object] = {"_set": object.__setattr__, "_derived": dict(derived)}
    exec(src, ns)  # generated from the signature, as attrs does
    new = ns["__init__"]
    for attr in ("__defaults__", "__kwdefaults__", "__annotations__", "__doc__"):
        setattr(new, attr, getattr(init, attr))
    setattr(new, "__qualname__", f"{cls.__qualname__}.__init__")  # noqa: B010
    setattr(new, "__module__", cls.__module__)  # noqa: B010
    setattr(cls, "__init__", new)  # noqa: B010
