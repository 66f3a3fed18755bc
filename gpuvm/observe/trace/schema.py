"""The trace format and its validation: the header (``FORMAT``, ``TRACE_VERSION``),
every recordable operation and its field types (:data:`OPS`: the driver-layer ioctls such
as ``DRM_IOCTL_PRIME_HANDLE_TO_FD`` and ``DRM_IOCTL_MODE_ADDFB2``, and the core
``drm_gpuvm_sm_map`` / ``drm_gpuvm_sm_unmap`` path), the device capability presets, and
:func:`load` / :func:`validate`, which check a whole trace (JSON, version, known ops, field
types, ids defined before use) without running anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gpuvm.core.errors import GpuvmError

__all__ = [
    "CAPS_PRESETS",
    "FORMAT",
    "OPS",
    "OPTIONAL",
    "TRACE_VERSION",
    "TraceError",
    "load",
    "validate",
]


FORMAT = "gpuvm-trace"
TRACE_VERSION = 1

# Field types: int, int?, str, bool, ints (list of int), bindops, reqs, and references to
# ids of a kind: @dev, @file, @table, @fb, @fb?, @job?, @vm, @gem, @gem?.  "id" fields of
# defining ops are "+kind".
OPS: dict[str, dict[str, str]] = {
    # driver layer
    "device": {
        "id": "+dev",
        "flavour": "str",
        "policy": "str",
        "planes": "int",
        "display": "bool",
        "caps": "str?",
        "pci_root": "str?",
        "kernel": "str?",
        "dmabuf_move_notify": "bool",
    },
    "process": {"id": "+table"},
    "open": {"id": "+file", "device": "@dev", "fds": "@table"},
    "create_bo": {"file": "@file", "size": "int"},
    "gem_close": {"file": "@file", "handle": "int"},
    "prime_handle_to_fd": {"file": "@file", "handle": "int", "flags": "int"},
    "prime_fd_to_handle": {"file": "@file", "fd": "int", "flags": "int"},
    "fd_send": {"table": "@table", "fd": "int", "to": "@table"},
    "fd_dup": {"table": "@table", "fd": "int"},
    "fd_close": {"table": "@table", "fd": "int"},
    "add_fb": {"id": "+fb", "file": "@file", "handles": "ints"},
    "rm_fb": {"file": "@file", "fb": "@fb"},
    "close_fb": {"file": "@file", "fb": "@fb"},
    "page_flip": {"file": "@file", "plane": "int", "fb": "@fb?"},
    "get_iova": {"file": "@file", "handle": "int"},
    "set_iova": {"file": "@file", "handle": "int", "iova": "int"},
    "submit": {"id": "+job", "file": "@file", "handles": "ints"},
    "exec": {"id": "+job", "file": "@file"},
    "retire": {"device": "@dev", "job": "@job?"},
    "set_param_vm_bind": {"file": "@file"},
    "vm_init": {"file": "@file"},
    "get_param": {"file": "@file"},
    "channel_alloc": {"file": "@file"},
    "vm_bind": {"file": "@file", "ops": "bindops"},
    "evict": {"file": "@file", "handle": "int"},
    "purge": {"file": "@file", "handle": "int"},
    "wait_idle": {"file": "@file", "handle": "int"},
    "close": {"file": "@file"},
    "device_close": {"device": "@dev"},
    # dma-buf: the attachment of an imported buffer, and the exporter's side of an export
    "attachment_map": {"file": "@file", "handle": "int"},
    "attachment_unmap": {"file": "@file", "handle": "int"},
    "attachment_pin": {"file": "@file", "handle": "int"},
    "attachment_unpin": {"file": "@file", "handle": "int"},
    "dmabuf_move": {"file": "@file", "handle": "int", "domain": "str"},
    "exporter_use": {"file": "@file", "handle": "int"},
    # core VM_BIND path
    "vm": {
        "id": "+vm",
        "start": "int",
        "range": "int",
        "reserve_start": "int",
        "reserve_range": "int",
    },
    "gem": {"id": "+gem", "size": "int", "private_to": "@vm?"},
    "map": {"vm": "@vm", "addr": "int", "range": "int", "obj": "@gem?", "offset": "int"},
    "unmap": {"vm": "@vm", "addr": "int", "range": "int"},
    "bind": {"vm": "@vm", "reqs": "reqs"},
    "gem_put": {"obj": "@gem"},
    "vm_close": {"vm": "@vm"},
    # a frame boundary (a vblank of an ingested log): no model effect, replay prices frames
    "frame": {},
}
"""Every recordable operation and its fields."""

OPTIONAL = {
    "planes",
    "dmabuf_move_notify",
    "display",
    "caps",
    "pci_root",
    "reserve_start",
    "reserve_range",
    "private_to",
    "offset",
    "flags",
}
_META = {"op", "result", "error"}


def _caps_presets() -> dict[str, Callable[[str], Any]]:
    from gpuvm.drm import caps

    return {
        "amdgpu_dgpu": caps.amdgpu_dgpu,
        "i915_igpu": caps.i915_igpu,
        "xe_igpu": caps.xe_igpu,
        "bochs": caps.bochs,
        "qxl": caps.qxl,
        "soc_display": caps.soc_display,
    }


CAPS_PRESETS: dict[str, Callable[[str], Any]] = _caps_presets()
"""The device capability presets a trace's ``device`` line may name (``caps``), each
called with the device id as its name."""
_PREFIX = {"dev": "d", "table": "p", "file": "f", "fb": "fb", "job": "j", "vm": "v", "gem": "g"}


class TraceError(GpuvmError):
    """A malformed or inconsistent trace: ``line`` (1-based) and ``reason`` (``-EINVAL``;
    its text is the line and reason alone, as the CLI prints it)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason

    __str__ = Exception.__str__


