"""The legacy path: a kernel-managed address space where a buffer owns its VMAs and a VMA
holds no reference on its buffer (msm before 6.17, nouveau's old ioctls)."""
