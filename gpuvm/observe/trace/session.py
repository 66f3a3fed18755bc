"""The recording :class:`Session`: a model driven by named operations on stable ids,
each performed on the driver layer (``drm_ioctl`` handlers such as
``drm_gem_prime_handle_to_fd``, ``drm_mode_addfb2``, ``drm_gem_close_ioctl``) or the core
VM_BIND path (``drm_gpuvm_sm_map``, ``drm_gpuvm_sm_unmap``) and recorded as one trace line
with its result or errno.  One class, one concept: the ``_op_*`` methods are its
operation table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gpuvm.core.errors import GpuvmError
from gpuvm.core.events import Event, EventBus, EventLog, fields_of
from gpuvm.observe.checker import LifetimeChecker
from gpuvm.observe.trace.schema import (
    _PREFIX,
    CAPS_PRESETS,
    FORMAT,
    OPS,
    TRACE_VERSION,
    _validate_line,
)

__all__ = [
    "Session",
    "format_event",
]


class Session:
    """A model driven by named operations, each recorded as a trace line.

    ``do(op, **fields)`` runs one operation (see :data:`OPS`); references are ids; a
    defining op returns the new id.  A refused call is recorded with its errno name and
    re-raised.  ``check``: run the lifetime checker after every operation (close points
    always run their checks).
    """

    def __init__(
        self,
        *,
        check: bool = True,
        bus: EventBus | None = None,
        policies: dict[str, Any] | None = None,
        text_log: bool = False,
    ) -> None:
        self.policies: dict[str, Any] = dict(policies or {})
        self.bus = bus if bus is not None else EventBus()
        self.log = EventLog()
        self.bus.subscribe(self.log)
        self.text: list[str] = []
        """With ``text_log``: each event formatted when it was emitted (objects shown in
        their state at that moment)."""
        self.fields: list[dict[str, Any]] = []
        """With ``text_log``: each event as a dict of JSON values (see :func:`event_fields`)."""
        if text_log:
            self.bus.subscribe(lambda e: self.text.append(format_event(e)))
            self.bus.subscribe(lambda e: self.fields.append(event_fields(e)))
        self.checker = LifetimeChecker(bus=self.bus)
        self.check_every_op = check
        self.lines: list[dict[str, Any]] = []
        self.objs: dict[str, Any] = {}
        self.kinds: dict[str, str] = {}
        self._counters: dict[str, int] = {}
        self.header: dict[str, Any] = {"format": FORMAT, "version": TRACE_VERSION}
        self.topology: Any = None
        """The PCI topology devices with ``caps`` share (made at the first such device)."""

    # --- ids -----------------------------------------------------------------------------

    def new_id(self, kind: str) -> str:
        n = self._counters.get(kind, 0)
        while f"{_PREFIX[kind]}{n}" in self.objs:
            n += 1
        self._counters[kind] = n + 1
        return f"{_PREFIX[kind]}{n}"

    def obj(self, ident: str) -> Any:
        """The object behind an id."""
        return self.objs[ident]

    def ids(self, kind: str) -> list[str]:
        return [i for i, k in self.kinds.items() if k == kind]

    def _define(self, ident: str, kind: str, obj: object) -> None:
        self.objs[ident] = obj
        self.kinds[ident] = kind

    # --- running -------------------------------------------------------------------------

    def do(self, op: str, **fields: Any) -> Any:
        """Run and record ``op``; returns its result (a new id, a handle, an fd, ...)."""
        spec = OPS.get(op)
        if spec is None:
            raise ValueError(f"unknown op {op!r}")
        for field, kind in spec.items():
            if kind.startswith("+") and field not in fields:
                fields[field] = self.new_id(kind[1:])
        rec: dict[str, Any] = {"op": op, **fields}
        _validate_line(len(self.lines) + 2, rec, dict(self.kinds))
        try:
            result = self._run(op, rec)
        except GpuvmError as e:
            rec["error"] = e.errno_name
            self.lines.append(rec)
            self._after(op, rec, None)
            raise
        if result is not None and not any(k.startswith("+") for k in spec.values()):
            rec["result"] = result
        self.lines.append(rec)
        self._after(op, rec, result)
        return rec.get("id", result) if any(k.startswith("+") for k in spec.values()) else result

    def attempt(self, op: str, **fields: Any) -> Any:
        """:meth:`do`, returning None for a refused call."""
        try:
            return self.do(op, **fields)
        except GpuvmError:
            return None

    def dumps(self) -> str:
        """The trace as JSON lines (header first)."""
        return "\n".join(json.dumps(r, sort_keys=False) for r in [self.header, *self.lines]) + "\n"

    def _after(self, op: str, rec: dict[str, Any], result: object) -> None:
        c = self.checker
        if op == "prime_fd_to_handle" and result is not None:
            c.check_import(self.obj(rec["file"]), rec["fd"], int(str(result)))
        if op == "close" and "error" not in rec:
            c.after_file_close(self.obj(rec["file"]))
        elif op == "device_close" and "error" not in rec:
            c.check()
            c.after_teardown(self.obj(rec["device"]))
        elif op == "vm_close" and "error" not in rec:
            c.after_vm_close(self.obj(rec["vm"]))
        elif self.check_every_op:
            c.check()

    def _run(self, op: str, r: dict[str, Any]) -> Any:
        fn: Callable[[dict[str, Any]], Any] = getattr(self, f"_op_{op}")
        return fn(r)

    # --- driver layer ops ----------------------------------------------------------------

    def _op_device(self, r: dict[str, Any]) -> None:
        from gpuvm.drm.caps import Topology
        from gpuvm.drm.device import Device

        caps = None
        name = r.get("caps")
        if name is not None:
            preset = CAPS_PRESETS.get(name)
            if preset is None:
                raise _Bad(f"unknown caps {name!r}; known: {', '.join(CAPS_PRESETS)}")
            caps = preset(r["id"])
            if self.topology is None:
                self.topology = Topology()
            if r.get("pci_root") is not None:
                self.topology.add(caps, root=r["pci_root"])
        elif r.get("pci_root") is not None:
            raise _Bad("pci_root without caps")
        try:
            dev = Device(
                r["flavour"],
                self.policies.get(r["policy"], r["policy"]),
                name=r["id"],
                bus=self.bus,
                planes=r.get("planes", 1),
                display=r.get("display", True),
                caps=caps,
                topology=self.topology if caps is not None else None,
                kernel=r.get("kernel"),
                dmabuf_move_notify=r.get("dmabuf_move_notify"),
            )
        except (KeyError, ValueError) as e:
            raise _Bad(f"cannot make device: {e}") from None
        r["kernel"] = dev.kernel.name  # the trace records the profile the device ran under
        if dev.dmabuf_move_notify != dev.kernel.dmabuf_move_notify:  # and a changed Kconfig
            r["dmabuf_move_notify"] = dev.dmabuf_move_notify
        self._define(r["id"], "dev", dev)
        self.checker.watch(dev)

    def _op_frame(self, r: dict[str, Any]) -> None:
        """A frame boundary: nothing in the model; replay's pricing splits costs here."""

    def _op_process(self, r: dict[str, Any]) -> None:
        from gpuvm.drm.dmabuf import FdTable

        t = FdTable(r["id"])
        self._define(r["id"], "table", t)
        self.checker.watch(t)

    def _op_open(self, r: dict[str, Any]) -> None:
        f = self.obj(r["device"]).open(self.obj(r["fds"]), name=r["id"])
        self._define(r["id"], "file", f)

    def _f(self, r: dict[str, Any]) -> Any:
        return self.obj(r["file"])

    def _op_create_bo(self, r: dict[str, Any]) -> int:
        return int(self._f(r).create_bo(r["size"]))

    def _op_gem_close(self, r: dict[str, Any]) -> None:
        self._f(r).gem_close(r["handle"])

    def _op_prime_handle_to_fd(self, r: dict[str, Any]) -> int:
        return int(self._f(r).prime_handle_to_fd(r["handle"], r.get("flags", 0)))

    def _op_prime_fd_to_handle(self, r: dict[str, Any]) -> int:
        return int(self._f(r).prime_fd_to_handle(r["fd"], r.get("flags", 0)))

    def _op_fd_send(self, r: dict[str, Any]) -> int:
        return int(self.obj(r["table"]).send(r["fd"], self.obj(r["to"])))

    def _op_fd_dup(self, r: dict[str, Any]) -> int:
        return int(self.obj(r["table"]).dup(r["fd"]))

    def _op_fd_close(self, r: dict[str, Any]) -> None:
        self.obj(r["table"]).close(r["fd"])

    def _op_add_fb(self, r: dict[str, Any]) -> None:
        fb = self._f(r).add_fb(*r["handles"])
        self._define(r["id"], "fb", fb)

    def _op_rm_fb(self, r: dict[str, Any]) -> None:
        self._f(r).rm_fb(self.obj(r["fb"]))

    def _op_close_fb(self, r: dict[str, Any]) -> None:
        self._f(r).close_fb(self.obj(r["fb"]))

    def _op_page_flip(self, r: dict[str, Any]) -> None:
        from gpuvm.core.errors import InvalidValue

        f = self._f(r)
        planes = f.device.planes
        if not 0 <= r["plane"] < len(planes):
            raise InvalidValue(f"no plane {r['plane']} on {f.device.name}")
        fb = None if r.get("fb") is None else self.obj(r["fb"])
        f.page_flip(planes[r["plane"]], fb)

    def _op_get_iova(self, r: dict[str, Any]) -> int:
        return int(self._f(r).get_iova(r["handle"]))

    def _op_set_iova(self, r: dict[str, Any]) -> None:
        self._f(r).set_iova(r["handle"], r["iova"])

    def _op_submit(self, r: dict[str, Any]) -> None:
        self._define(r["id"], "job", self._f(r).submit(r["handles"]))

    def _op_exec(self, r: dict[str, Any]) -> None:
        self._define(r["id"], "job", self._f(r).exec())

    def _op_retire(self, r: dict[str, Any]) -> None:
        from gpuvm.core.errors import InvalidValue

        dev = self.obj(r["device"])
        job = None if r.get("job") is None else self.obj(r["job"])
        if job is not None and job not in dev.jobs:
            raise InvalidValue(f"{job!r} is not in flight on {dev.name}")
        dev.retire(job)

    def _op_set_param_vm_bind(self, r: dict[str, Any]) -> None:
        self._f(r).set_param_vm_bind()

    def _op_vm_init(self, r: dict[str, Any]) -> None:
        self._f(r).vm_init()

    def _op_get_param(self, r: dict[str, Any]) -> None:
        self._f(r).get_param()

    def _op_channel_alloc(self, r: dict[str, Any]) -> None:
        self._f(r).channel_alloc()

    def _op_vm_bind(self, r: dict[str, Any]) -> None:
        from gpuvm.drm.file import BindMap, BindUnmap

        ops: list[BindMap | BindUnmap] = []
        for o in r["ops"]:
            if o[0] == "map":
                ops.append(BindMap(o[1], o[2], o[3], o[4]))
            else:
                ops.append(BindUnmap(o[1], o[2]))
        self._f(r).vm_bind(ops)

    def _bo_of(self, r: dict[str, Any]) -> Any:
        return self._f(r).bo(r["handle"])

    def _op_evict(self, r: dict[str, Any]) -> None:
        self._f(r).device.evict(self._bo_of(r))

    def _op_purge(self, r: dict[str, Any]) -> None:
        self._f(r).device.purge(self._bo_of(r))

    def _op_wait_idle(self, r: dict[str, Any]) -> None:
        self._f(r).device.wait_idle(self._bo_of(r))

    def _op_close(self, r: dict[str, Any]) -> None:
        self._f(r).close()

    def _op_device_close(self, r: dict[str, Any]) -> None:
        self.obj(r["device"]).close()

    # --- dma-buf ops -----------------------------------------------------------------------

    def _attachment(self, r: dict[str, Any]) -> Any:
        from gpuvm.core.errors import InvalidValue

        bo = self._bo_of(r)
        att = bo.import_attach
        if att is None:
            raise InvalidValue(f"handle {r['handle']} of {r['file']} is not a foreign import")
        return att

    def _exported(self, r: dict[str, Any]) -> Any:
        from gpuvm.core.errors import InvalidValue

        bo = self._bo_of(r)
        d = bo.dma_buf
        if d is None or bo.import_attach is not None:
            raise InvalidValue(f"handle {r['handle']} of {r['file']} is not an exported buffer")
        if d.sharing is None:
            raise InvalidValue(f"{d!r} has no placement (its device has no caps)")
        return d

    def _op_attachment_map(self, r: dict[str, Any]) -> str | None:
        att = self._attachment(r)
        res = att.dmabuf.map(att)
        return None if res is None else res.domain.name

    def _op_attachment_unmap(self, r: dict[str, Any]) -> None:
        att = self._attachment(r)
        att.dmabuf.unmap(att)

    def _op_attachment_pin(self, r: dict[str, Any]) -> None:
        att = self._attachment(r)
        att.dmabuf.pin(att)

    def _op_attachment_unpin(self, r: dict[str, Any]) -> None:
        att = self._attachment(r)
        att.dmabuf.unpin(att)

    def _op_dmabuf_move(self, r: dict[str, Any]) -> None:
        from gpuvm.drm.placement import Domain

        try:
            domain = Domain[r["domain"]]
        except KeyError:
            known = ", ".join(d.name for d in Domain)
            raise _Bad(f"unknown domain {r['domain']!r}; known: {known}") from None
        self._exported(r).move(domain)

    def _op_exporter_use(self, r: dict[str, Any]) -> None:
        self._exported(r).exporter_use()

    # --- core ops ------------------------------------------------------------------------

    def _op_vm(self, r: dict[str, Any]) -> None:
        from gpuvm.core.vm import GpuVm

        vm = GpuVm(
            r["start"],
            r["range"],
            r.get("reserve_start", 0),
            r.get("reserve_range", 0),
            name=r["id"],
            bus=self.bus,
            vm_free=lambda vm: None,
        )
        self._define(r["id"], "vm", vm)
        self.checker.watch(vm)

    def _op_gem(self, r: dict[str, Any]) -> None:
        from gpuvm.core.gem import GemObject

        vm_id = r.get("private_to")
        if vm_id is not None:
            obj = GemObject(r["size"], name=r["id"], resv=self.obj(vm_id).resv, bus=self.bus)
        else:
            obj = GemObject(r["size"], name=r["id"], bus=self.bus)
        self._define(r["id"], "gem", obj)
        self.checker.watch(obj)

    def _op_map(self, r: dict[str, Any]) -> None:
        obj = None if r.get("obj") is None else self.obj(r["obj"])
        self.obj(r["vm"]).map(r["addr"], r["range"], obj, r.get("offset", 0))

    def _op_unmap(self, r: dict[str, Any]) -> None:
        self.obj(r["vm"]).unmap(r["addr"], r["range"])

    def _op_bind(self, r: dict[str, Any]) -> None:
        from gpuvm.core.ops import MapRequest, UnmapRequest

        reqs: list[MapRequest | UnmapRequest] = []
        for o in r["reqs"]:
            if o[0] == "map":
                obj = None if o[3] is None else self.obj(o[3])
                reqs.append(MapRequest(o[1], o[2], obj, o[4]))
            else:
                reqs.append(UnmapRequest(o[1], o[2]))
        self.obj(r["vm"]).bind(reqs)

    def _op_gem_put(self, r: dict[str, Any]) -> None:
        self.obj(r["obj"]).put()

    def _op_vm_close(self, r: dict[str, Any]) -> None:
        self.obj(r["vm"]).close()


class _Bad(Exception):
    """An op that cannot run for a reason of the trace itself (not a model refusal)."""


def format_event(event: Event) -> str:
    """One line for an event: its type and fields."""
    fields = ", ".join(f"{name}={getattr(event, name)!r}" for name in fields_of(type(event)))
    return f"{event.kind}({fields})"


def _json_value(v: object) -> Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, list | tuple | frozenset | set):
        items = [_json_value(x) for x in v]
        return sorted(items, key=repr) if isinstance(v, frozenset | set) else items
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    return repr(v)


def event_fields(event: Event) -> dict[str, Any]:
    """An event as a dict: ``kind`` and each field as a JSON value (model objects as their
    repr at emission time)."""
    out: dict[str, Any] = {"kind": event.kind}
    for name in fields_of(type(event)):
        out[name] = _json_value(getattr(event, name))
    return out
