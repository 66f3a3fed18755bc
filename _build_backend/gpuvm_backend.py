"""The in-tree PEP 517 build backend: ``setuptools.build_meta``, plus mypy (for mypyc) in
the build requirements when ``GPUVM_COMPILE=1`` asks for the compiled core.

Without ``GPUVM_COMPILE=1`` nothing changes: the wheel is pure Python and building it needs
no C compiler.  ``setup.py`` reads :data:`COMPILED_MODULES` and does the compiling.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (the PEP 517 hooks not overridden here)


def _modules() -> tuple[str, ...]:
    """``gpuvm.core.compiled.MODULES``, read without importing the package (its
    dependencies are not build requirements)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gpuvm", "core")
    spec = importlib.util.spec_from_file_location(
        "_gpuvm_compiled", os.path.join(path, "compiled.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module.MODULES)


COMPILED_MODULES = _modules()
"""The modules mypyc compiles: ``gpuvm.core.compiled.MODULES``."""

MYPYC_REQUIREMENT = "mypy>=2.4.1,<3"
"""The mypy (with mypyc) the compiled build was checked with."""


def compile_requested() -> bool:
    """``GPUVM_COMPILE=1`` in the environment."""
    return os.environ.get("GPUVM_COMPILE", "").strip() == "1"


TYPE_CHECK_REQUIREMENTS = ("attrs>=23.1", "sortedcontainers>=2.4,<3")
"""The runtime dependencies mypyc's type check of the compiled modules imports."""


def _extra() -> list[str]:
    return [MYPYC_REQUIREMENT, *TYPE_CHECK_REQUIREMENTS] if compile_requested() else []


REQUIRES_ONLY = "_GPUVM_BUILD_REQUIRES_ONLY"
"""Set while setuptools runs ``setup.py`` only to learn the build requirements: mypy is not
installed yet then, so ``setup.py`` must not compile (it does in the build proper)."""


def _requires(hook: Callable[[Any], list[str]], config_settings: Any) -> list[str]:
    os.environ[REQUIRES_ONLY] = "1"
    try:
        return [*hook(config_settings), *_extra()]
    finally:
        del os.environ[REQUIRES_ONLY]


def get_requires_for_build_wheel(config_settings: dict[str, object] | None = None) -> list[str]:
    return _requires(_setuptools.get_requires_for_build_wheel, config_settings)


def get_requires_for_build_editable(
    config_settings: dict[str, object] | None = None,
) -> list[str]:
    return _requires(_setuptools.get_requires_for_build_editable, config_settings)
