"""Study specs as data: the axes of a sweep and the points to run, from TOML or flags.

A :class:`StudySpec` names the values of every axis: policies (built-in names,
``module:Class`` or ``gpuvm.policies`` entry points), cost presets (built-in or from preset
files), resolutions (named or ``WxH``), refresh rates, layers, swapchain depth, page size
(``4K``, ``64K``, ``2M``), driver flavour, workloads / sources / import patterns /
consumers, frames and seeds.  By default a sweep is the full factorial of the axes; a spec
may instead list explicit ``[[point]]`` tables, each fixing some axes (the others take
every value of their axis).  :func:`load_spec` reads ``study.toml``; :meth:`StudySpec.override`
applies command-line flags.  Any schema problem raises :class:`SpecError` with one line
naming the key.

:meth:`StudySpec.runs` generates the model runs lazily (one per policy x workload setting;
the presets and refresh rates price a run's counts without rerunning it), so a sweep of
10^5 points never holds them all.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from gpuvm.core.errors import GpuvmError, InvalidValue
from gpuvm.drm.modes import FLAVOURS
from gpuvm.drm.policies import POLICIES, make_policy
from gpuvm.observe.costs import CostPreset, all_presets, builtin_presets, get_preset, resolution
from gpuvm.study.workloads import (
    CONSUMERS,
    PAGE_SIZES,
    PAGEFLIP_PATTERNS,
    REIMPORT_PATTERNS,
    REIMPORT_SOURCES,
    SOURCES,
    WorkloadSpec,
    check_policy,
)

__all__ = [
    "AXES",
    "DEFAULT_FRAMES",
    "RunTask",
    "SpecError",
    "StudySpec",
    "load_spec",
    "loads_spec",
    "page_size_of",
]

DEFAULT_FRAMES: Final = 120

AXES: Final = (
    "policies",
    "presets",
    "resolutions",
    "refresh",
    "layers",
    "depth",
    "page_size",
    "flavour",
    "workloads",
    "sources",
    "patterns",
    "consumers",
    "frames",
    "seeds",
)
"""The axes of a study, as spelled in a spec file's ``[study]`` table."""

POINT_KEYS: Final = {
    "policy": "policies",
    "preset": "presets",
    "resolution": "resolutions",
    "refresh": "refresh",
    "layers": "layers",
    "depth": "depth",
    "page_size": "page_size",
    "flavour": "flavour",
    "workload": "workloads",
    "source": "sources",
    "pattern": "patterns",
    "consumer": "consumers",
    "frames": "frames",
    "seed": "seeds",
}
"""A ``[[point]]`` table's keys (one value, or a list) and the axis each fixes."""

STUDY_KEYS: Final = (*AXES, "preset_files")


class SpecError(InvalidValue):
    """A study spec that cannot be run: the message is one line naming the key."""


@attrs.frozen(slots=True)
class RunTask:
    """One model run of a sweep and how to price it: its index in the sweep, the policy
    reference, the workload, and the presets and refresh rates for its rows (or why it is
    not applicable)."""

    index: int
    policy: str
    spec: WorkloadSpec
    presets: tuple[str, ...]
    refresh: tuple[float, ...]
    skipped: str | None = None


def page_size_of(value: object, key: str = "page_size") -> int:
    """``"4K"``, ``"64K"``, ``"2M"`` (any case, ``KiB``/``MiB`` too) or the byte count."""
    if type(value) is int and value in PAGE_SIZES.values():
        return value
    if isinstance(value, str):
        k = value.strip().upper().removesuffix("IB").removesuffix("B")
        if k in PAGE_SIZES:
            return PAGE_SIZES[k]
        if k.isdigit() and int(k) in PAGE_SIZES.values():
            return int(k)
    raise SpecError(f"key {key!r}: page size must be one of {', '.join(PAGE_SIZES)}, got {value!r}")


def _page_name(size: int) -> str:
    return next(k for k, v in PAGE_SIZES.items() if v == size)


