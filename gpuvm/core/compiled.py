"""Whether the core runs compiled: the optional mypyc build of its hot modules.

``GPUVM_COMPILE=1 pip install .`` compiles :data:`MODULES` with mypyc (see
``docs/compiled.md``); a plain ``pip install .`` leaves every module interpreted.  Both
builds run the same source and behave the same (events, errors, ordering); only speed
differs.  This module uses the standard library only: the build reads :data:`MODULES` from
it without importing the package.
"""

from __future__ import annotations

import importlib.machinery
import sys
from pathlib import Path

__all__ = ["MODULES", "compiled", "compiled_modules", "core_build"]

MODULES = (
    "gpuvm.core.vm",
    "gpuvm.core.vm_locks",
    "gpuvm.core.vm_tree",
    "gpuvm.core.vm_bos",
    "gpuvm.core.vm_exec",
    "gpuvm.core.vm_ops",
    "gpuvm.core.vm_apply",
    "gpuvm.core.vm_life",
    "gpuvm.core.vm_invariants",
    "gpuvm.core.vatree",
    "gpuvm.core.splitmerge",
    "gpuvm.core.ops",
    "gpuvm.core.va",
    "gpuvm.core.vmbo",
    "gpuvm.core.refcount",
    "gpuvm.core.events",
    "gpuvm.drm.driver_vm",
    "gpuvm.observe.costs.tally",
    "legacy.iova",
)
"""The modules the compiled build compiles: the ``GpuVm`` class, its section modules, the
VA index, split/merge, the driver layer's VM classes (``gpuvm.drm.driver_vm``: ``DriverVm``,
``ManagedVm``, ``ManagedVa``, the VMs every pageflip and submit runs through) and the iova
allocator they use (``legacy.iova``), the cost counters' event handlers
(``gpuvm.observe.costs.tally``), and the hot
data classes (ops and requests, ``Va``, ``VmBo``, ``Holder`` / ``RefCount``), written as
plain slotted classes so that mypyc makes them native classes.  They are one compilation
group across four layers; only their names are listed here (nothing is imported).  The
events (``events``) are plain classes for the same reason.  The module defining attrs
classes (``gem``) stays interpreted: mypyc 2.4 builds an ``attrs.define`` / ``attrs.frozen``
class as a non-native class and breaks it (``docs/compiled.md``)."""


_ROOT = Path(__file__).resolve().parents[2]
"""The directory holding the ``gpuvm`` and ``legacy`` packages (site-packages, or a checkout)."""


def _is_extension(module: str) -> bool:
    """Whether ``module`` loads from an extension module: a loaded module's file, else
    whether an extension file of that name sits beside the sources (the import system
    prefers it to the ``.py``).  Nothing is imported, so that asking from the core does not
    import the driver layer's or the observers' modules named in :data:`MODULES`."""
    loaded = sys.modules.get(module)
    if loaded is not None:
        path = getattr(loaded, "__file__", None) or ""
        return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    base = _ROOT.joinpath(*module.split("."))
    return any(
        base.with_name(base.name + suffix).is_file()
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


def compiled_modules() -> tuple[str, ...]:
    """The modules of :data:`MODULES` that are loaded compiled (extension modules)."""
    return tuple(m for m in MODULES if _is_extension(m))


def compiled() -> bool:
    """True when the core was built with ``GPUVM_COMPILE=1`` (every module of
    :data:`MODULES` is compiled), False for the pure-Python build."""
    return len(compiled_modules()) == len(MODULES)


def core_build() -> str:
    """``"compiled"`` or ``"pure"`` (``"partly compiled"`` if only some modules are, which
    no supported build produces), for ``--version`` and study provenance."""
    n = len(compiled_modules())
    return "compiled" if n == len(MODULES) else "pure" if n == 0 else "partly compiled"
