"""The counted reference edges the checker reasons about: the kind of each edge
(:func:`edge_kind`: a GEM handle of ``drm_gem_handle_create``, a ``drm_gpuvm_bo``'s buffer
and VM references, ``drm_gpuva_link`` / ``drm_gpuva_insert``, a dma-buf export or import
attachment, an fd, a PRIME cache entry, ...), which kinds the checker recomputes from the
structure, the expected-count table it fills, the holder chains that keep an object alive
(:func:`explain`, cycles), and the per-VA attributes compared across a split
(:func:`attributes`).
"""

from __future__ import annotations

import itertools

from gpuvm.core.gem import GemObject
from gpuvm.core.refs import CALLER, OWNER, Holder, describe, holder_chains
from gpuvm.core.va import Va
from gpuvm.core.vm import GpuVm
from gpuvm.core.vmbo import VmBo

__all__ = [
    "TRANSIENT_HOLDERS",
    "attributes",
    "edge_kind",
    "explain",
    "format_cycle",
]


TRANSIENT_HOLDERS = frozenset({"apply", "bind", "list walk", "new vma"})
"""Holder kinds a model operation takes and drops within one call."""


def edge_kind(target: object, holder: object) -> str:
    """The kind of the counted edge ``holder -> target``."""
    from gpuvm.drm.dmabuf import DmaBuf

    if holder is OWNER:
        return "owner"
    if holder is CALLER:
        return "caller"
    if isinstance(holder, Holder):
        k = holder.kind
        if k.startswith("handle "):
            return "handle"
        if k.startswith("fd "):
            return "fd"
        if k in TRANSIENT_HOLDERS:
            return f"transient {k}"
        if k == "plane state":
            return "plane"
        return k
    if type(holder).__name__ == "HandleRef":
        return "handles"
    if isinstance(holder, Va):
        return "va link" if isinstance(target, VmBo) else "va insert"
    if isinstance(holder, VmBo):
        return "vm_bo"
    if isinstance(holder, GpuVm):
        return "r_obj"
    kind = type(holder).__name__
    if kind == "Framebuffer":
        return "framebuffer"
    if kind == "Job":
        return "job"
    if kind == "LegacyVma":
        return "vma"
    if isinstance(holder, DmaBuf):
        return "export"
    if isinstance(target, DmaBuf) and isinstance(holder, GemObject):
        return "import attachment"
    return kind.lower()


def format_cycle(chain: tuple[object, ...]) -> str:
    """A cycle ``(held, holder, ..., held)`` written holder -> held."""
    return " -> ".join(describe(x) for x in reversed(chain))


def explain(obj: object) -> str:
    """Every chain of holders that keeps ``obj`` alive, one per line, each link labelled
    with its edge kind; a chain that loops ends with ``[cycle]``."""
    chains = holder_chains(obj)
    if chains == [(obj,)]:
        return f"{describe(obj)} is held by nothing"
    lines = []
    for chain in chains:
        parts = [describe(chain[0])]
        for held, holder in itertools.pairwise(chain):
            if isinstance(held, Holder):
                label = "of"  # a named holder acting for an entity, not a counted edge
            elif isinstance(held, Va) and not isinstance(holder, Va | VmBo):
                label = "owns"  # what will tear a kernel-managed VMA down
            else:
                label = edge_kind(held, holder)
            parts.append(f"<-[{label}]- {describe(holder)}")
        loop = len(chain) > 1 and any(chain[-1] is p for p in chain[:-1])
        lines.append(" ".join(parts) + ("  [cycle]" if loop else ""))
    return "\n".join(lines)


def _cycles(obj: object) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for chain in holder_chains(obj):
        last = chain[-1]
        if len(chain) > 1 and any(last is p for p in chain[:-1]):
            start = next(i for i, p in enumerate(chain) if p is last)
            out.append(chain[start:])
    return out


def _is_freed(obj: object) -> bool:
    return bool(getattr(obj, "freed", False) or getattr(obj, "released", False))


class _Edges:
    """Expected reference counts ``target -> holder -> n`` recomputed from structure."""

    def __init__(self) -> None:
        self.counts: dict[int, dict[object, int]] = {}
        self.targets: dict[int, object] = {}

    def add(self, target: object, holder: object, n: int = 1) -> None:
        self.targets[id(target)] = target
        per = self.counts.setdefault(id(target), {})
        per[holder] = per.get(holder, 0) + n

    def touch(self, target: object) -> None:
        self.targets[id(target)] = target
        self.counts.setdefault(id(target), {})

    def of(self, target: object) -> dict[object, int]:
        return self.counts.get(id(target), {})


def attributes(vm: GpuVm) -> list[tuple[int, int, object, int, tuple[bool, bool, int]]]:
    """``(addr, range, obj, offset, (sparse, invalidated, user_flags))`` of every VA."""
    return [
        (va.addr, va.range, va.obj, va.offset, (va.sparse, va.invalidated, va.user_flags))
        for va in vm.vas
    ]


_UNVERIFIED: frozenset[str] = frozenset({"owner", "caller"})


def _verifiable(kind: str) -> bool:
    """Edge kinds whose live edges the checker recomputes (others are user holders)."""
    return kind in {
        "handle",
        "handles",
        "framebuffer",
        "plane",
        "fb list",
        "vm_bo",
        "va link",
        "va insert",
        "vma",
        "import attachment",
        "export",
        "obj.dma_buf",
        "fd",
        "prime cache",
        "job",
        "r_obj",
    }
