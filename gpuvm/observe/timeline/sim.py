"""The vblank timeline: a SimPy discrete-event simulation of a compositor's atomic commits on
each CRTC, with the DRM atomic helper's ordering (read at torvalds/linux 2d705c0b3676,
``drivers/gpu/drm/drm_atomic_helper.c``):

* ``drm_atomic_helper_commit``: ``prepare_planes`` (``prepare_fb``: pin and map) runs in the
  ioctl, then ``stall_checks`` waits for the ``cleanup_done`` of the commit *two* back on the
  CRTC; a nonblocking commit is queued to a worker, a blocking one runs ``commit_tail``
  in the ioctl.
* ``commit_tail``: ``wait_for_fences`` (the render job's fence), ``wait_for_dependencies``
  (the predecessor's ``hw_done`` and ``flip_done``), the hardware commit (``hw_done``), the
  flip latched at the next vblank (``flip_done``), then ``cleanup_planes`` (``cleanup_fb``:
  unpin, an eager policy's unmap and TLB invalidation) and ``cleanup_done``.

The compositor is Weston's repaint loop: it repaints at ``last flip + period - repaint
window`` (at once if that is past), submits the render job (after an optional VM_BIND job)
on the GPU ring and commits with the render fence as in-fence.  A workload that closes the
handles of the buffers it flips (``gem_closes``) does so in the ioctl path before the
commit; ``msm_gem_close`` (msm_gem.c, 6.17 on) then blocks until every fence of the buffer
has signalled, here the frame's render fence, unless the context is VM_BIND.  A vblank at
which a CRTC latched no new frame is a missed vblank (a dropped frame)."""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import attrs
import simpy

from gpuvm.observe.timeline.params import TimelineParams

__all__ = ["Span", "Timeline", "simulate"]

_EPS = 1e-9


@attrs.frozen(slots=True)
class Span:
    """One interval (``end > start``) or instant (``end == start``) on a track, in ms."""

    track: str
    name: str
    start: float
    end: float
    frame: int = -1
    crtc: int = 0


@attrs.define(slots=True, eq=False)
class _Commit:
    frame: int
    crtc: int
    ioctl_at: float
    fence: simpy.Event
    hw_done: simpy.Event
    flip_done: simpy.Event
    cleanup_done: simpy.Event
    prev: _Commit | None
    flip_at: float = math.nan
    vblank: int = -1


@attrs.frozen(slots=True)
class Timeline:
    """A finished simulation: its parameters, every span, and per-frame flips."""

    params: TimelineParams
    spans: tuple[Span, ...]
    flips: tuple[tuple[int, int, float, float, int], ...]
    """(crtc, frame, ioctl_at ms, flip_at ms, vblank index) per commit."""
    blocked: tuple[float, ...] = ()
    """Milliseconds each commit's ioctl path was blocked in GEM_CLOSE, in commit order."""

    @property
    def vblanks(self) -> int:
        """Vblanks per CRTC from the first to the last flip's (inclusive of both ends)."""
        return max(f[4] for f in self.flips)

    def missed_vblanks(self, crtc: int = 0) -> int:
        """Vblanks, from the first up to the last flip, at which ``crtc`` latched no new frame."""
        idx = sorted(f[4] for f in self.flips if f[0] == crtc)
        return idx[-1] - len(idx)

    def dropped_per_s(self) -> float:
        """Missed vblanks per second, averaged over the CRTCs."""
        p = self.params
        total = sum(self.missed_vblanks(c) for c in range(p.crtcs))
        last = max(f[4] for f in self.flips)
        return total / p.crtcs / (last * p.period_ms / 1000.0)

    def flip_latencies(self) -> list[float]:
        """Commit ioctl to scanout, ms, per commit."""
        return [f[3] - f[2] for f in self.flips]

    def metrics(self) -> dict[str, float]:
        """The headline numbers of this setting."""
        p = self.params
        lat = self.flip_latencies()
        return {
            "dropped_frames_per_s": round(self.dropped_per_s(), 3),
            "missed_vblanks": sum(self.missed_vblanks(c) for c in range(p.crtcs)),
            "flip_latency_ms_mean": round(sum(lat) / len(lat), 4),
            "flip_latency_ms_max": round(max(lat), 4),
            "commit_tail_cpu_ms": round(p.layers * p.tail_ms, 4),
            "ioctl_cpu_ms": round(p.ioctl_ms + p.layers * p.prepare_ms, 4),
            "ioctl_blocked_ms": round(sum(self.blocked) / len(self.blocked), 4)
            if self.blocked
            else 0.0,
        }