def _bounds() -> dict[tuple[str, str], tuple[int, int]]:
    from gpuvm.drm.device import MAX_PLANES

    return {("device", "planes"): (0, MAX_PLANES)}


_BOUNDS: dict[tuple[str, str], tuple[int, int]] = _bounds()
"""Fields whose range is checked at validation, before replay builds anything: a device
has at most ``MAX_PLANES`` planes (32-bit plane masks, ``__drm_universal_plane_init``)."""


def _is_int(v: object) -> bool:
    return type(v) is int


def _check_value(kind: str, v: object) -> str | None:
    """None if ``v`` fits the (non-reference) field type ``kind``, else why not."""
    if kind == "int":
        return None if _is_int(v) else f"expected an integer, got {v!r}"
    if kind == "int?":
        return None if v is None or _is_int(v) else f"expected an integer or null, got {v!r}"
    if kind == "str":
        return None if isinstance(v, str) else f"expected a string, got {v!r}"
    if kind == "str?":
        return None if v is None or isinstance(v, str) else f"expected a string or null, got {v!r}"
    if kind == "bool":
        return None if isinstance(v, bool) else f"expected true/false, got {v!r}"
    if kind == "ints":
        if isinstance(v, list) and all(_is_int(x) for x in v):
            return None
        return f"expected a list of integers, got {v!r}"
    if kind in ("bindops", "reqs"):
        if not isinstance(v, list):
            return f"expected a list of ops, got {v!r}"
        for op in v:
            ok = (
                isinstance(op, list)
                and op
                and (
                    (op[0] == "map" and len(op) == 5 and all(_is_int(x) for x in op[1:3]))
                    or (op[0] == "unmap" and len(op) == 3 and all(_is_int(x) for x in op[1:]))
                )
            )
            if not ok:
                return (
                    f'bad op {op!r}: want ["map", addr, range, handle|obj|null, offset] '
                    'or ["unmap", addr, range]'
                )
            if op[0] == "map":
                if not _is_int(op[4]):
                    return f"bad map offset in {op!r}"
                if kind == "bindops" and not (op[3] is None or _is_int(op[3])):
                    return f"bad map handle in {op!r}"
                if kind == "reqs" and not (op[3] is None or isinstance(op[3], str)):
                    return f"bad map object id in {op!r}"
        return None
    raise AssertionError(kind)


