"""Studies: the questions asked of the model, and their answers.

Workloads over the driver layer, the design-study runner (``runner``), reports, the dma-buf
sharing scenarios, the documented split/merge cases and the ``gpuvm`` command line
(``cli``).  The top of the house: it may import every layer below (core, legacy, drm,
observe), and nothing in the library imports it.
"""
