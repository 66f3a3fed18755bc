"""dma-bufs, their attachments, and the file-descriptor tables that hold them
(``struct dma_buf``, ``struct dma_buf_attachment``, a process's fd table).

Kept minimal on purpose: what PRIME export/import needs (the file references and who holds
each, the exporter's buffer and release operation, attachments).  Placement and dynamic
sharing (pin, map, move_notify) extend :class:`DmaBuf` and :class:`Attachment` here; the
seams are :attr:`DmaBuf.release_hooks` (the exporter's ``release`` op) and
:attr:`DmaBuf.attach_hooks` / :attr:`DmaBuf.detach_hooks` (the exporter's ``attach`` /
``detach`` ops).

Reference edges (``dmabuf.md`` section 1), each recorded with its holder:

1. an open fd -> DmaBuf (``Holder("fd N", who=table)``);
2. DmaBuf -> exporter buffer (holder: the DmaBuf), dropped at release;
3. exporter ``obj.dma_buf`` -> DmaBuf (``Holder("obj.dma_buf", who=buffer)``), dropped when
   the buffer's last handle closes: edges 2 and 3 form the deliberate cycle;
4. imported buffer -> DmaBuf (holder: the imported buffer), dropped at its free;
5. imported ``obj.dma_buf`` -> DmaBuf (same holder kind as 3);
6. a file's PRIME cache entry -> DmaBuf (``Holder("prime cache", who=file)``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import attrs

from gpuvm.errors import BadFd, UseAfterFree
from gpuvm.events import EventBus, Freed, RefGot, RefPut
from gpuvm.gem import GemObject, Resv
from gpuvm.refs import Holder, RefCount

__all__ = ["Attachment", "DmaBuf", "FdTable", "dma_buf_holder", "fd_holder"]

_ids = itertools.count(1)


def dma_buf_holder(obj: GemObject) -> Holder:
    """The holder of edges 3 and 5: a buffer's ``obj->dma_buf`` pointer."""
    return Holder("obj.dma_buf", who=obj)


def fd_holder(table: FdTable, fd: int) -> Holder:
    """The holder of edge 1: one open fd of a table."""
    return Holder(f"fd {fd}", who=table)


@attrs.define(slots=True, eq=False, repr=False)
class Attachment:
    """``struct dma_buf_attachment``: an importer device attached to a dma-buf.  It holds
    no dma-buf reference (the importer's buffer does, edge 4)."""

    dmabuf: DmaBuf
    importer: object
    dynamic: bool = False
    peer2peer: bool = False
    detached: bool = attrs.field(default=False, init=False)

    def __repr__(self) -> str:
        return f"Attachment({self.dmabuf.name} -> {self.importer!r})"


@attrs.define(slots=True, eq=False, repr=False)
class DmaBuf:
    """``struct dma_buf`` exported by ``exporter`` around its buffer ``priv``.

    ``refs`` counts the file references (``file_count``) with their holders; at zero the
    dma-buf is released: the release hooks run (the exporter drops edge 2 there) and a
    ``Freed`` event is emitted.  Attachments must be gone by then.
    """

    priv: GemObject
    exporter: object
    size: int
    resv: Resv
    bus: EventBus = attrs.field(factory=EventBus)
    name: str = ""
    id: int = attrs.field(factory=lambda: next(_ids))
    refs: RefCount = attrs.field(init=False)
    attachments: list[Attachment] = attrs.field(init=False, factory=list)
    released: bool = attrs.field(init=False, default=False)
    release_hooks: list[Callable[[DmaBuf], None]] = attrs.field(init=False, factory=list)
    attach_hooks: list[Callable[[Attachment], None]] = attrs.field(init=False, factory=list)
    detach_hooks: list[Callable[[Attachment], None]] = attrs.field(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        if not self.name:
            self.name = f"dmabuf{self.id}"
        self.refs = RefCount(self, on_zero=self._release)

    def __repr__(self) -> str:
        return f"DmaBuf {self.name}" + (" (released)" if self.released else "")

    @property
    def file_count(self) -> int:
        return self.refs.total

    def keepers(self) -> Iterable[object]:
        return list(self.refs.holders)

    def check_alive(self, what: str = "access") -> None:
        if self.released:
            raise UseAfterFree(f"{what} on released {self!r}")

    def get(self, holder: object) -> DmaBuf:
        """``get_dma_buf`` on behalf of ``holder``."""
        self.check_alive("get")
        self.refs.get(holder)
        if self.bus.route[RefGot]:
            self.bus.emit(RefGot(self, holder))
        return self

    def put(self, holder: object) -> None:
        """``dma_buf_put``; releases the dma-buf at zero."""
        self.check_alive("put")
        self.refs.check_put(holder)
        if self.bus.route[RefPut]:
            self.bus.emit(RefPut(self, holder))
        self.refs.put(holder)

    def _release(self) -> None:
        if self.attachments:
            raise AssertionError(f"{self!r} released with attachments {self.attachments}")
        self.released = True
        for hook in list(self.release_hooks):
            hook(self)
        self.bus.emit(Freed(self))

    def attach(self, importer: object) -> Attachment:
        """``dma_buf_attach`` (static importer): a new attachment for ``importer``."""
        self.check_alive("attach")
        att = Attachment(self, importer)
        for hook in self.attach_hooks:
            hook(att)
        self.attachments.append(att)
        return att

    def detach(self, att: Attachment) -> None:
        """``dma_buf_detach``."""
        if att.detached or att not in self.attachments:
            raise AssertionError(f"detach of {att!r}, which is not attached")
        for hook in self.detach_hooks:
            hook(att)
        self.attachments.remove(att)
        att.detached = True


class FdTable:
    """A process's file-descriptor table, for dma-buf fds: install (lowest free number from
    3), dup, close, and passing an fd to another process (``SCM_RIGHTS``)."""

    __slots__ = ("fds", "name")

    FIRST_FD = 3

    def __init__(self, name: str = "proc") -> None:
        self.name = name
        self.fds: dict[int, DmaBuf] = {}

    def __repr__(self) -> str:
        return f"FdTable({self.name})"

    def keepers(self) -> Iterable[object]:
        """A process's fd table is a root."""
        return ()

    def _lowest_free(self) -> int:
        fd = self.FIRST_FD
        while fd in self.fds:
            fd += 1
        return fd

    def install(self, dmabuf: DmaBuf) -> int:
        """``dma_buf_fd``: a new fd holding one file reference."""
        dmabuf.check_alive("install")
        fd = self._lowest_free()
        dmabuf.get(fd_holder(self, fd))
        self.fds[fd] = dmabuf
        return fd

    def get(self, fd: int) -> DmaBuf:
        """``dma_buf_get``: the dma-buf behind ``fd`` (``-EBADF`` if not open)."""
        d = self.fds.get(fd)
        if d is None:
            raise BadFd(f"fd {fd} is not open in {self.name}")
        return d

    def dup(self, fd: int) -> int:
        """``dup``: another fd for the same dma-buf."""
        return self.install(self.get(fd))

    def send(self, fd: int, to: FdTable) -> int:
        """Pass ``fd`` to another process (``SCM_RIGHTS``): a new fd there."""
        return to.install(self.get(fd))

    def close(self, fd: int) -> None:
        """``close``: drop the fd's file reference (may release the dma-buf)."""
        d = self.get(fd)
        del self.fds[fd]
        d.put(fd_holder(self, fd))

    def close_all(self) -> None:
        for fd in sorted(self.fds):
            self.close(fd)
