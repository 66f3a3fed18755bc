"""The legacy path: a kernel-managed address space where a buffer owns its VMAs and a VMA
holds no reference on its buffer (msm before 6.17, nouveau's old ioctls).

``aspace`` is the address space and its first-fit iova allocator, ``vma`` the BO-owned
VMAs and the buffer's VMA list, ``path`` the legacy operations (get/set iova, pin, unpin,
evict, purge, close; buffer free tears the VMAs down).
"""

from legacy.aspace import PAGE_SIZE, AddressSpace, first_fit
from legacy.path import close_vma, evict, get_iova, pin, pin_all, purge, set_iova, unpin
from legacy.vma import BoVmas, KernelVm, KernelVma, LegacyVma, bo_vmas

__all__ = [
    "PAGE_SIZE",
    "AddressSpace",
    "BoVmas",
    "KernelVm",
    "KernelVma",
    "LegacyVma",
    "bo_vmas",
    "close_vma",
    "evict",
    "first_fit",
    "get_iova",
    "pin",
    "pin_all",
    "purge",
    "set_iova",
    "unpin",
]