def simulate(params: TimelineParams) -> Timeline:
    """Run ``params.frames`` commits on each CRTC and return the :class:`Timeline`."""
    env = simpy.Environment()
    spans: list[Span] = []
    flips: list[tuple[int, int, float, float, int]] = []
    p = params
    period = p.period_ms
    gpu = simpy.Resource(env, capacity=1)
    binder = simpy.Resource(env, capacity=1)
    done = env.event()
    finished = [0]
    blocked: list[tuple[int, int, float]] = []

    def gpu_job(frame: int, crtc: int, fence: simpy.Event) -> Generator[Any, Any, None]:
        if p.vm_bind_ms > 0:
            with binder.request() as req:
                yield req
                t = env.now
                yield env.timeout(p.vm_bind_ms)
                spans.append(Span("vm_bind", f"VM_BIND f{frame}", t, env.now, frame, crtc))
        with gpu.request() as req:
            yield req
            t = env.now
            yield env.timeout(p.render_ms)
            spans.append(Span("gpu_ring", f"render f{frame}", t, env.now, frame, crtc))
        fence.succeed()

    def tail(c: _Commit) -> Generator[Any, Any, None]:
        worker = f"commit_worker{c.crtc}"
        t = env.now
        yield c.fence
        if c.prev is not None:
            yield c.prev.hw_done & c.prev.flip_done
        if env.now > t + _EPS:
            spans.append(Span(worker, f"wait f{c.frame}", t, env.now, c.frame, c.crtc))
        c.hw_done.succeed()
        n = math.floor(env.now / period + _EPS) + 1
        t = env.now
        yield env.timeout(n * period - env.now)
        spans.append(Span(worker, f"flip f{c.frame}", t, env.now, c.frame, c.crtc))
        c.flip_at, c.vblank = env.now, n
        flips.append((c.crtc, c.frame, c.ioctl_at, env.now, n))
        spans.append(
            Span(f"crtc{c.crtc}", f"scanout f{c.frame}", env.now, env.now, c.frame, c.crtc)
        )
        c.flip_done.succeed()
        cost = p.layers * p.tail_ms
        if cost > 0:
            t = env.now
            yield env.timeout(cost)
            spans.append(Span(worker, f"cleanup f{c.frame}", t, env.now, c.frame, c.crtc))
        c.cleanup_done.succeed()

    def worker(queue: simpy.Store) -> Generator[Any, Any, None]:
        while True:
            c = yield queue.get()
            yield env.process(tail(c))

    def compositor(crtc: int) -> Generator[Any, Any, None]:
        queue = simpy.Store(env)
        if p.nonblocking and p.serial_worker:
            env.process(worker(queue))
        prev: _Commit | None = None
        prevprev: _Commit | None = None
        next_repaint = 0.0
        for k in range(p.frames):
            if next_repaint > env.now:
                yield env.timeout(next_repaint - env.now)
            t0 = env.now
            fence = env.event()
            env.process(gpu_job(k, crtc, fence))
            c = _Commit(k, crtc, t0, fence, env.event(), env.event(), env.event(), prev)
            waited = 0.0
            if p.close_blocks and not fence.triggered:
                yield fence  # GEM_CLOSE: dma_resv_wait_timeout(BOOKKEEP) on the new buffer
                waited = env.now - t0
                spans.append(Span(f"ioctl{crtc}", f"GEM_CLOSE wait f{k}", t0, env.now, k, crtc))
            blocked.append((k, crtc, waited))
            cpu = p.ioctl_ms + p.layers * p.prepare_ms
            if cpu > 0:
                yield env.timeout(cpu)
            if prevprev is not None and not prevprev.cleanup_done.triggered:
                yield prevprev.cleanup_done  # stall_checks
            if not p.nonblocking:
                yield env.process(tail(c))  # commit_tail in the ioctl
            t1 = t0 + waited  # the atomic commit ioctl, after the GEM_CLOSE ioctls
            spans.append(Span(f"ioctl{crtc}", f"commit f{k}", t1, max(env.now, t1), k, crtc))
            if p.nonblocking and p.serial_worker:
                yield queue.put(c)
            elif p.nonblocking:
                env.process(tail(c))
            yield c.flip_done  # the page-flip event
            next_repaint = c.flip_at + period - p.repaint_window_ms
            prevprev, prev = prev, c
        if prev is not None:
            yield prev.cleanup_done
        finished[0] += 1
        if finished[0] == p.crtcs:
            done.succeed()

    for crtc in range(p.crtcs):
        env.process(compositor(crtc))
    env.run(until=done)
    last = max(f[4] for f in flips)
    for crtc in range(p.crtcs):
        got = {f[4] for f in flips if f[0] == crtc}
        for n in range(1, last + 1):
            spans.append(Span(f"crtc{crtc}", f"vblank {n}", n * period, n * period, -1, crtc))
            if n not in got and n >= min(got):
                spans.append(Span(f"crtc{crtc}", "dropped", n * period, n * period, -1, crtc))
    spans.sort(key=lambda s: (s.start, s.track, s.name))
    flips.sort()
    blocked.sort()
    return Timeline(p, tuple(spans), tuple(flips), tuple(b[2] for b in blocked))
