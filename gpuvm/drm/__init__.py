"""The driver layer: the ioctl-level surface of a DRM device.

Devices, DRM files (handles, PRIME cache, the path chosen once per file), dma-buf and
attachments, TTM-like placement, KMS framebuffers and planes, driver flavours and the
teardown policies.  It may import ``gpuvm.core`` and ``legacy``; nothing above it.
"""
