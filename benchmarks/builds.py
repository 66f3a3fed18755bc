"""The two builds of the package, side by side, for ``--compare`` in the benchmarks.

``pure``: the checkout itself on ``PYTHONPATH`` (interpreted, as ``pip install .``).
``compiled``: ``GPUVM_COMPILE=1 pip wheel`` of the checkout installed with ``--target`` into
``$XDG_CACHE_HOME/gpuvm-model/bench-builds/compiled-<hash of the sources>`` (``~/.cache`` by
default; built once per source state, with build isolation, so it needs a C compiler and the
package index that ``pip`` uses).

:func:`run_child` runs a benchmark script in a fresh interpreter against one build and returns
its ``--json`` output; the child checks that it got the build it was meant to
(``gpuvm.compiled()``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BUILDS = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "gpuvm-model"
    / "bench-builds"
)

C_REFERENCE: dict[str, int] = {
    "sm_map+apply|1000": 2_690_000,
    "sm_map+apply|100000": 1_590_000,
    "sm_unmap+apply|1000": 4_900_000,
    "sm_unmap+apply|100000": 2_210_000,
}
"""Operations per second of the kernel's own ``drivers/gpu/drm/drm_gpuvm.c`` (torvalds/linux
000a45dce7adc13e45b2925b383e39f32e5f3004, unmodified, with ``lib/rbtree.c``, built with
``gcc -O2`` in userspace over stub headers) on the same layouts and the same seeded requests
as :func:`bench_vm.requests`, done the way the model's ``sm_map_ops`` + ``apply`` is: one
sm_map+apply is ``drm_gpuvm_bo_obtain``, ``drm_gpuvm_sm_map_ops_create``, each op applied
with ``drm_gpuva_map`` / ``remap`` / ``unmap`` and ``drm_gpuva_link`` / ``unlink``, then
``drm_gpuva_ops_free`` and ``drm_gpuvm_bo_put`` (sm_unmap+apply: the same with
``drm_gpuvm_sm_unmap_ops_create``).  Best of 25, measured 2026-12-06 02:05 UTC on the 2-core
x86_64 machine these benchmarks run on, idle (load 0.2-0.3), right after a
``bench_vm.py --compare`` run; the callback form (``drm_gpuvm_sm_map`` with ``sm_step_*``
callbacks, no op list) is about 10-20 % faster (1.76 M/s at 1e5 VAs).  Under load 0.5 the
same binary gave 1.2 M/s at 1e5: the timed loop lasts about 1.3 ms.  The harness itself is
not part of the project (it compiles kernel code); ``benchmarks/RESULTS.md`` says how it was
built.  The scripts do not re-measure these figures: on other hardware, compare ratios, not
the figures.  (Issue 18 recorded 0.49 M sm_map+apply/s at 1e5 VAs from an earlier
measurement.)"""


def _source_hash() -> str:
    h = hashlib.sha256()
    files = sorted(
        p
        for d in ("gpuvm", "legacy", "_build_backend")
        for p in (ROOT / d).rglob("*")
        if p.is_file() and p.suffix in (".py", ".toml") and "__pycache__" not in p.parts
    )
    for p in [*files, ROOT / "setup.py", ROOT / "pyproject.toml"]:
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def compiled_site() -> Path:
    """The directory holding the compiled build of the current sources (built if needed)."""
    site = BUILDS / f"compiled-{_source_hash()}"
    if (site / "gpuvm").is_dir():
        return site
    BUILDS.mkdir(parents=True, exist_ok=True)
    print(f"building the compiled core into {site} (once per source state)...", file=sys.stderr)
    env = {**os.environ, "GPUVM_COMPILE": "1"}
    with tempfile.TemporaryDirectory() as wheels:
        src = Path(wheels) / "src"  # pip builds in the source tree: build a copy
        shutil.copytree(
            ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__")
        )
        pip = [sys.executable, "-m", "pip"]
        subprocess.run(
            [*pip, "wheel", "--no-deps", "--quiet", "--wheel-dir", wheels, str(src)],
            check=True,
            env=env,
        )
        wheel = next(Path(wheels).glob("*.whl"))
        tmp = site.with_name(site.name + ".tmp")
        subprocess.run(
            [*pip, "install", "--no-deps", "--quiet", "--target", str(tmp), str(wheel)], check=True
        )
        tmp.rename(site)
    return site


def run_child(script: str, build: str, args: list[str]) -> Any:
    """Run ``benchmarks/<script> --json --child-build <build> <args>`` against ``build``
    (``"pure"`` or ``"compiled"``) and return its parsed JSON."""
    path = ROOT if build == "pure" else compiled_site()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), str(ROOT / "benchmarks")])}
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--json", "--child-build", build]
    with tempfile.TemporaryDirectory() as cwd:  # nothing shadows the build on sys.path
        out = subprocess.run(
            [*cmd, *args], check=True, env=env, cwd=cwd, stdout=subprocess.PIPE, text=True
        )
    return json.loads(out.stdout)


def check_build(build: str) -> None:
    """In a child: refuse to measure the wrong build."""
    import gpuvm

    got = "compiled" if gpuvm.compiled() else "pure"
    if got != build:
        raise SystemExit(f"bench: asked for the {build} build, {gpuvm.__file__} is {got}")
