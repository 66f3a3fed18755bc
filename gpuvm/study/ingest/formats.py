"""Payload parsers, one per supported tracepoint, written from each event's ``TP_printk``
format in the kernel (the files and commits are listed in ``docs/ingest.md``).

Each parser is a regular expression over the payload text that names the event's fields;
:func:`parse_payload` returns them as a dict of ints, strings and booleans.  Numbers keep
the meaning of the format: ``%x`` / ``%llx`` fields are hexadecimal, ``%d`` / ``%u`` /
``%zu`` decimal, pointers (``%p``) are kept as their printed text (hashed by default, so
only equality between them means anything).  Where an event's format changed between
kernel versions, both spellings are accepted (for example ``xe_vma_*`` gained ``dev=`` and
``vm=`` fields when it moved to ``xe_trace_bo.h``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

__all__ = ["EVENTS", "EventSpec", "PayloadError", "parse_payload"]

# Field kinds: a regex piece and a converter.
_PTR = r"(?:0x)?[0-9a-fA-F]+|\(____ptrval____\)|\(null\)|\(nil\)"
_HEX = r"[0-9a-fA-F]+"
_DEC = r"-?\d+"
_NAME = r"[^\s,]+"
_PIECES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "ptr": (_PTR, str),
    "hex": (_HEX, lambda s: int(s, 16)),
    "0xhex": (_HEX, lambda s: int(s, 16)),  # printed with a literal 0x before it
    "dec": (_DEC, int),
    "name": (_NAME, str),
    "bool01": (r"[01]", lambda s: s == "1"),
    "yesno": (r"yes|no", lambda s: s == "yes"),
    "truefalse": (r"true|false", lambda s: s == "true"),
    "word": (r"\w+", str),
}


class PayloadError(ValueError):
    """A known event whose payload does not have the fields its format prints."""


@attrs.frozen(slots=True)
class EventSpec:
    """A supported event: its tracepoint ``system`` and ``name``, the kernel header that
    defines it, the patterns its payload may take, and each field's converter."""

    system: str
    name: str
    header: str
    patterns: tuple[re.Pattern[str], ...]
    convert: Mapping[str, Callable[[str], Any]]
    fields: tuple[str, ...]

    def parse(self, payload: str) -> dict[str, Any]:
        for pat in self.patterns:
            m = pat.fullmatch(payload)
            if m is not None:
                return {k: self.convert[k](v) for k, v in m.groupdict().items() if v is not None}
        raise PayloadError(
            f"{self.name}: payload does not match its format (fields: {', '.join(self.fields)})"
        )


def _keyed(*items: tuple[str, str] | tuple[str, str, str], sep: str = ", ", eq: str = "=") -> str:
    """A regex for ``key<eq>value`` pairs joined by ``sep``; an item is ``(key, kind)`` or
    ``(key, kind, group)`` when the printed key differs from the group name.  A key written
    ``?key`` is optional (with its separator)."""
    parts: list[str] = []
    for item in items:
        key, kind = item[0], item[1]
        optional = key.startswith("?")
        key = key.lstrip("?")
        group = item[2] if len(item) == 3 else re.sub(r"\W", "_", key)
        piece, _ = _PIECES[kind]
        prefix = "0x" if kind == "0xhex" else ""
        text = f"{re.escape(key)}{re.escape(eq)}{prefix}(?P<{group}>{piece})"
        parts.append(f"(?:{text}{re.escape(sep)})?" if optional else text)
    out = ""
    for i, p in enumerate(parts):
        out += p
        if i + 1 < len(parts) and not p.endswith(")?"):
            out += re.escape(sep)
    return out


def _spec(
    system: str, name: str, header: str, kinds: Mapping[str, str], *patterns: str
) -> EventSpec:
    return EventSpec(
        system,
        name,
        header,
        tuple(re.compile(p) for p in patterns),
        {k: _PIECES[v][1] for k, v in kinds.items()},
        tuple(kinds),
    )


EVENTS: dict[str, EventSpec] = {}


def _add(
    *names: str, system: str, header: str, kinds: Mapping[str, str], patterns: list[str]
) -> None:
    for n in names:
        EVENTS[n] = _spec(system, n, header, kinds, *patterns)


# --- xe: drivers/gpu/drm/xe/xe_trace_bo.h (and xe_trace.h before the split) -------------------

_XE_BO = "drivers/gpu/drm/xe/xe_trace_bo.h"
_XE = "drivers/gpu/drm/xe/xe_trace.h"