def _validate_line(n: int, rec: object, defined: dict[str, str]) -> tuple[str, dict[str, Any]]:
    if not isinstance(rec, dict):
        raise TraceError(n, "not a JSON object")
    op = rec.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise TraceError(n, f"unknown op {op!r}")
    spec = OPS[op]
    extra = set(rec) - set(spec) - _META
    if extra:
        raise TraceError(n, f"{op}: unknown field(s) {', '.join(sorted(extra))}")
    err = rec.get("error")
    if err is not None and not isinstance(err, str):
        raise TraceError(n, f"{op}: error must be an errno name")
    for field, kind in spec.items():
        if field not in rec:
            if field in OPTIONAL or kind.endswith("?"):
                continue
            raise TraceError(n, f"{op}: missing field {field!r}")
        v = rec[field]
        if kind.startswith("+"):
            k = kind[1:]
            if not isinstance(v, str) or not v:
                raise TraceError(n, f"{op}: id must be a non-empty string")
            if v in defined:
                raise TraceError(n, f"{op}: id {v!r} already defined")
            continue
        if kind.startswith("@"):
            k = kind[1:].rstrip("?")
            if v is None and kind.endswith("?"):
                continue
            if not isinstance(v, str):
                raise TraceError(n, f"{op}: {field} must be an id string, got {v!r}")
            if v not in defined:
                raise TraceError(n, f"{op}: {field} {v!r} is not defined by an earlier line")
            if defined[v] != k:
                raise TraceError(n, f"{op}: {field} {v!r} is a {defined[v]}, not a {k}")
            continue
        why = _check_value(kind, v)
        if why:
            raise TraceError(n, f"{op}: {field}: {why}")
        bounds = _BOUNDS.get((op, field))
        if bounds is not None and not bounds[0] <= v <= bounds[1]:
            raise TraceError(n, f"{op}: {field}: {v} is outside [{bounds[0]}, {bounds[1]}]")
        if kind == "reqs":
            for r in v:
                if r[0] == "map" and r[3] is not None and defined.get(r[3]) != "gem":
                    raise TraceError(n, f"{op}: object {r[3]!r} is not a defined gem")
    for field, kind in spec.items():
        if kind.startswith("+") and field in rec and err is None:
            defined[rec[field]] = kind[1:]
    return op, rec


def load(text: str) -> list[tuple[int, str, dict[str, Any]]]:
    """Parse and validate a whole trace: ``(line number, op, record)`` for each op line.
    Raises :class:`TraceError` for the first bad line; nothing is executed."""
    lines = text.splitlines()
    out: list[tuple[int, str, dict[str, Any]]] = []
    header_seen = False
    defined: dict[str, str] = {}
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as e:
            raise TraceError(i, f"not valid JSON ({e.msg} at column {e.colno})") from None
        if not header_seen:
            if not isinstance(rec, dict) or rec.get("format") != FORMAT:
                raise TraceError(i, f'first line must be the header {{"format": "{FORMAT}", ...}}')
            version = rec.get("version")
            if version != TRACE_VERSION:
                raise TraceError(
                    i, f"unsupported trace version {version!r} (this reader knows {TRACE_VERSION})"
                )
            header_seen = True
            continue
        op, rec = _validate_line(i, rec, defined)
        out.append((i, op, rec))
    if not header_seen:
        raise TraceError(1, "empty trace (no header line)")
    return out


def validate(text: str) -> int:
    """Validate ``text`` without running it; returns the number of op lines."""
    return len(load(text))
