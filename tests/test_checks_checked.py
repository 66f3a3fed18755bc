"""The checks check themselves: each ``raise`` of a ``check_invariants`` (DrmFile, DmaBuf,
RefCount.check) and the lifetime checker's verdicts the issue named (an attachment not
attached, a dma-buf rule broken, a hazard) fire on a state corrupted directly, not through
the API, with the precise complaint.  A check that stopped detecting fails here."""

from __future__ import annotations

import pytest

from gpuvm import Device, Holder
from gpuvm.core.refs import RefCount
from gpuvm.drm.dmabuf import DmaBuf, dma_buf_holder
from gpuvm.drm.driver import Bo
from gpuvm.drm.file import DrmFile
from gpuvm.observe.checker import LifetimeChecker

P = 4096


def _file() -> tuple[Device, DrmFile, int]:
    dev = Device("msm", "gpuvm_vma_ref")
    f = dev.open(name="a")
    return dev, f, f.create_bo(P)


def _exported() -> tuple[Device, DrmFile, DrmFile, int, DmaBuf]:
    dev = Device("msm", "gpuvm_vma_ref")
    a, b = dev.open(name="a"), dev.open(name="b")
    h = a.create_bo(P)
    fd = a.prime_handle_to_fd(h)
    d = a.fds.get(fd)
    hb = b.prime_fd_to_handle(a.fds.send(fd, b.fds))
    return dev, a, b, hb, d


def test_clean_states_pass() -> None:
    dev, a, b, _, d = _exported()
    a.check_invariants()
    b.check_invariants()
    d.check_invariants()
    dev.check_invariants()


# --- DrmFile.check_invariants -------------------------------------------------------------


def test_file_handle_names_freed_bo() -> None:
    _, f, h = _file()
    f.bo(h).freed = True
    with pytest.raises(AssertionError, match=f"handle {h} names freed"):
        f.check_invariants()


def test_file_handle_does_not_hold_once() -> None:
    _, f, h = _file()
    bo = f.bo(h)
    bo.refs.holders[bo.handle_ref] += 1  # drm_gem_handle_create_tail takes ONE for all handles
    with pytest.raises(AssertionError, match=rf"\(handle {h}\) do not hold it once"):
        f.check_invariants()


def test_file_handle_counts_mismatch() -> None:
    _, f, h = _file()
    f.handle_counts[f.bo(h)] = 2
    with pytest.raises(AssertionError, match="handle counts"):
        f.check_invariants()


def test_file_prime_cache_stale() -> None:
    _, a, _, _, d = _exported()
    h = a.prime_cache[d]
    a.prime_cache[d] = h + 100
    with pytest.raises(AssertionError, match="is stale"):
        a.check_invariants()


def test_file_prime_cache_names_other_bo() -> None:
    _, a, _, _, d = _exported()
    other = a.create_bo(P)
    a.prime_cache[d] = other
    with pytest.raises(AssertionError, match=f"-> {other} names"):
        a.check_invariants()


def test_file_prime_cache_holds_no_reference() -> None:
    _, a, _, _, d = _exported()
    del d.refs.holders[Holder("prime cache", who=a)]
    with pytest.raises(AssertionError, match="holds no reference"):
        a.check_invariants()


def test_file_mode_without_vm() -> None:
    _, f, _ = _file()
    f.get_param()  # a legacy file: a kernel-managed VM exists now
    assert f.vm is not None
    f.vm = None  # legacy mode but the VM gone
    with pytest.raises(AssertionError, match="mode legacy with vm None"):
        f.check_invariants()


# --- RefCount.check -----------------------------------------------------------------------


def test_refcount_total_mismatch() -> None:
    _, f, h = _file()
    refs: RefCount = f.bo(h).refs
    refs.check()
    refs.total += 1
    with pytest.raises(AssertionError, match=r"total .* != "):
        refs.check()


# --- DmaBuf.check_invariants --------------------------------------------------------------