_add(
    "xe_vma_bind",
    "xe_vma_pf_bind",
    "xe_vma_unbind",
    "xe_vma_rebind_worker",
    "xe_vma_rebind_exec",
    "xe_vma_userptr_rebind_worker",
    "xe_vma_userptr_rebind_exec",
    "xe_vma_evict",
    "xe_vma_invalidate",
    "xe_vma_userptr_invalidate",
    system="xe",
    header=_XE_BO,
    kinds={
        "dev": "name",
        "vma": "ptr",
        "vm": "ptr",
        "asid": "hex",
        "start": "hex",
        "end": "hex",
        "userptr": "hex",
    },
    patterns=[
        _keyed(
            ("?dev", "name"),
            ("vma", "ptr"),
            ("?vm", "ptr"),
            ("asid", "0xhex"),
            ("start", "0xhex"),
            ("end", "0xhex"),
            ("userptr", "0xhex"),
        )
        + ",?"
    ],
)
_add(
    "xe_bo_move",
    system="xe",
    header=_XE_BO,
    kinds={
        "lacks_source": "yesno",
        "bo": "ptr",
        "size": "dec",
        "src": "word",
        "dst": "word",
        "dev": "name",
    },
    patterns=[
        rf"move_lacks_source:(?P<lacks_source>yes|no), migrate object (?P<bo>{_PTR}) "
        rf"\[size (?P<size>\d+)\] from (?P<src>\w+) to (?P<dst>\w+) device_id:(?P<dev>\S*)"
    ],
)
_add(
    "xe_vm_create",
    "xe_vm_free",
    "xe_vm_kill",
    system="xe",
    header=_XE_BO,
    kinds={"dev": "name", "vm": "ptr", "asid": "hex", "flags": "hex"},
    patterns=[
        _keyed(("?dev", "name"), ("vm", "ptr"), ("asid", "0xhex"))
        + r"(?:, vm flags=0x(?P<flags>[0-9a-fA-F]+))?"
    ],
)
_add(
    "xe_gt_tlb_invalidation_fence_send",
    "xe_gt_tlb_invalidation_fence_recv",
    "xe_gt_tlb_invalidation_fence_timeout",
    system="xe",
    header=_XE,
    kinds={"dev": "name", "fence": "ptr", "seqno": "dec"},
    patterns=[_keyed(("?dev", "name"), ("fence", "ptr"), ("seqno", "dec"))],
)

# --- amdgpu: drivers/gpu/drm/amd/amdgpu/amdgpu_trace.h ------------------------------------------

_AMD = "drivers/gpu/drm/amd/amdgpu/amdgpu_trace.h"
_add(
    "amdgpu_vm_bo_map",
    "amdgpu_vm_bo_unmap",
    system="amdgpu",
    header=_AMD,
    kinds={"bo": "ptr", "start": "hex", "last": "hex", "offset": "hex", "flags": "hex"},
    patterns=[
        _keyed(
            ("bo", "ptr"), ("start", "hex"), ("last", "hex"), ("offset", "hex"), ("flags", "hex")
        )
    ],
)
_add(
    "amdgpu_vm_bo_update",
    "amdgpu_vm_bo_mapping",
    "amdgpu_vm_bo_cs",
    system="amdgpu",
    header=_AMD,
    kinds={"soffs": "hex", "eoffs": "hex", "flags": "hex"},
    patterns=[_keyed(("soffs", "hex"), ("eoffs", "hex"), ("flags", "hex"))],
)
_add(
    "amdgpu_vm_update_ptes",
    system="amdgpu",
    header=_AMD,
    kinds={
        "pid": "dec",
        "vm_ctx": "hex",
        "start": "hex",
        "end": "hex",
        "flags": "hex",
        "incr": "dec",
        "dst": "name",
    },
    patterns=[
        rf"pid:(?P<pid>{_DEC}) vm_ctx:0x(?P<vm_ctx>{_HEX}) start:0x(?P<start>{_HEX}) "
        rf"end:0x(?P<end>{_HEX}), flags:0x(?P<flags>{_HEX}), incr:(?P<incr>\d+), "
        r"dst:\s*(?P<dst>\{[0-9a-fA-Fx,\s]*\})?"
    ],
)
_add(
    "amdgpu_bo_create",
    system="amdgpu",
    header=_AMD,
    kinds={
        "bo": "ptr",
        "pages": "dec",
        "type": "dec",
        "preferred": "dec",
        "allowed": "dec",
        "visible": "dec",
    },
    patterns=[
        rf"bo=(?P<bo>{_PTR}), pages=(?P<pages>\d+), type=(?P<type>{_DEC}), "
        rf"prefer+ed=(?P<preferred>{_DEC}), allowed=(?P<allowed>{_DEC}), "
        rf"visible=(?P<visible>{_DEC})"
    ],
)
_add(
    "amdgpu_bo_move",
    "amdgpu_ttm_bo_move",
    system="amdgpu",
    header=_AMD,
    kinds={"bo": "ptr", "src": "dec", "dst": "dec", "size": "dec"},
    patterns=[rf"bo=(?P<bo>{_PTR}), from=(?P<src>{_DEC}), to=(?P<dst>{_DEC}), size=(?P<size>\d+)"],
)

