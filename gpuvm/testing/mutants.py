"""Deliberately broken policies and core variants: the proof that the checks can fail.

Each :class:`Mutant` names a known way to get GPU VA lifetimes wrong, the teardown policy
to run with it, the state machine of :mod:`gpuvm.testing` expected to catch it, and (for a
core or driver variant) a context manager that patches the model *in memory* for the
duration of a run (``with mutant.active(): ...``); no source file is edited and everything
is restored on exit.  ``tests/test_mutants.py`` asserts that every machine run under a
mutant fails within the CI example budget.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from gpuvm.core.compiled import compiled
from gpuvm.core.errors import NotSupported
from gpuvm.drm.policies import GpuvmVmaRef, TeardownPolicy

__all__ = ["MUTANTS", "Mutant", "SkipUnmapAtHandleClose", "patched"]


@contextlib.contextmanager
def patched(owner: object, name: str, value: object) -> Iterator[None]:
    """Set ``owner.name = value`` for the duration of the block."""
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


@attrs.frozen(slots=True)
class Mutant:
    """A broken variant: run ``policy`` through machine ``machine`` with ``patch`` active.

    ``machine == "checks"``: a check that stopped detecting one thing (or a refusal that
    stopped refusing); no state machine can see it, since the machines trust the checks,
    so ``caught_by`` names the direct test (``tests/<file>.py::<test>``) that must fail.

    ``pure_only``: the patch replaces ``GpuVm`` methods that the compiled core
    (``GPUVM_COMPILE=1``, ``docs/compiled.md``) calls natively, for plain VMs and the driver
    layer's VMs alike, so it would not take effect there; :meth:`active` refuses it
    (:class:`~gpuvm.core.errors.NotSupported`) under the compiled build rather than run an
    unbroken model.  Run such a mutant with the default, pure-Python install."""

    name: str
    description: str
    policy: Any
    machine: str
    patch: Callable[[], contextlib.AbstractContextManager[None]] | None = None
    caught_by: str | None = None
    pure_only: bool = False

    def active(self) -> contextlib.AbstractContextManager[None]:
        if self.pure_only and compiled():
            raise NotSupported(
                f"mutant {self.name} patches GpuVm methods that the compiled core calls "
                "natively; it takes effect only in the pure-Python build (docs/compiled.md)"
            )
        return self.patch() if self.patch is not None else contextlib.nullcontext()


# --- core variants ------------------------------------------------------------------------


@contextlib.contextmanager
def forget_unlink_on_remap() -> Iterator[None]:
    """A driver's REMAP step that inserts the pieces but never unlinks the old VA: the old
    VA keeps its VmBo reference after it is removed and freed."""
    from gpuvm.core.vm import GpuVm

    orig_apply, orig_unlink = GpuVm.apply, GpuVm.unlink
    depth = [0]

    def apply(self: GpuVm, ops: Any) -> Any:
        depth[0] += 1
        try:
            return orig_apply(self, ops)
        finally:
            depth[0] -= 1

    def unlink(self: GpuVm, va: Any) -> None:
        if depth[0] and not va.inserted:  # the REMAP branch unlinks after removing
            return
        orig_unlink(self, va)

    with patched(GpuVm, "apply", apply), patched(GpuVm, "unlink", unlink):
        yield


@contextlib.contextmanager
def drop_vm_bo_buffer_ref() -> Iterator[None]:
    """``drm_gpuvm_bo_create`` that does not take its buffer reference: a mapping no longer
    keeps its buffer alive, so closing the last handle frees a mapped buffer."""
    from gpuvm.core.vm import GpuVm

    orig = GpuVm.bo_create

    def bo_create(self: GpuVm, obj: Any, holder: object = None) -> Any:
        vm_bo = orig(self, obj) if holder is None else orig(self, obj, holder)
        vm_bo.holds_obj = False
        obj.refs.put(vm_bo)
        return vm_bo

    with patched(GpuVm, "bo_create", bo_create):
        yield


@contextlib.contextmanager
def leave_freed_node_in_va_index() -> Iterator[None]:
    """``drm_gpuva_remove`` that drops the VM reference but leaves the node in the VA index:
    lookups then return a VA the driver has freed."""
    from gpuvm.core.vm import GpuVm

    def _remove(self: GpuVm, va: Any) -> None:
        va.inserted = False
        self.generation += 1
        self.put(va)

    with patched(GpuVm, "_remove", _remove):
        yield


@contextlib.contextmanager
def leak_refs_on_failed_bind() -> Iterator[None]:
    """A multi-op VM_BIND without up-front validation that applies each op as it goes and,
    when one fails, returns the error without rolling back or dropping the references it
    took for the bind."""
    import gpuvm.drm.file
    from gpuvm.core.ops import MapRequest
    from gpuvm.core.refs import Holder
    from gpuvm.core.vm import GpuVm

    bind_holder = Holder("bind")

    def bind(self: GpuVm, requests: Any) -> Any:
        reqs = list(requests)
        self.get(bind_holder)
        for req in reqs:
            if isinstance(req, MapRequest) and req.obj is not None:
                req.obj.get(bind_holder)
        created: list[Any] = []
        for req in reqs:  # an error escapes with everything so far applied and held
            if isinstance(req, MapRequest):
                created += self.apply(self.sm_map_ops(req))
            else:
                created += self.apply(self.sm_unmap_ops(req.addr, req.range))
        for req in reqs:
            if isinstance(req, MapRequest) and req.obj is not None:
                req.obj.put(bind_holder)
        self.put(bind_holder)
        return created

    def no_check(vm: Any, reqs: Any) -> None:
        return None

    with patched(GpuVm, "bind", bind), patched(gpuvm.drm.file, "_check_bind", no_check):
        yield


@contextlib.contextmanager
def split_drops_attributes() -> Iterator[None]:
    """A REMAP that re-creates the pieces of a split VA with default flags, losing the
    per-VA attributes (a null/sparse mapping's piece becomes non-sparse)."""
    from gpuvm.core.ops import RemapOp
    from gpuvm.core.vm import GpuVm

    orig = GpuVm.apply

    def apply(self: GpuVm, ops: Any) -> Any:
        pieces = {
            (p.addr, p.range)
            for op in ops
            if isinstance(op, RemapOp)
            for p in (op.prev, op.next)
            if p is not None
        }
        created = orig(self, ops)
        for va in created:
            if (va.addr, va.range) in pieces:
                va.sparse = False
        return created

    with patched(GpuVm, "apply", apply):
        yield


# --- driver variants and broken policies -----------------------------------------------


@contextlib.contextmanager
def cache_imports_by_fd() -> Iterator[None]:
    """A PRIME import cache keyed by fd *number* instead of by dma-buf: after the fd is
    closed and the number reused for another dma-buf, the import returns the old handle."""
    import gpuvm.drm.prime

    orig = gpuvm.drm.prime.fd_to_handle
    # Per file.  Each entry keeps its file alive: were it keyed by id(file) alone, a new
    # file reusing a dead one's address would inherit its entries, and a state machine's
    # runs would depend on memory reuse (hypothesis reports that as flaky data generation).
    caches: dict[int, tuple[Any, dict[int, int]]] = {}

    def fd_to_handle(file: Any, fd: int, *rest: Any) -> int:
        cache = caches.setdefault(id(file), (file, {}))[1]
        hit = cache.get(fd)
        if hit is not None and hit in file.handles:
            file.fds.get(fd)  # still refuses a closed fd
            return hit
        h = orig(file, fd, *rest)
        cache[fd] = h
        return h

    with patched(gpuvm.drm.prime, "fd_to_handle", fd_to_handle):
        yield


@contextlib.contextmanager
def bool_handles_accepted() -> Iterator[None]:
    """The type contract without its ``bool`` check: ``gem_close(True)`` finds handle 1 and
    closes it instead of refusing the ill-typed argument (``-EINVAL``)."""
    import gpuvm.drm.file
    from gpuvm.core.args import check_u32

    def check_handle(name: str, value: object) -> int:
        if isinstance(value, bool):
            return int(value)
        return check_u32(name, value)

    with patched(gpuvm.drm.file, "check_handle", check_handle):
        yield


@contextlib.contextmanager
def plane_index_unchecked() -> Iterator[None]:
    """``Device.plane`` without its range check: a plane past the last is an
    ``IndexError`` and ``plane(-1)`` Python's last plane."""
    from gpuvm.drm.device import Device

    def plane(self: Any, index: int = 0) -> Any:
        return self.planes[index]

    with patched(Device, "plane", plane):
        yield


# --- checks that stopped checking (caught by the direct tests of the checks) ----------------


@contextlib.contextmanager
def silenced(owner: Any, name: str, needle: str) -> Iterator[None]:
    """``owner.name`` (a check) no longer complains about ``needle``: an
    ``AssertionError`` whose text contains it is swallowed, as if that ``raise`` were gone."""
    orig = getattr(owner, name)

    def check(*args: Any, **kw: Any) -> Any:
        try:
            return orig(*args, **kw)
        except AssertionError as e:
            if needle not in str(e):
                raise
            return None

    with patched(owner, name, check):
        yield


@contextlib.contextmanager
def checker_blind_to(needle: str) -> Iterator[None]:
    """The lifetime checker no longer reports findings whose kind or message contains
    ``needle`` (that verdict deleted)."""
    from gpuvm.observe.checker import LifetimeChecker

    orig = LifetimeChecker.report

    def report(self: Any, kind: str, message: str, key: str | None = None) -> Any:
        if needle == kind or needle in message:
            return None
        return orig(self, kind, message, key)

    with patched(LifetimeChecker, "report", report):
        yield


def vm_check_blind_to_zombies() -> contextlib.AbstractContextManager[None]:
    from gpuvm.core.vm import GpuVm

    return silenced(GpuVm, "check_invariants", "zombie")


def dmabuf_check_blind_to_detached() -> contextlib.AbstractContextManager[None]:
    from gpuvm.drm.dmabuf import DmaBuf

    return silenced(DmaBuf, "check_invariants", "detached or foreign")


def checker_blind_to_unattached() -> contextlib.AbstractContextManager[None]:
    return checker_blind_to("is not attached")


def checker_blind_to_job_vmas() -> contextlib.AbstractContextManager[None]:
    return checker_blind_to("is gone or unpinned")


def checker_blind_to_cycles() -> contextlib.AbstractContextManager[None]:
    return checker_blind_to("cycle")


@contextlib.contextmanager
def apply_in_fence_section() -> Iterator[None]:
    """Fence-signalling sections refuse nothing (``_no_fence`` a no-op)."""
    from gpuvm.core.vm import GpuVm

    with patched(GpuVm, "_no_fence", lambda vm, what: None):
        yield


@contextlib.contextmanager
def p2p_ignores_topology() -> Iterator[None]:
    """Every importer reaches the exporter's VRAM (``Exporter.p2p`` always true: no
    ``pci_p2pdma_distance``)."""
    from gpuvm.drm.dmabuf import Exporter

    with patched(Exporter, "p2p", lambda self, importer: True):
        yield


@contextlib.contextmanager
def reference_per_handle() -> Iterator[None]:
    """Every GEM handle holds its own buffer reference (the model before it followed
    ``drm_gem_handle_create_tail``, where all handles share one, ``Bo.handle_ref``): the
    checker sees a handle holding what no edge explains and the handles' edge without its
    reference."""
    from gpuvm.drm.file import DrmFile, handle_holder

    new, close = DrmFile._new_handle, DrmFile._close_handle

    def _new_handle(self: Any, bo: Any) -> int:
        h: int = new(self, bo)
        bo.get(handle_holder(self, h))
        if bo.refs.count(bo.handle_ref):
            bo.put(bo.handle_ref)
        return h

    def _close_handle(self: Any, handle: int) -> None:
        bo = self.handles[handle]
        if bo.handle_count == 1:
            bo.get(bo.handle_ref)  # what the unpatched close drops at the last handle
        close(self, handle)
        bo.put(handle_holder(self, handle))

    with (
        patched(DrmFile, "_new_handle", _new_handle),
        patched(DrmFile, "_close_handle", _close_handle),
    ):
        yield


class SkipUnmapAtHandleClose(GpuvmVmaRef):
    """msm 6.17 with the handle-close teardown forgotten: neither the handle's ``vma_ref``
    nor the legacy context VMA is dropped when a handle closes."""

    name = "skip_unmap_at_handle_close"

    def on_handle_close(self, file: Any, handle: int, bo: Any) -> None:
        TeardownPolicy.on_handle_close(self, file, handle, bo)


MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in (
        Mutant(
            "forget_unlink_on_remap",
            "REMAP removes the old VA but never unlinks it (its VmBo reference leaks)",
            "gpuvm_vma_ref",
            "vm_bind",
            forget_unlink_on_remap,
            pure_only=True,
        ),
        Mutant(
            "drop_vm_bo_buffer_ref",
            "a VmBo does not hold its buffer: closing the last handle frees a mapped buffer",
            "gpuvm_vma_ref",
            "vm_bind",
            drop_vm_bo_buffer_ref,
            pure_only=True,
        ),
        Mutant(
            "skip_unmap_at_handle_close",
            "handle close neither drops vma_ref nor tears the context VMA down",
            SkipUnmapAtHandleClose,
            "legacy",
        ),
        Mutant(
            "cache_imports_by_fd",
            "PRIME imports cached by fd number: a reused fd returns a stale buffer",
            "gpuvm_vma_ref",
            "prime",
            cache_imports_by_fd,
        ),
        Mutant(
            "leave_freed_node_in_va_index",
            "remove drops the VM reference but leaves the freed VA in the index",
            "gpuvm_vma_ref",
            "vm_bind",
            leave_freed_node_in_va_index,
            pure_only=True,
        ),
        Mutant(
            "leak_refs_on_failed_bind",
            "a multi-op bind whose later op fails keeps earlier ops and the bind's references",
            "gpuvm_vma_ref",
            "vm_bind",
            leak_refs_on_failed_bind,
        ),
        Mutant(
            "split_drops_attributes",
            "a split re-creates the pieces without the old VA's attributes",
            "gpuvm_vma_ref",
            "vm_bind",
            split_drops_attributes,
            pure_only=True,
        ),
        Mutant(
            "bool_handles_accepted",
            "True taken as handle 1: gem_close(True) closes handle 1 instead of refusing",
            "legacy_pre_6_17",
            "api",
            bool_handles_accepted,
        ),
        Mutant(
            "reference_per_handle",
            "each GEM handle holds its own buffer reference instead of all sharing one",
            "gpuvm_vma_ref",
            "legacy",
            reference_per_handle,
        ),
        Mutant(
            "plane_index_unchecked",
            "Device.plane indexes the list: IndexError past the last, -1 is the last",
            "gpuvm_vma_ref",
            "api",
            plane_index_unchecked,
        ),
        Mutant(
            "vm_check_blind_to_zombies",
            "GpuVm.check_invariants no longer sees zombie VmBos left on the lists",
            "gpuvm_vma_ref",
            "checks",
            vm_check_blind_to_zombies,
            "tests/test_checks_core.py::test_zombie_left_on_extobj_list",
        ),
        Mutant(
            "dmabuf_check_blind_to_detached",
            "DmaBuf.check_invariants no longer sees detached attachments on its list",
            "gpuvm_vma_ref",
            "checks",
            dmabuf_check_blind_to_detached,
            "tests/test_checks_checked.py::test_dmabuf_attachment_detached",
        ),
        Mutant(
            "checker_blind_to_unattached",
            "the lifetime checker no longer reports an import attachment not attached",
            "gpuvm_vma_ref",
            "checks",
            checker_blind_to_unattached,
            "tests/test_checks_checked.py::test_checker_attachment_not_attached",
        ),
        Mutant(
            "checker_blind_to_job_vmas",
            "the lifetime checker no longer reports an in-flight job's VMA gone or unpinned",
            "gpuvm_vma_ref",
            "checks",
            checker_blind_to_job_vmas,
            "tests/test_checks_observe.py::test_job_vma_gone",
        ),
        Mutant(
            "checker_blind_to_cycles",
            "the lifetime checker no longer reports reference cycles",
            "gpuvm_legacy_trigger",
            "checks",
            checker_blind_to_cycles,
            "tests/test_checks_observe.py::test_cycle_at_file_close",
        ),
        Mutant(
            "apply_in_fence_section",
            "apply and bind run inside a fence-signalling section",
            "gpuvm_vma_ref",
            "checks",
            apply_in_fence_section,
            "tests/test_survivors.py::test_apply_inside_fence_signalling_refused_unchanged",
            pure_only=True,
        ),
        Mutant(
            "p2p_ignores_topology",
            "every importer is p2p-capable, whatever the PCIe topology",
            "gpuvm_vma_ref",
            "checks",
            p2p_ignores_topology,
            "tests/test_survivors.py::test_p2p_needs_a_topology_path",
        ),
        Mutant(
            "weak_ref_quirk",
            "built-in policy: VmBos without buffer references (use-after-free via extobj)",
            "weak_ref_quirk",
            "legacy",
        ),
        Mutant(
            "gpuvm_legacy_trigger",
            "built-in policy: GPUVM references with teardown at buffer free (cycle leak)",
            "gpuvm_legacy_trigger",
            "legacy",
        ),
    )
}
"""Every mutant by name."""
