"""Whole-model state snapshots, to show that a rejected operation changed nothing.

``snapshot(*roots)`` walks from the given VMs, GEMs, VmBos and VAs to everything they
reach (a VM's VAs and VmBos, a GEM's VmBos and their VMs, a VmBo's VAs, a VA's VM and
VmBo) and records, per entity and keyed by identity, every field the model can change:
layouts, which VA objects are inserted, link state, flags, the holder dicts of every
reference count, GEM lists, extobj/evict lists (in order), generation, warnings and the
freed flags.  Two snapshots compare equal iff none of that changed.

``unchanged(*roots)`` is a context manager for the usual pattern::

    with unchanged(vm, bo), pytest.raises(VaExists):
        vm.insert(...)

It also fails if any event was emitted on the buses of the VMs and GEMs involved.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gpuvm import EventBus, EventLog, GemObject, GpuVm, Va, VmBo


def _va_state(va: Va) -> tuple[Any, ...]:
    return (
        va.addr,
        va.range,
        va.obj,
        va.offset,
        va.sparse,
        va.invalidated,
        va.user_flags,
        va.vm,
        va.vm_bo,
        va.inserted,
        va.kernel_node,
        va.freed,
    )


def _refs(obj: Any) -> tuple[int, dict[object, int], bool]:
    r = obj.refs
    return (r.total, dict(r.holders), r.released)


def _vm_state(vm: GpuVm) -> tuple[Any, ...]:
    return (
        [(va, _va_state(va)) for va in vm.index],
        list(vm.vm_bos),
        list(vm.extobj),
        list(vm.evict),
        vm.generation,
        list(vm.warnings),
        _refs(vm),
        vm.freed,
        vm.kernel_node,
        vm.r_obj,
        vm.flags,
        list(vm.bo_defer),
        vm.fence_depth,
    )


def _gem_state(obj: GemObject) -> tuple[Any, ...]:
    return (list(obj.vm_bos), _refs(obj), obj.freed, obj.resv, obj.size)


def _vm_bo_state(vb: VmBo) -> tuple[Any, ...]:
    return (
        list(vb.vas),
        _refs(vb),
        vb.evicted,
        vb.listed,
        vb.freed,
        vb.zombie,
        vb.holds_obj,
        vb.vm,
        vb.obj,
    )


def _collect(
    roots: tuple[object, ...],
) -> tuple[list[GpuVm], list[GemObject], list[VmBo], list[Va]]:
    vms: dict[int, GpuVm] = {}
    gems: dict[int, GemObject] = {}
    vbs: dict[int, VmBo] = {}
    vas: dict[int, Va] = {}
    todo: list[object] = list(roots)
    while todo:
        o = todo.pop()
        if o is None:
            continue
        if isinstance(o, GpuVm):
            if id(o) in vms:
                continue
            vms[id(o)] = o
            todo += list(o.index)
            todo += list(o.vm_bos)
            todo.append(o.r_obj)
        elif isinstance(o, GemObject):
            if id(o) in gems:
                continue
            gems[id(o)] = o
            todo += list(o.vm_bos)
        elif isinstance(o, VmBo):
            if id(o) in vbs:
                continue
            vbs[id(o)] = o
            todo += [o.vm, o.obj, *o.vas]
        elif isinstance(o, Va):
            if id(o) in vas:
                continue
            vas[id(o)] = o
            todo += [o.vm, o.vm_bo, o.obj]
        elif isinstance(o, list | tuple | set):
            todo += list(o)
        else:
            raise TypeError(f"cannot snapshot {o!r}")
    return list(vms.values()), list(gems.values()), list(vbs.values()), list(vas.values())


def snapshot(*roots: object) -> dict[str, Any]:
    """Everything mutable reachable from ``roots``, keyed by entity identity."""
    vms, gems, vbs, vas = _collect(roots)
    return {
        "vms": [(vm, _vm_state(vm)) for vm in vms],
        "gems": [(g, _gem_state(g)) for g in gems],
        "vm_bos": [(vb, _vm_bo_state(vb)) for vb in vbs],
        "vas": [(va, _va_state(va)) for va in vas],
    }


def diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Human-readable differences between two snapshots (for assertion messages)."""
    out: list[str] = []
    for key in a.keys() | b.keys():
        ea = {id(o): (o, s) for o, s in a.get(key, [])}
        eb = {id(o): (o, s) for o, s in b.get(key, [])}
        for k in ea.keys() | eb.keys():
            if k not in ea or k not in eb:
                who = (ea.get(k) or eb.get(k))[0]  # type: ignore[index]
                out.append(f"{key}: {who!r} {'appeared' if k not in ea else 'vanished'}")
            elif ea[k][1] != eb[k][1]:
                out.append(f"{key}: {ea[k][0]!r}: {ea[k][1]} -> {eb[k][1]}")
    return out


def buses(*roots: object) -> list[EventBus]:
    vms, gems, _vbs, _vas = _collect(roots)
    out: list[EventBus] = []
    for b in [vm.bus for vm in vms] + [g.bus for g in gems]:
        if all(b is not x for x in out):
            out.append(b)
    return out


@contextmanager
def unchanged(*roots: object, events: bool = True) -> Iterator[None]:
    """Assert that the body (expected to raise, inside ``pytest.raises``) leaves every
    entity reachable from ``roots`` exactly as it was and, with ``events``, emits no
    event."""
    before = snapshot(*roots)
    logs = []
    unsubs = []
    if events:
        for bus in buses(*roots):
            log = EventLog()
            logs.append(log)
            unsubs.append(bus.subscribe(log))
    try:
        yield
    except BaseException:
        for u in unsubs:
            u()
        raise
    for u in unsubs:
        u()
    after = snapshot(*roots)
    assert before == after, "state changed:\n" + "\n".join(diff(before, after))
    emitted = [e for log in logs for e in log.events]
    assert not emitted, f"events emitted by a rejected operation: {emitted}"
