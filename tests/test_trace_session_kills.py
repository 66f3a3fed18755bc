"""The trace session's bookkeeping, pinned by record-and-replay tests written against the
survivors of the sampled mutmut run (docs/reliability.md, "Mutation score"): fresh ids
around ids given by hand, ids by kind, the core ``vm`` / ``map`` ops (``drm_gpuvm_init``
with the session's bus and the id as name, ``drm_gpuvm_sm_map`` of the named object),
event fields as JSON values, a caller's policy table and the caps presets."""

from __future__ import annotations

import pytest

from gpuvm.core.events import Mapped
from gpuvm.drm import caps
from gpuvm.drm.policies import GpuvmEager
from gpuvm.observe.trace import Session, replay
from gpuvm.observe.trace.schema import CAPS_PRESETS, _caps_presets

P = 4096


def test_fresh_id_skips_an_id_given_by_hand() -> None:
    """A defining op without an id gets the lowest free one of its kind."""
    s = Session()
    assert s.do("vm", id="v0", start=0, range=16 * P) == "v0"
    assert s.do("vm", start=0, range=16 * P) == "v1"
    assert s.do("vm", id="v3", start=0, range=16 * P) == "v3"
    assert s.do("vm", start=0, range=16 * P) == "v2"
    assert s.do("vm", start=0, range=16 * P) == "v4"


def test_ids_by_kind_in_definition_order() -> None:
    s = Session()
    v = s.do("vm", start=0, range=16 * P)
    g0 = s.do("gem", size=P)
    p = s.do("process")
    g1 = s.do("gem", size=P)
    assert s.ids("gem") == [g0, g1]
    assert s.ids("vm") == [v]
    assert s.ids("table") == [p]
    assert s.ids("file") == []


def test_vm_op_builds_the_vm_on_the_session_bus_named_by_its_id() -> None:
    s = Session()
    v = s.do("vm", start=0, range=64 * P)
    vm = s.obj(v)
    assert vm.name == v and repr(vm) == f"GpuVm({v})"
    assert vm.bus is s.bus
    o = s.do("gem", size=4 * P)
    s.do("map", vm=v, addr=0, range=P, obj=o)
    assert [e for e in s.log.events if isinstance(e, Mapped)] == [Mapped(vm, 0, P, s.obj(o), 0)]


def test_map_op_maps_the_named_object_and_replays() -> None:
    """``map`` with an object maps that object (a VA linked to its VmBo); without one,
    an object-less VA.  The recorded trace replays to the same tree."""
    s = Session()
    v = s.do("vm", start=0, range=64 * P)
    o = s.do("gem", size=4 * P)
    s.do("map", vm=v, addr=0, range=2 * P, obj=o, offset=P)
    s.do("map", vm=v, addr=8 * P, range=P)
    layout = [(va.addr, va.range, va.obj, va.offset) for va in s.obj(v)]
    assert layout == [(0, 2 * P, s.obj(o), P), (8 * P, P, None, 0)]
    (va, _) = list(s.obj(v))
    assert va.vm_bo is not None and va.vm_bo.obj is s.obj(o)
    again = replay(s.dumps()).session
    assert [(va.addr, va.range, va.obj and va.obj.name, va.offset) for va in again.obj(v)] == [
        (0, 2 * P, o, P),
        (8 * P, P, None, 0),
    ]


def test_event_fields_show_model_objects_by_their_repr() -> None:
    s = Session(text_log=True)
    v = s.do("vm", start=0, range=64 * P)
    o = s.do("gem", size=4 * P)
    s.do("map", vm=v, addr=0, range=P, obj=o)
    mapped = [f for f in s.fields if f["kind"] == "Mapped"]
    assert mapped == [
        {
            "kind": "Mapped",
            "vm": f"GpuVm({v})",
            "addr": 0,
            "range": P,
            "obj": f"GEM {o}",
            "offset": 0,
        }
    ]


class _Custom(GpuvmEager):
    name = "custom_eager"


def test_device_op_takes_the_callers_policy_table() -> None:
    """``Session(policies=...)`` / ``replay(policies=...)``: a device line's policy name
    is looked up in the caller's table first."""
    s = Session(policies={"mine": _Custom})
    d = s.do("device", flavour="msm", policy="mine")
    assert type(s.obj(d).policy) is _Custom
    again = replay(s.dumps(), policies={"mine": _Custom}).session
    assert type(again.obj(d).policy) is _Custom


def test_caps_presets_are_the_caps_functions_of_their_names() -> None:
    """Every ``caps`` name a trace may give is the :mod:`gpuvm.drm.caps` preset of that
    name (the table is built once, at import)."""
    table = _caps_presets()
    assert list(table) == ["amdgpu_dgpu", "i915_igpu", "xe_igpu", "bochs", "qxl", "soc_display"]
    assert table == CAPS_PRESETS
    for name, preset in table.items():
        assert preset is getattr(caps, name)


