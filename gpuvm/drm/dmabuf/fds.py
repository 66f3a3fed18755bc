"""A process's file-descriptor table for dma-buf fds (``dma_buf_fd``, ``dma_buf_get``,
``dup``, ``close``, passing an fd over ``SCM_RIGHTS``) and the holder of an fd's file
reference (edge 1).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from gpuvm.core.errors import BadFd
from gpuvm.core.refs import Holder

if TYPE_CHECKING:
    from gpuvm.drm.dmabuf.buffer import DmaBuf

__all__ = ["FdTable", "fd_holder"]


def fd_holder(table: FdTable, fd: int) -> Holder:
    """The holder of edge 1: one open fd of a table."""
    return Holder(f"fd {fd}", who=table)


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

    def lseek(self, fd: int, offset: int, whence: int) -> int:
        """``lseek`` on a dma-buf fd (``dma_buf_llseek``): ``(0, SEEK_END)`` gives the
        size; ``-EBADF`` if not open, ``-EINVAL`` for anything but offset 0 with
        ``SEEK_SET`` / ``SEEK_END``."""
        return self.get(fd).llseek(offset, whence)

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