_ALL_CASES: Final = (
    *(("pageflip", "swapchain", "own", "kms"),),
    *(
        ("pageflip", s, p, "kms")
        for s in ("client", "foreign")
        for p in PAGEFLIP_PATTERNS
        if p != "own"
    ),
    *(
        ("reimport", s, p, c)
        for s in REIMPORT_SOURCES
        for p in REIMPORT_PATTERNS
        for c in CONSUMERS
    ),
)
"""Every (workload, source, pattern, consumer) the workloads support, in report order."""


def _as_list(key: str, value: object) -> list[Any]:
    if isinstance(value, list):
        if not value:
            raise SpecError(f"key {key!r}: empty list")
        return list(value)
    return [value]


def _strings(key: str, value: object, known: Sequence[str] | None = None) -> tuple[str, ...]:
    out = []
    for v in _as_list(key, value):
        if not isinstance(v, str) or not v:
            raise SpecError(f"key {key!r}: expected names, got {v!r}")
        if known is not None and v not in known:
            raise SpecError(f"key {key!r}: unknown value {v!r}; known: {', '.join(known)}")
        out.append(v)
    return tuple(dict.fromkeys(out))


def _ints(key: str, value: object, low: int) -> tuple[int, ...]:
    out = []
    for v in _as_list(key, value):
        if type(v) is not int or v < low:
            raise SpecError(f"key {key!r}: expected whole numbers >= {low}, got {v!r}")
        out.append(v)
    return tuple(dict.fromkeys(out))


def _rates(key: str, value: object) -> tuple[float, ...]:
    out = []
    for v in _as_list(key, value):
        if type(v) not in (int, float) or not 0 < v < float("inf"):
            raise SpecError(f"key {key!r}: expected refresh rates > 0 Hz, got {v!r}")
        out.append(float(v))
    return tuple(dict.fromkeys(out))


def _normalise(
    key: str, axis: str, value: object, presets: Mapping[str, CostPreset]
) -> tuple[Any, ...]:
    """One axis's values, checked."""
    try:
        if axis == "policies":
            names = _strings(key, value)
            for n in names:
                make_policy(n)  # resolves (imports module:Class) or raises UnknownPolicy
            return tuple(dict.fromkeys(check_policy(n) for n in names))
        if axis == "presets":
            names = _strings(key, value)
            for n in names:
                get_preset(n, presets)
            return names
        if axis == "resolutions":
            return tuple(dict.fromkeys(resolution(r).name for r in _strings(key, value)))
        if axis == "refresh":
            return _rates(key, value)
        if axis in ("layers", "depth", "frames"):
            return _ints(key, value, 2 if axis == "frames" else 1)
        if axis == "seeds":
            return _ints(key, value, 0)
        if axis == "page_size":
            return tuple(dict.fromkeys(page_size_of(v, key) for v in _as_list(key, value)))
        if axis == "flavour":
            return _strings(key, value, list(FLAVOURS))
        if axis == "workloads":
            return _strings(key, value, ["pageflip", "reimport"])
        if axis == "sources":
            return _strings(key, value, list(dict.fromkeys([*SOURCES, *REIMPORT_SOURCES])))
        if axis == "patterns":
            return _strings(
                key, value, list(dict.fromkeys([*PAGEFLIP_PATTERNS, *REIMPORT_PATTERNS]))
            )
        if axis == "consumers":
            return _strings(key, value, ["kms", *CONSUMERS])
    except SpecError:
        raise
    except GpuvmError as exc:
        msg = exc.args[0] if exc.args else str(exc)
        raise SpecError(f"key {key!r}: {msg}") from None
    raise AssertionError(axis)


def _defaults(presets: Mapping[str, CostPreset]) -> dict[str, tuple[Any, ...]]:
    return {
        "policies": tuple(POLICIES),
        "presets": tuple(presets),
        "resolutions": ("1080p",),
        "refresh": (60.0,),
        "layers": (1,),
        "depth": (3,),
        "page_size": (4096,),
        "flavour": ("msm",),
        "workloads": ("pageflip", "reimport"),
        "sources": tuple(dict.fromkeys([*SOURCES, *REIMPORT_SOURCES])),
        "patterns": tuple(dict.fromkeys([*PAGEFLIP_PATTERNS, *REIMPORT_PATTERNS])),
        "consumers": ("kms", *CONSUMERS),
        "frames": (DEFAULT_FRAMES,),
        "seeds": (0,),
    }


