"""The core: a model of ``drivers/gpu/drm/drm_gpuvm.c`` op for op.

GEM objects, GPU VMs with their VA index, vm_bo links, split/merge op generation, the
extobj / evict lists, reference counts that know their holders, and the events the model
emits.  The core imports nothing outside ``gpuvm.core``: every other layer builds on it.
"""
