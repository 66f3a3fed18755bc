"""PRIME export/import: export cache, per-file import cache, self-import versus foreign
import, dma-buf reference edges (including the buffer/dma-buf cycle broken by the last
handle close), fd dup/close/passing, and refusals that change nothing."""

from __future__ import annotations

import errno as E

import pytest

from gpuvm import explain
from gpuvm.core.errors import BadFd, BadHandle, InvalidValue, UseAfterFree
from gpuvm.core.refs import cycles
from gpuvm.drm.device import Device, snapshot
from gpuvm.drm.dmabuf import DmaBuf, FdTable, dma_buf_holder, fd_holder
from gpuvm.drm.driver import Bo
from gpuvm.drm.file import DrmFile
from gpuvm.drm.prime import DRM_CLOEXEC, DRM_RDWR

SIZE = 1 << 20


def pair(policy: str = "gpuvm_vma_ref") -> tuple[Device, DrmFile, DrmFile]:
    dev = Device("msm", policy)
    return dev, dev.open(name="a"), dev.open(name="b")


def dmabuf_of(f: DrmFile, fd: int) -> DmaBuf:
    return f.fds.get(fd)


def test_export_cache_same_dmabuf_new_fds() -> None:
    dev, a, _ = pair()
    h = a.create_bo(SIZE)
    fd1 = a.prime_handle_to_fd(h)
    fd2 = a.prime_handle_to_fd(h, DRM_CLOEXEC | DRM_RDWR)
    d = dmabuf_of(a, fd1)
    assert fd1 != fd2 and dmabuf_of(a, fd2) is d
    bo = a.bo(h)
    assert bo.dma_buf is d and d.priv is bo
    assert a.prime_cache == {d: h}
    # edges: two fds, obj.dma_buf (3), the prime cache (6); the dma-buf holds the buffer (2)
    assert d.file_count == 4 and bo.refs.count(d) == 1
    assert len(dev.dmabufs) == 1
    dev.check_invariants()


def test_import_in_exporting_file_hits_the_cache() -> None:
    dev, a, _ = pair()
    h = a.create_bo(SIZE)
    fd = a.prime_handle_to_fd(h)
    dup = a.fds.dup(fd)
    n_bos = dev.stats["bos_created"]
    assert a.prime_fd_to_handle(fd) == h
    assert a.prime_fd_to_handle(dup) == h  # a different fd for the same dma-buf
    assert dev.stats["bos_created"] == n_bos and a.bo(h).handle_count == 1


def test_self_import_returns_the_same_buffer_without_attachment() -> None:
    dev, a, b = pair()
    h = a.create_bo(SIZE)
    fd = a.fds.send(a.prime_handle_to_fd(h), b.fds)
    hb = b.prime_fd_to_handle(fd)
    bo = a.bo(h)
    assert b.bo(hb) is bo
    d = dmabuf_of(b, fd)
    assert d.attachments == [] and bo.import_attach is None
    assert bo.handle_count == 2 and b.prime_cache == {d: hb}
    assert b.prime_fd_to_handle(b.fds.dup(fd)) == hb  # cache hit in the second file too
    dev.check_invariants()


def test_foreign_import_makes_a_new_buffer_per_importing_file() -> None:
    exporter = Device("nouveau", "gpuvm_vma_ref", name="dgpu", display=False)
    prod = exporter.open()
    h = prod.create_bo(SIZE)
    fd = prod.prime_handle_to_fd(h)
    d = dmabuf_of(prod, fd)
    dev = Device("msm", "gpuvm_vma_ref")
    a, b = dev.open(), dev.open()
    ha = a.prime_fd_to_handle(prod.fds.send(fd, a.fds))
    hb = b.prime_fd_to_handle(prod.fds.send(fd, b.fds))
    ia, ib = a.bo(ha), b.bo(hb)
    assert ia is not ib and ia is not prod.bo(h)
    assert ia.import_attach is not None and ia.import_attach.dmabuf is d
    assert ia.resv is d.resv is prod.bo(h).resv  # an import shares the exporter's reservation
    assert len(d.attachments) == 2
    assert d.refs.count(ia) == 1  # edge 4
    assert d.refs.count(dma_buf_holder(ia)) == 1  # edge 5
    # re-export of an imported buffer hands out the same dma-buf
    assert dmabuf_of(a, a.prime_handle_to_fd(ha)) is d
    dev.check_invariants()
    exporter.check_invariants()


