"""Hypothesis strategies and state machines that users aim at their own policies.

``machine_for(policy)`` returns a pytest-collectable state machine; ``mutants`` holds the
deliberately broken policies and core variants the machines must catch.  It may import
every layer below the studies (core, legacy, drm, observe), never ``gpuvm.study``; it needs
hypothesis (the ``test`` extra), which is imported only when a machine or strategy is
first used, so ``gpuvm.testing.mutants`` imports without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpuvm.testing.machines import (
        LegacyMachine,
        LifetimeMachine,
        PrimeMachine,
        VmBindMachine,
        bind_requests,
        buffer_sizes,
        buffers,
        drm_files,
        machine_class,
        machine_for,
        machines_for,
        map_requests,
        unmap_requests,
    )

__all__ = [
    "LegacyMachine",
    "LifetimeMachine",
    "PrimeMachine",
    "VmBindMachine",
    "bind_requests",
    "buffer_sizes",
    "buffers",
    "drm_files",
    "machine_class",
    "machine_for",
    "machines_for",
    "map_requests",
    "unmap_requests",
]


def __getattr__(name: str) -> Any:
    """The machines and strategies, imported (with hypothesis) on first use."""
    if not name.startswith("__"):
        machines = importlib.import_module("gpuvm.testing.machines")
        if hasattr(machines, name):
            return getattr(machines, name)
    raise AttributeError(f"module 'gpuvm.testing' has no attribute {name!r}")