@pytest.mark.parametrize("preset", ["i915_igpu", "amdgpu_dgpu"])
def test_device_with_caps_preset_replays(preset: str) -> None:
    s = Session()
    d = s.do("device", flavour="nouveau", policy="gpuvm_vma_ref", display=False, caps=preset)
    dev = s.obj(d)
    assert dev.caps == getattr(caps, preset)(d)
    assert replay(s.dumps()).session.obj(d).caps == dev.caps


def test_vm_op_reserves_the_kernel_node() -> None:
    s = Session()
    v = s.do("vm", start=0, range=64 * P, reserve_start=4 * P, reserve_range=2 * P)
    node = s.obj(v).kernel_node
    assert node is not None and (node.addr, node.range) == (4 * P, 2 * P)


def test_bind_op_unmaps_its_range() -> None:
    s = Session()
    v = s.do("vm", start=0, range=64 * P)
    o = s.do("gem", size=4 * P)
    s.do("bind", vm=v, reqs=[["map", 0, 4 * P, o, 0], ["unmap", P, P]])
    assert [(va.addr, va.range) for va in s.obj(v)] == [(0, P), (2 * P, 2 * P)]


def _two_files() -> tuple[Session, str, str, str]:
    s = Session()
    d = s.do("device", flavour="msm", policy="gpuvm_vma_ref")
    p = s.do("process")
    return s, s.do("open", device=d, fds=p), s.do("open", device=d, fds=p), p


def test_fd_dup_op_duplicates_in_its_table() -> None:
    s, f, _, p = _two_files()
    fd = s.do("prime_handle_to_fd", file=f, handle=s.do("create_bo", file=f, size=P))
    fd2 = s.do("fd_dup", table=p, fd=fd)
    assert fd2 != fd and s.obj(p).get(fd2) is s.obj(p).get(fd)


def test_prime_handle_to_fd_op_passes_its_flags() -> None:
    """``DRM_IOCTL_PRIME_HANDLE_TO_FD`` refuses unknown flag bits (``-EINVAL``): the
    trace's ``flags`` reach the ioctl."""
    from gpuvm.core.errors import InvalidValue

    s, f, _, _ = _two_files()
    h = s.do("create_bo", file=f, size=P)
    with pytest.raises(InvalidValue):
        s.do("prime_handle_to_fd", file=f, handle=h, flags=0x4)
    assert s.lines[-1]["error"] == "EINVAL"


def test_replay_keeps_no_text_log_by_default() -> None:
    s = Session()
    s.do("vm", start=0, range=16 * P)
    assert replay(s.dumps()).session.text == []
    assert replay(s.dumps(), text_log=True).session.text != []


def test_replay_names_a_broken_invariant(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpuvm.observe.trace import TraceError

    def broken(self: Session, r: dict[str, object]) -> None:
        raise AssertionError("index keys and nodes disagree")

    monkeypatch.setattr(Session, "_op_frame", broken)
    text = '{"format": "gpuvm-trace", "version": 1}\n{"op": "frame"}\n'
    with pytest.raises(TraceError) as info:
        replay(text)
    assert info.value.line == 2
    assert (
        info.value.reason
        == "frame broke a model invariant on replay: index keys and nodes disagree"
    )


def test_events_of_filters_by_kind() -> None:
    from gpuvm.observe.trace import events_of

    s = Session()
    v = s.do("vm", start=0, range=16 * P)
    s.do("map", vm=v, addr=0, range=P)
    r = replay(s.dumps())
    assert list(events_of(r)) == r.events
    assert [e.kind for e in events_of(r, ["Mapped"])] == ["Mapped"]
    assert list(events_of(r, [])) == []


def test_trace_bounds_table() -> None:
    from gpuvm.drm.device import MAX_PLANES
    from gpuvm.observe.trace.schema import _bounds

    assert _bounds() == {("device", "planes"): (0, MAX_PLANES)}


_HEAD = '{"format": "gpuvm-trace", "version": 1}\n'


def test_validation_of_lists_optional_ids_and_bind_objects() -> None:
    from gpuvm.observe.trace import TraceError, validate

    base = _HEAD + '{"op": "vm", "id": "v0", "start": 0, "range": 65536}\n'
    assert validate(base + '{"op": "map", "vm": "v0", "addr": 0, "range": 4096, "obj": null}\n')
    with pytest.raises(TraceError) as info:
        validate(base + '{"op": "bind", "vm": "v0", "reqs": [["map", 0, 4096, "v0", 0]]}\n')
    assert (info.value.line, info.value.reason) == (3, "bind: object 'v0' is not a defined gem")
    dev = (
        _HEAD
        + '{"op": "device", "id": "d0", "flavour": "msm", "policy": "gpuvm_vma_ref"}\n'
        + '{"op": "process", "id": "p0"}\n'
        + '{"op": "open", "id": "f0", "device": "d0", "fds": "p0"}\n'
    )
    with pytest.raises(TraceError) as info:
        validate(dev + '{"op": "add_fb", "id": "fb0", "file": "f0", "handles": [true]}\n')
    assert info.value.reason == "add_fb: handles: expected a list of integers, got [True]"
