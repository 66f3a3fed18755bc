"""Workloads: pageflip and re-import over the driver layer reproduce the per-flip (KMS VM) and
per-frame (re-import) tables, scale with layers and resolution, split frames with
``FrameEnd``, exclude warm-up, and refuse bad parameters before building anything."""

from __future__ import annotations

import pytest

from gpuvm.core.errors import GpuvmError, ModeError
from gpuvm.observe.costs import CostCounters, UnknownResolution
from gpuvm.study.workloads import (
    UnknownPolicy,
    WorkloadError,
    WorkloadSpec,
    pageflip,
    reimport,
    run_spec,
)

FRAMES = 16

# (source, pattern): (maps, unmaps) per flip for pre-6.17, eager, 6.17 vma_ref
FLIP_SCENARIOS = {
    ("swapchain", "own"): ((0, 0), (1, 1), (0, 0)),
    ("client", "weston"): ((0, 0), (1, 1), (0, 0)),
    ("client", "wlroots"): ((0, 0), (1, 1), (0, 0)),
    ("client", "android"): ((0, 0), (1, 1), (0, 0)),
    ("foreign", "weston"): ((0, 0), (1, 1), (0, 0)),
    ("foreign", "wlroots"): ((0, 0), (1, 1), (1, 1)),
    ("foreign", "android"): ((0, 0), (1, 1), (0, 0)),
    ("foreign", "recreate"): ((1, 1), (1, 1), (1, 1)),
}
COLUMNS = ("legacy_pre_6_17", "gpuvm_eager", "gpuvm_vma_ref")


@pytest.mark.parametrize(("source", "pattern"), list(FLIP_SCENARIOS))
@pytest.mark.parametrize("column", range(3))
def test_pageflip_reproduces_section5(source: str, pattern: str, column: int) -> None:
    policy = COLUMNS[column]
    run = pageflip(
        frames=FRAMES, source=source, pattern=pattern, policy=policy, teardown=True, check=True
    )
    per = run.per_flip()
    assert (per["map_ops"], per["unmap_ops"]) == FLIP_SCENARIOS[(source, pattern)][column]
    assert per["tlb_invalidations"] == per["unmap_ops"]
    assert per["tlb_range_invalidations"] == per["unmap_ops"]  # the display VM is per-page
    assert run.steady.frames == FRAMES - run.spec.warmup
    assert run.leaks == [] and run.reports == []


def test_eager_flip_unmaps_the_whole_buffer_and_scales() -> None:
    one = pageflip("1080p", frames=FRAMES, policy="gpuvm_eager").per_flip()
    assert one["pages_mapped"] == one["pages_unmapped"] == 2025
    four_k = pageflip("4k", frames=FRAMES, layers=2, policy="gpuvm_eager").per_flip()
    assert four_k["map_ops"] == 2 and four_k["pages_unmapped"] == 2 * 8100
    assert four_k["ioctls"] == 2  # one atomic commit per layer


def test_warmup_maps_each_buffer_once_then_nothing() -> None:
    run = pageflip(frames=FRAMES, swapchain_depth=4, policy="legacy_pre_6_17")
    assert run.spec.warmup == 5
    assert run.warmup_counts.map_ops == 4 and run.steady.map_ops == 0
    assert len(run.counters.frames) == FRAMES  # FrameEnd closes every frame


def test_shared_counters_and_frame_records() -> None:
    c = CostCounters()
    a = pageflip(frames=8, policy="gpuvm_eager", counters=c)
    b = pageflip(frames=8, policy="gpuvm_vma_ref", counters=c)
    assert a.counters is b.counters is c and len(c.frames) == 16
    assert a.steady.map_ops == 4 and b.steady.map_ops == 0


def test_android_pattern_hits_the_prime_cache_every_frame() -> None:
    run = pageflip(frames=FRAMES, source="foreign", pattern="android", policy="gpuvm_vma_ref")
    names = dict(run.steady.ioctls_by_name)
    assert names["PRIME_FD_TO_HANDLE"] == run.steady.frames
    assert run.steady.vmas_created == 0


def test_legacy_trigger_leaks_are_reported_at_teardown() -> None:
    run = pageflip(frames=8, policy="gpuvm_legacy_trigger", teardown=True)
    assert run.torn_down and any("cycle" in line for line in run.leaks)


# re-import: (maps, unmaps) per frame in the consumer's context VM
REIMPORT_TABLE = {
    ("same_device", "keep_handle", "legacy", "legacy_pre_6_17"): (0, 0),
    ("same_device", "close_each_frame", "legacy", "legacy_pre_6_17"): (0, 0),
    ("foreign", "close_each_frame", "legacy", "legacy_pre_6_17"): (1, 1),
    ("same_device", "close_each_frame", "legacy", "gpuvm_vma_ref"): (1, 1),
    ("foreign", "keep_handle", "legacy", "gpuvm_vma_ref"): (0, 0),
    ("same_device", "keep_handle", "vm_bind", "gpuvm_vma_ref"): (0, 0),
    ("foreign", "close_each_frame", "vm_bind", "gpuvm_eager"): (1, 1),
}


@pytest.mark.parametrize(("source", "pattern", "consumer", "policy"), list(REIMPORT_TABLE))
def test_reimport_reproduces_section6(
    source: str, pattern: str, consumer: str, policy: str
) -> None:
    run = reimport(
        pattern, FRAMES, source=source, consumer=consumer, policy=policy, teardown=True, check=True
    )
    per = run.per_flip()
    assert (per["map_ops"], per["unmap_ops"]) == REIMPORT_TABLE[(source, pattern, consumer, policy)]
    assert per["tlb_range_invalidations"] == 0  # context VMs flush the whole context
    assert per["tlb_flushes"] == per["unmap_ops"]
    assert run.leaks == []


def test_reimport_vm_bind_needs_a_policy_with_vm_bind() -> None:
    with pytest.raises(ModeError):
        reimport(consumer="vm_bind", frames=4, policy="legacy_pre_6_17")


def test_run_spec_matches_the_functions() -> None:
    run = pageflip(frames=8, source="client", pattern="wlroots", policy="gpuvm_eager")
    again = run_spec(run.spec, "gpuvm_eager")
    assert again.spec == run.spec and again.steady == run.steady


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"resolution": "8k"}, UnknownResolution, "1080p, 1440p, 4k"),
        ({"frames": -1}, WorkloadError, "frames"),
        ({"frames": 3}, WorkloadError, "warm-up"),
        ({"layers": 0}, WorkloadError, "layers"),
        ({"refresh_hz": 0}, WorkloadError, "refresh_hz"),
        ({"source": "usb"}, WorkloadError, "source"),
        ({"source": "client", "pattern": "own"}, WorkloadError, "own"),
        ({"pattern": "wlroots"}, WorkloadError, "swapchain"),
        ({"policy": "eager"}, UnknownPolicy, "gpuvm_eager"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match) as info:
        pageflip(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, GpuvmError) and info.value.errno == 22


def test_bad_reimport_parameters_and_specs() -> None:
    with pytest.raises(WorkloadError, match="pattern"):
        reimport("sometimes")
    with pytest.raises(WorkloadError, match="consumer"):
        reimport(consumer="vulkan")
    with pytest.raises(WorkloadError, match="workload"):
        WorkloadSpec("scroll", "x", "y", "kms", "1080p", 60, 1, 3, 10, 4).validate()
