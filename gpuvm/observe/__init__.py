"""Observers: events in, numbers and verdicts out.

Cost counters and presets (``costs``), the lifetime checker (``checker``) and the trace
recorder / replayer (``trace``).  Observers read the model's events and state and never
change them; they may import ``gpuvm.core``, ``legacy`` and ``gpuvm.drm``.
"""
