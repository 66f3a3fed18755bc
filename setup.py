"""Build script: pure Python by default; ``GPUVM_COMPILE=1`` compiles the core with mypyc.

Everything else (metadata, packages, data) is in ``pyproject.toml``.  The in-tree build
backend (``_build_backend/gpuvm_backend.py``) adds mypy to the build requirements when
``GPUVM_COMPILE=1`` is set, so ``GPUVM_COMPILE=1 pip install .`` works with build isolation.
See ``docs/compiled.md``.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_build_backend"))
from gpuvm_backend import COMPILED_MODULES, REQUIRES_ONLY, compile_requested


def ext_modules() -> list[object]:
    if not compile_requested() or os.environ.get(REQUIRES_ONLY):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        raise SystemExit(
            "GPUVM_COMPILE=1 needs mypy (with mypyc) in the build environment: build with "
            "pip's build isolation, or install mypy first"
        ) from None

    paths = [os.path.join(*m.split(".")) + ".py" for m in COMPILED_MODULES]
    # Modules outside the compiled set are type-checked silently: optional extras (simpy,
    # matplotlib, ...) need not be installed in the build environment.
    flags = ["--follow-imports=silent"]
    return list(mypycify([*flags, *paths], opt_level="3", group_name="gpuvm_core"))


setup(ext_modules=ext_modules())