def test_export_cycle_is_broken_by_the_last_handle_close() -> None:
    dev, a, _ = pair("legacy_pre_6_17")
    h = a.create_bo(SIZE)
    fd = a.prime_handle_to_fd(h)
    bo = a.bo(h)
    d = dmabuf_of(a, fd)
    cyc = cycles(bo)
    assert any(c[0] is bo and d in c for c in cyc), explain(bo)
    assert "[cycle]" in explain(bo)
    a.gem_close(h)
    # handle gone: obj.dma_buf dropped, the cache entry too; the fd alone keeps both alive
    assert bo.dma_buf is None and a.prime_cache == {} and not bo.freed
    assert not cycles(bo)
    assert list(d.refs.holders) == [fd_holder(a.fds, fd)]
    a.fds.close(fd)
    assert (d.released, bo.freed, dev.live_bos, dev.dmabufs) == (True, True, {}, {})


def test_fd_alone_keeps_the_buffer_and_reimport_gets_it_back() -> None:
    _, a, b = pair()
    h = a.create_bo(SIZE)
    bo = a.bo(h)
    fd = a.fds.send(a.prime_handle_to_fd(h), b.fds)
    a.gem_close(h)
    assert not bo.freed and bo.handle_count == 0
    hb = b.prime_fd_to_handle(fd)
    assert b.bo(hb) is bo and bo.dma_buf is dmabuf_of(b, fd)
    b.gem_close(hb)
    b.fds.close(fd)
    assert not bo.freed  # the exporter's process still holds its own fd
    a.fds.close_all()
    assert bo.freed


def test_cache_entry_goes_with_the_last_handle() -> None:
    exporter = Device("nouveau", "gpuvm_vma_ref", name="dgpu", display=False)
    prod = exporter.open()
    fd = prod.prime_handle_to_fd(prod.create_bo(SIZE))
    dev = Device("msm", "gpuvm_vma_ref")
    a = dev.open()
    mine = prod.fds.send(fd, a.fds)
    h1 = a.prime_fd_to_handle(mine)
    first = a.bo(h1)
    a.gem_close(h1)
    assert a.prime_cache == {} and first.freed  # the foreign buffer died with its handle
    h2 = a.prime_fd_to_handle(mine)
    assert a.bo(h2) is not first  # a new buffer object around a new attachment
    assert len(dmabuf_of(a, mine).attachments) == 1


def test_fd_table_dup_close_send() -> None:
    _, a, _ = pair()
    fd = a.prime_handle_to_fd(a.create_bo(SIZE))
    d = dmabuf_of(a, fd)
    n = d.file_count
    fd2 = a.fds.dup(fd)
    other = FdTable("other")
    fd3 = a.fds.send(fd2, other)
    assert d.file_count == n + 2 and other.get(fd3) is d
    a.fds.close(fd2)
    other.close(fd3)
    assert d.file_count == n
    with pytest.raises(BadFd):
        a.fds.close(fd2)
    assert fd2 == a.fds.dup(fd)  # the lowest free number is reused


def test_refused_prime_calls_change_nothing() -> None:
    dev, a, b = pair()
    h = a.create_bo(SIZE)
    fd = a.prime_handle_to_fd(h)
    before = snapshot(dev)
    with pytest.raises(BadHandle) as e1:
        a.prime_handle_to_fd(h + 7)
    assert e1.value.errno == E.ENOENT
    with pytest.raises(InvalidValue):
        a.prime_handle_to_fd(h, flags=0o777)
    with pytest.raises(BadFd) as e2:
        b.prime_fd_to_handle(fd)  # fd numbers are per process
    assert e2.value.errno == E.EBADF
    with pytest.raises(BadHandle):
        a.gem_close(h + 7)
    assert snapshot(dev) == before


def test_released_dmabuf_cannot_be_used() -> None:
    _, a, _ = pair()
    h = a.create_bo(SIZE)
    fd = a.prime_handle_to_fd(h)
    d = dmabuf_of(a, fd)
    a.gem_close(h)
    a.fds.close(fd)
    assert d.released
    with pytest.raises(UseAfterFree):
        d.get("someone")


def test_vma_ref_counts_handles_and_exports() -> None:
    dev, a, b = pair("gpuvm_vma_ref")
    h = a.create_bo(SIZE)
    bo = a.bo(h)
    assert isinstance(bo, Bo) and bo.vma_ref.total == 1
    fd = a.fds.send(a.prime_handle_to_fd(h), b.fds)
    assert bo.vma_ref.total == 2  # handle + export
    hb = b.prime_fd_to_handle(fd)
    assert bo.vma_ref.total == 3  # + the second file's handle
    b.gem_close(hb)
    a.gem_close(h)
    assert bo.vma_ref.total == 1  # the export: the dma-buf is still open in b's process
    b.fds.close(fd)
    assert bo.vma_ref.total == 1 and not bo.freed  # a's process still has its fd
    a.fds.close_all()
    assert (bo.freed, bo.vma_ref.total, dev.live_bos) == (True, 0, {})