@attrs.frozen(slots=True)
class StudySpec:
    """The axes of a study (every value checked) and optional explicit points (partial
    assignments of axes: an axis a point leaves out takes all its values).  ``origin`` is
    where it came from (a file name, or ``<flags>``)."""

    axes: Mapping[str, tuple[Any, ...]]
    preset_files: tuple[str, ...] = ()
    points: tuple[Mapping[str, tuple[Any, ...]], ...] = ()
    origin: str = "<defaults>"
    preset_table: Mapping[str, CostPreset] = attrs.field(factory=builtin_presets, eq=False)

    @classmethod
    def default(cls, preset_files: Sequence[str] = ()) -> StudySpec:
        table = _preset_table(preset_files, "preset_files")
        return cls(_defaults(builtin_presets()), tuple(preset_files), preset_table=table)

    def override(self, **values: object) -> StudySpec:
        """A copy with axes replaced (``None`` values are ignored): command-line flags win
        over the file; a flag also overrides that axis in every point."""
        files = values.pop("preset_files", None)
        preset_files = self.preset_files
        table = self.preset_table
        if files:
            preset_files = (*preset_files, *(str(f) for f in files))  # type: ignore[attr-defined]
            table = _preset_table(preset_files, "--presets-file")
        axes = dict(self.axes)
        if files and "presets" not in values and self.axes["presets"] == tuple(self.preset_table):
            axes["presets"] = tuple(table)  # the default "every preset" grows with the files
        changed = []
        for axis, v in values.items():
            if v is None:
                continue
            if axis not in AXES:
                raise SpecError(f"unknown axis {axis!r}; known: {', '.join(AXES)}")
            axes[axis] = _normalise(f"--{axis}", axis, v, table)
            changed.append(axis)
        points = tuple({k: p for k, p in pt.items() if k not in changed} for pt in self.points)
        return StudySpec(axes, preset_files, points, self.origin, table)

    def presets(self) -> tuple[CostPreset, ...]:
        """Every preset the study prices with (the axis, and every point's)."""
        names = list(self.axes["presets"])
        for pt in self.points:
            names += pt.get("presets", ())
        return tuple(get_preset(n, self.preset_table) for n in dict.fromkeys(names))

    def as_dict(self) -> dict[str, object]:
        """The spec as run, JSON-ready (page sizes by name)."""

        def axis_json(axis: str, vals: tuple[Any, ...]) -> list[Any]:
            return [_page_name(v) for v in vals] if axis == "page_size" else list(vals)

        out: dict[str, object] = {a: axis_json(a, self.axes[a]) for a in AXES}
        out["preset_files"] = list(self.preset_files)
        if self.points:
            out["points"] = [{k: axis_json(k, v) for k, v in p.items()} for p in self.points]
        out["origin"] = self.origin
        return out

    # --- the runs ------------------------------------------------------------------------

    def runs(self) -> Iterator[RunTask]:
        """Every model run, lazily, in order: policy, then resolution, layers, depth, page
        size, flavour, seed, frames, then workload case.  A VM_BIND consumer under a policy
        without VM_BIND, and on the xe flavour any other case (xe has no legacy path and its
        display is not modelled), is yielded with ``skipped`` set."""
        index = 0
        groups = self.points or ({},)
        for pt in groups:
            ax = {**self.axes, **pt}
            cases = [
                c
                for c in _ALL_CASES
                if c[0] in ax["workloads"]
                and c[1] in ax["sources"]
                and c[2] in ax["patterns"]
                and c[3] in ax["consumers"]
            ]
            for pol in ax["policies"]:
                vm_bind = make_policy(pol).supports_vm_bind
                for res, layers, depth, ps, flav, seed, frames in itertools.product(
                    ax["resolutions"],
                    ax["layers"],
                    ax["depth"],
                    ax["page_size"],
                    ax["flavour"],
                    ax["seeds"],
                    ax["frames"],
                ):
                    for workload, source, pattern, consumer in cases:
                        if workload == "reimport" and (
                            layers != ax["layers"][0] or depth != ax["depth"][0]
                        ):
                            continue  # a re-import has no layers or swapchain: run it once
                        if workload == "pageflip":
                            spec = WorkloadSpec(
                                "pageflip", source, pattern, "kms", res, 60.0, layers, depth,
                                frames, min(depth + 1, frames - 1), ps, flav, seed,
                            )  # fmt: skip
                        else:
                            spec = WorkloadSpec(
                                "reimport", source, pattern, consumer, res, 60.0, 1, 1,
                                frames, min(2, frames - 1), ps, flav, seed,
                            )  # fmt: skip
                        skipped = (
                            "policy has no VM_BIND"
                            if consumer == "vm_bind" and not vm_bind
                            else None
                        )
                        if skipped is None and flav.startswith("xe") and consumer != "vm_bind":
                            skipped = "xe runs VM_BIND re-imports only"
                        yield RunTask(index, pol, spec, ax["presets"], ax["refresh"], skipped)
                        index += 1

    def count(self) -> tuple[int, int]:
        """``(runs, rows)`` the sweep will make (without running anything)."""
        runs = rows = 0
        for t in self.runs():
            if t.skipped is None:
                runs += 1
                rows += len(t.presets) * len(t.refresh)
        return runs, rows


