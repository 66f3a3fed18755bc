"""The lifetime checker: use-after-free, leaks, reference cycles, refcount underflow and
refcounts that disagree with the live structure, for every counted edge kind.

A :class:`LifetimeChecker` observes a model's events (``Freed``, ``RefPut``, ``Mapped``,
``VaLinked``) and, on :meth:`LifetimeChecker.check`, inspects the objects it watches
(devices, VMs, buffers).  The inspection recomputes, from the structure alone (handle
tables, PRIME caches, fd tables, framebuffers and planes, in-flight jobs, VA trees and VmBo
lists, dma-buf exports and import attachments), how many references every holder *should*
own on every counted object, and compares that with the holders the objects record.  A
holder that owns a reference without a live edge is a leak; an edge without its reference
is a use-after-free waiting to happen.  At close points (:meth:`after_file_close`,
:meth:`after_vm_close`, :meth:`after_teardown`) whatever is left alive is reported with the
chains of holders that keep it, a reference cycle as the cycle
(``GEM bo -> VMA -> VmBo -> GEM bo``).

Edge kinds (:func:`edge_kind`): ``handle``, ``framebuffer``, ``plane``, ``fb list``,
``vm_bo`` (a VmBo's buffer and VM references), ``va link`` (VA -> VmBo), ``va insert``
(VA -> VM), ``vma`` (legacy VMA -> address space), ``import attachment`` (imported buffer
-> dma-buf), ``export`` (dma-buf -> exporter buffer), ``obj.dma_buf``, ``fd``,
``prime cache``, ``job``, ``deferred list``, ``r_obj``, ``owner``/``caller`` (external),
and transient holders (``apply``, ``bind``, ``list walk``, ``new vma``) that must never
outlive the call that took them.

Violations carry a kind: ``use-after-free``, ``leak``, ``cycle``, ``underflow``,
``refcount``, ``stale-import``, ``dma-buf`` (a dma-buf rule the exporter side broke: a
pinned buffer moved, or a mapping left across a move without ``move_notify``), and the
non-fatal ``hazard`` (a pattern the kernel has
had bugs with, e.g. a derived pointer cleared while the object is still held).

The package has one module per concept: :mod:`~gpuvm.observe.checker.verdict` (violations
and their kinds), :mod:`~gpuvm.observe.checker.edges` (edge kinds, explanations, VA
attributes) and :mod:`~gpuvm.observe.checker.lifetime` (the checker).  Every public name is
importable from ``gpuvm.observe.checker``.
"""

from gpuvm.observe.checker.edges import TRANSIENT_HOLDERS, edge_kind, explain, format_cycle
from gpuvm.observe.checker.edges import attributes as attributes
from gpuvm.observe.checker.lifetime import LifetimeChecker
from gpuvm.observe.checker.verdict import FATAL_KINDS, Violation
from gpuvm.observe.checker.verdict import iter_findings as iter_findings

__all__ = [
    "FATAL_KINDS",
    "TRANSIENT_HOLDERS",
    "LifetimeChecker",
    "Violation",
    "edge_kind",
    "explain",
    "format_cycle",
]