# --- msm: drivers/gpu/drm/msm/msm_gpu_trace.h ---------------------------------------------------

_MSM = "drivers/gpu/drm/msm/msm_gpu_trace.h"
_add(
    "msm_gpu_submit",
    system="drm_msm_gpu",
    header=_MSM,
    kinds={"id": "dec", "pid": "dec", "ring": "dec", "bos": "dec", "cmds": "dec"},
    patterns=[
        _keyed(
            ("id", "dec"),
            ("pid", "dec"),
            ("ring", "dec"),
            ("bos", "dec"),
            ("cmds", "dec"),
            sep=" ",
        )
    ],
)
_add(
    "msm_gpu_submit_retired",
    system="drm_msm_gpu",
    header=_MSM,
    kinds={
        "id": "dec",
        "pid": "dec",
        "ring": "dec",
        "seqno": "dec",
        "elapsed": "dec",
        "mhz": "dec",
        "start": "dec",
        "end": "dec",
    },
    patterns=[
        rf"id=(?P<id>{_DEC}) pid=(?P<pid>{_DEC}) ring=(?P<ring>{_DEC}):(?P<seqno>{_DEC}) "
        rf"elapsed=(?P<elapsed>{_DEC}) ns mhz=(?P<mhz>{_DEC}) start=(?P<start>{_DEC}) "
        rf"end=(?P<end>{_DEC})"
    ],
)
_add(
    "msm_gem_purge",
    system="drm_msm_gpu",
    header=_MSM,
    kinds={"bytes": "dec"},
    patterns=[r"Purging (?P<bytes>\d+) bytes"],
)
_add(
    "msm_gem_purge_vmaps",
    system="drm_msm_gpu",
    header=_MSM,
    kinds={"vmaps": "dec"},
    patterns=[r"Purging (?P<vmaps>\d+) vmaps"],
)

# --- dma-buf: include/trace/events/dma_buf.h ----------------------------------------------------

_DMABUF = "include/trace/events/dma_buf.h"
_DMA_BASE = (("exp_name", "name"), ("size", "dec"), ("ino", "dec"))
_add(
    "dma_buf_export",
    "dma_buf_mmap_internal",
    "dma_buf_mmap",
    "dma_buf_put",
    system="dma_buf",
    header=_DMABUF,
    kinds={"exp_name": "name", "size": "dec", "ino": "dec"},
    patterns=[_keyed(*_DMA_BASE, sep=" ")],
)
_add(
    "dma_buf_dynamic_attach",
    "dma_buf_detach",
    system="dma_buf",
    header=_DMABUF,
    kinds={
        "exp_name": "name",
        "size": "dec",
        "ino": "dec",
        "attachment": "ptr",
        "is_dynamic": "bool01",
        "dev_name": "name",
    },
    patterns=[
        _keyed(*_DMA_BASE, sep=" ")
        + rf" attachment:(?P<attachment>{_PTR}) is_dynamic=(?P<is_dynamic>[01])"
        r" dev_name=(?P<dev_name>\S+)"
    ],
)
_add(
    "dma_buf_fd",
    "dma_buf_get",
    system="dma_buf",
    header=_DMABUF,
    kinds={"exp_name": "name", "size": "dec", "ino": "dec", "fd": "dec"},
    patterns=[_keyed(*_DMA_BASE, ("fd", "dec"), sep=" ")],
)

# --- drm: drivers/gpu/drm/drm_trace.h -----------------------------------------------------------

_DRM = "drivers/gpu/drm/drm_trace.h"
_add(
    "drm_vblank_event",
    system="drm",
    header=_DRM,
    kinds={"crtc": "dec", "seq": "dec", "time": "dec", "high_prec": "truefalse"},
    patterns=[
        _keyed(("crtc", "dec"), ("seq", "dec"))
        + rf"(?:, time=(?P<time>{_DEC}), high-prec=(?P<high_prec>true|false))?"
    ],
)
_add(
    "drm_vblank_event_queued",
    "drm_vblank_event_delivered",
    system="drm",
    header=_DRM,
    kinds={"file": "ptr", "pid": "dec", "crtc": "dec", "seq": "dec"},
    patterns=[
        _keyed(("file", "ptr"), ("crtc", "dec"), ("seq", "dec")),
        _keyed(("pid", "dec"), ("crtc", "dec"), ("seq", "dec")),
    ],
)


def parse_payload(event: str, payload: str) -> dict[str, Any] | None:
    """The fields of a supported event's payload, or None for an unsupported event.
    Raises :class:`PayloadError` for a supported event whose payload does not parse."""
    spec = EVENTS.get(event)
    if spec is None:
        return None
    return spec.parse(payload)