def test_dmabuf_released_with_references() -> None:
    _, _, _, _, d = _exported()
    d.released = True
    with pytest.raises(AssertionError, match="released with attachments or references"):
        d.check_invariants()


def test_dmabuf_alive_without_reference() -> None:
    _, _, _, _, d = _exported()
    d.refs.holders.clear()
    d.refs.total = 0
    with pytest.raises(AssertionError, match="alive with no file reference"):
        d.check_invariants()


def test_dmabuf_recorded_violation() -> None:
    _, _, _, _, d = _exported()
    d.violations.append("pinned backing moved")
    with pytest.raises(AssertionError, match="pinned backing moved"):
        d.check_invariants()


def _attached() -> tuple[DmaBuf, Bo]:
    """A buffer of one device imported by another (a real attachment)."""
    dev = Device("msm", "gpuvm_vma_ref")
    other = Device("nouveau", "gpuvm_vma_ref", name="dgpu", display=False)
    a, b = dev.open(name="a"), other.open(name="b")
    fd = a.prime_handle_to_fd(a.create_bo(P))
    hb = b.prime_fd_to_handle(a.fds.send(fd, b.fds))
    bo = b.bo(hb)
    assert bo.import_attach is not None
    _DEVICES[id(bo)] = (dev, other)
    return bo.import_attach.dmabuf, bo


_DEVICES: dict[int, tuple[Device, Device]] = {}


def _checker(bo: Bo) -> LifetimeChecker:
    exporter, importer = _DEVICES[id(bo)]
    checker = LifetimeChecker(exporter)
    checker.watch(importer)
    assert checker.check() == []
    return checker


def test_dmabuf_attachment_detached() -> None:
    d, bo = _attached()
    assert bo.import_attach is not None
    d.check_invariants()
    bo.import_attach.detached = True
    with pytest.raises(AssertionError, match="detached or foreign"):
        d.check_invariants()


def test_dmabuf_attachment_negative_count() -> None:
    d, bo = _attached()
    assert bo.import_attach is not None
    bo.import_attach.mappings = -1
    with pytest.raises(AssertionError, match="negative count"):
        d.check_invariants()


def test_dmabuf_attachment_map_pins_exceed_mappings() -> None:
    d, bo = _attached()
    att = bo.import_attach
    assert att is not None
    att.map_pins = att.mappings + 1
    with pytest.raises(AssertionError, match="map pins >"):
        d.check_invariants()


def test_dmabuf_static_attachment_pinned() -> None:
    d, bo = _attached()
    att = bo.import_attach
    assert att is not None
    att.dynamic = False
    att.ops = None
    att.pins = 1
    with pytest.raises(AssertionError, match="static attachment pinned or p2p"):
        d.check_invariants()


# --- LifetimeChecker verdicts -------------------------------------------------------------


def test_checker_attachment_not_attached() -> None:
    d, bo = _attached()
    checker = _checker(bo)
    att = bo.import_attach
    assert att is not None
    d.attachments.remove(att)
    found = checker.check()
    assert [v.kind for v in found] == ["refcount"]
    assert "is not attached" in found[0].message


def test_checker_dmabuf_rule_broken() -> None:
    d, bo = _attached()
    checker = _checker(bo)
    d.violations.append("mapping left across a move")
    found = checker.check()
    assert any(v.kind == "dma-buf" and "mapping left across a move" in v.message for v in found)
    assert not checker.ok


def test_checker_imported_uses_released_dmabuf() -> None:
    d, bo = _attached()
    checker = _checker(bo)
    d.released = True
    found = checker.check()
    assert any(v.kind == "use-after-free" and "uses released" in v.message for v in found)


def test_checker_derived_pointer_hazard_is_not_fatal() -> None:
    d, bo = _attached()
    checker = _checker(bo)
    bo.dma_buf = None  # as the last handle close does, with its reference
    holder = dma_buf_holder(bo)
    d.refs.total -= d.refs.holders.pop(holder)
    found = checker.check()
    assert [v.kind for v in found] == ["hazard"]
    assert "derived pointer" in found[0].message and checker.ok