def _preset_table(files: Sequence[str], key: str) -> dict[str, CostPreset]:
    for f in files:
        if not Path(f).is_file():
            raise SpecError(f"key {key!r}: preset file {f!r} does not exist")
    try:
        return all_presets(*files)
    except GpuvmError as exc:
        raise SpecError(f"key {key!r}: {exc.args[0] if exc.args else exc}") from None


def loads_spec(text: str, *, origin: str = "<string>", base: Path | None = None) -> StudySpec:
    """Parse a study spec (TOML with a ``[study]`` table and optional ``[[point]]``
    tables); preset files are relative to ``base``.  Problems raise :class:`SpecError`
    naming ``origin`` and the key."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{origin}: not valid TOML: {exc}") from None
    for key in doc:
        if key not in ("study", "point"):
            raise SpecError(f"{origin}: unknown key {key!r}; known: study, point")
    study = doc.get("study", {})
    if not isinstance(study, dict):
        raise SpecError(f"{origin}: key 'study': expected a table")
    for key in study:
        if key not in STUDY_KEYS:
            raise SpecError(f"{origin}: unknown key 'study.{key}'; known: {', '.join(STUDY_KEYS)}")
    try:
        files_raw = study.get("preset_files", [])
        files = _strings("study.preset_files", files_raw) if files_raw != [] else ()
        if base is not None:
            files = tuple(str(base / f) for f in files)
        table = _preset_table(files, "study.preset_files")
        axes = _defaults(table)
        for axis in AXES:
            if axis in study:
                axes[axis] = _normalise(f"study.{axis}", axis, study[axis], table)
        points_raw = doc.get("point", [])
        if not isinstance(points_raw, list):
            raise SpecError("key 'point': expected [[point]] tables")
        points = []
        for i, p in enumerate(points_raw):
            if not isinstance(p, dict):
                raise SpecError(f"key 'point[{i}]': expected a table")
            pt: dict[str, tuple[Any, ...]] = {}
            for k, v in p.items():
                if k not in POINT_KEYS:
                    raise SpecError(f"unknown key 'point[{i}].{k}'; known: {', '.join(POINT_KEYS)}")
                pt[POINT_KEYS[k]] = _normalise(f"point[{i}].{k}", POINT_KEYS[k], v, table)
            points.append(pt)
    except SpecError as exc:
        raise SpecError(f"{origin}: {exc.args[0]}") from None
    return StudySpec(axes, tuple(files), tuple(points), origin, table)


def load_spec(path: str | Path) -> StudySpec:
    """Read a study spec file (see :func:`loads_spec`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{p}: cannot read the spec: {exc.strerror or exc}") from None
    return loads_spec(text, origin=str(p), base=p.parent)
