"""Ingesting kernel tracepoint logs (``trace-cmd report`` / ``trace_pipe`` text of the xe,
amdgpu, msm, dma-buf and ``drm_vblank_event`` tracepoints) into a model trace; see
``docs/ingest.md``.
"""

from gpuvm.study.ingest.parsed import IngestError, ParsedEvent, ParsedLog, parse_log
from gpuvm.study.ingest.rebuild import DEFAULT_POLICY, reconstruct
from gpuvm.study.ingest.result import Reconstruction

__all__ = [
    "DEFAULT_POLICY",
    "IngestError",
    "ParsedEvent",
    "ParsedLog",
    "Reconstruction",
    "parse_log",
    "reconstruct",
]
