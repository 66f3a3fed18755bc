"""Record and replay: every public operation of the driver layer and of the core VM_BIND
path as one JSON line, replayed deterministically.

A :class:`Session` performs operations by name on objects named by stable ids (``d0`` a
device, ``f0`` a file, ``p0`` a process fd table, ``fb0`` a framebuffer, ``j0`` a job,
``v0`` a core VM, ``g0`` a core buffer) and records each as a line of the trace (format in
``docs/trace-format.md``): its arguments, its result (a handle, an fd, an iova) and, for a
refused call, the errno name.  :func:`replay` validates a whole trace first (JSON, version,
known ops, field types, ids defined before use), then replays it into a fresh model,
checking that each refusal and each result repeats; any mismatch rejects the trace with its
line number and the reason, and the half-built model is discarded.  A session can run a
:class:`~gpuvm.observe.checker.LifetimeChecker` after every operation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from gpuvm.core.errors import GpuvmError
from gpuvm.core.events import Event, EventBus, EventLog
from gpuvm.observe.checker import LifetimeChecker

__all__ = [
    "CAPS_PRESETS",
    "FORMAT",
    "OPS",
    "TRACE_VERSION",
    "ReplayResult",
    "Session",
    "TraceError",
    "load",
    "replay",
    "validate",
]

FORMAT = "gpuvm-trace"
TRACE_VERSION = 1

# Field types: int, int?, str, bool, ints (list of int), bindops, reqs, and references to
# ids of a kind: @dev, @file, @table, @fb, @fb?, @job?, @vm, @gem, @gem?.  "id" fields of
# defining ops are "+kind".
OPS: dict[str, dict[str, str]] = {
    # driver layer
    "device": {
        "id": "+dev",
        "flavour": "str",
        "policy": "str",
        "planes": "int",
        "display": "bool",
        "caps": "str?",
        "pci_root": "str?",
    },
    "process": {"id": "+table"},
    "open": {"id": "+file", "device": "@dev", "fds": "@table"},
    "create_bo": {"file": "@file", "size": "int"},
    "gem_close": {"file": "@file", "handle": "int"},
    "prime_handle_to_fd": {"file": "@file", "handle": "int", "flags": "int"},
    "prime_fd_to_handle": {"file": "@file", "fd": "int", "flags": "int"},
    "fd_send": {"table": "@table", "fd": "int", "to": "@table"},
    "fd_dup": {"table": "@table", "fd": "int"},
    "fd_close": {"table": "@table", "fd": "int"},
    "add_fb": {"id": "+fb", "file": "@file", "handles": "ints"},
    "rm_fb": {"file": "@file", "fb": "@fb"},
    "close_fb": {"file": "@file", "fb": "@fb"},
    "page_flip": {"file": "@file", "plane": "int", "fb": "@fb?"},
    "get_iova": {"file": "@file", "handle": "int"},
    "set_iova": {"file": "@file", "handle": "int", "iova": "int"},
    "submit": {"id": "+job", "file": "@file", "handles": "ints"},
    "exec": {"id": "+job", "file": "@file"},
    "retire": {"device": "@dev", "job": "@job?"},
    "set_param_vm_bind": {"file": "@file"},
    "vm_init": {"file": "@file"},
    "get_param": {"file": "@file"},
    "channel_alloc": {"file": "@file"},
    "vm_bind": {"file": "@file", "ops": "bindops"},
    "evict": {"file": "@file", "handle": "int"},
    "purge": {"file": "@file", "handle": "int"},
    "wait_idle": {"file": "@file", "handle": "int"},
    "close": {"file": "@file"},
    "device_close": {"device": "@dev"},
    # dma-buf: the attachment of an imported buffer, and the exporter's side of an export
    "attachment_map": {"file": "@file", "handle": "int"},
    "attachment_unmap": {"file": "@file", "handle": "int"},
    "attachment_pin": {"file": "@file", "handle": "int"},
    "attachment_unpin": {"file": "@file", "handle": "int"},
    "dmabuf_move": {"file": "@file", "handle": "int", "domain": "str"},
    "exporter_use": {"file": "@file", "handle": "int"},
    # core VM_BIND path
    "vm": {
        "id": "+vm",
        "start": "int",
        "range": "int",
        "reserve_start": "int",
        "reserve_range": "int",
    },
    "gem": {"id": "+gem", "size": "int", "private_to": "@vm?"},
    "map": {"vm": "@vm", "addr": "int", "range": "int", "obj": "@gem?", "offset": "int"},
    "unmap": {"vm": "@vm", "addr": "int", "range": "int"},
    "bind": {"vm": "@vm", "reqs": "reqs"},
    "gem_put": {"obj": "@gem"},
    "vm_close": {"vm": "@vm"},
}
"""Every recordable operation and its fields."""

OPTIONAL = {
    "planes",
    "display",
    "caps",
    "pci_root",
    "reserve_start",
    "reserve_range",
    "private_to",
    "offset",
    "flags",
}
_META = {"op", "result", "error"}


def _caps_presets() -> dict[str, Callable[[str], Any]]:
    from gpuvm.drm import caps

    return {
        "amdgpu_dgpu": caps.amdgpu_dgpu,
        "i915_igpu": caps.i915_igpu,
        "xe_igpu": caps.xe_igpu,
        "bochs": caps.bochs,
        "qxl": caps.qxl,
        "soc_display": caps.soc_display,
    }


CAPS_PRESETS: dict[str, Callable[[str], Any]] = _caps_presets()
"""The device capability presets a trace's ``device`` line may name (``caps``), each
called with the device id as its name."""
_PREFIX = {"dev": "d", "table": "p", "file": "f", "fb": "fb", "job": "j", "vm": "v", "gem": "g"}


class TraceError(Exception):
    """A malformed or inconsistent trace: ``line`` (1-based) and ``reason``."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


def _is_int(v: object) -> bool:
    return type(v) is int


def _check_value(kind: str, v: object) -> str | None:
    """None if ``v`` fits the (non-reference) field type ``kind``, else why not."""
    if kind == "int":
        return None if _is_int(v) else f"expected an integer, got {v!r}"
    if kind == "int?":
        return None if v is None or _is_int(v) else f"expected an integer or null, got {v!r}"
    if kind == "str":
        return None if isinstance(v, str) else f"expected a string, got {v!r}"
    if kind == "str?":
        return None if v is None or isinstance(v, str) else f"expected a string or null, got {v!r}"
    if kind == "bool":
        return None if isinstance(v, bool) else f"expected true/false, got {v!r}"
    if kind == "ints":
        if isinstance(v, list) and all(_is_int(x) for x in v):
            return None
        return f"expected a list of integers, got {v!r}"
    if kind in ("bindops", "reqs"):
        if not isinstance(v, list):
            return f"expected a list of ops, got {v!r}"
        for op in v:
            ok = (
                isinstance(op, list)
                and op
                and (
                    (op[0] == "map" and len(op) == 5 and all(_is_int(x) for x in op[1:3]))
                    or (op[0] == "unmap" and len(op) == 3 and all(_is_int(x) for x in op[1:]))
                )
            )
            if not ok:
                return (
                    f'bad op {op!r}: want ["map", addr, range, handle|obj|null, offset] '
                    'or ["unmap", addr, range]'
                )
            if op[0] == "map":
                if not _is_int(op[4]):
                    return f"bad map offset in {op!r}"
                if kind == "bindops" and not (op[3] is None or _is_int(op[3])):
                    return f"bad map handle in {op!r}"
                if kind == "reqs" and not (op[3] is None or isinstance(op[3], str)):
                    return f"bad map object id in {op!r}"
        return None
    raise AssertionError(kind)


def _validate_line(n: int, rec: object, defined: dict[str, str]) -> tuple[str, dict[str, Any]]:
    if not isinstance(rec, dict):
        raise TraceError(n, "not a JSON object")
    op = rec.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise TraceError(n, f"unknown op {op!r}")
    spec = OPS[op]
    extra = set(rec) - set(spec) - _META
    if extra:
        raise TraceError(n, f"{op}: unknown field(s) {', '.join(sorted(extra))}")
    err = rec.get("error")
    if err is not None and not isinstance(err, str):
        raise TraceError(n, f"{op}: error must be an errno name")
    for field, kind in spec.items():
        if field not in rec:
            if field in OPTIONAL or kind.endswith("?"):
                continue
            raise TraceError(n, f"{op}: missing field {field!r}")
        v = rec[field]
        if kind.startswith("+"):
            k = kind[1:]
            if not isinstance(v, str) or not v:
                raise TraceError(n, f"{op}: id must be a non-empty string")
            if v in defined:
                raise TraceError(n, f"{op}: id {v!r} already defined")
            continue
        if kind.startswith("@"):
            k = kind[1:].rstrip("?")
            if v is None and kind.endswith("?"):
                continue
            if not isinstance(v, str):
                raise TraceError(n, f"{op}: {field} must be an id string, got {v!r}")
            if v not in defined:
                raise TraceError(n, f"{op}: {field} {v!r} is not defined by an earlier line")
            if defined[v] != k:
                raise TraceError(n, f"{op}: {field} {v!r} is a {defined[v]}, not a {k}")
            continue
        why = _check_value(kind, v)
        if why:
            raise TraceError(n, f"{op}: {field}: {why}")
        if kind == "reqs":
            for r in v:
                if r[0] == "map" and r[3] is not None and defined.get(r[3]) != "gem":
                    raise TraceError(n, f"{op}: object {r[3]!r} is not a defined gem")
    for field, kind in spec.items():
        if kind.startswith("+") and field in rec and err is None:
            defined[rec[field]] = kind[1:]
    return op, rec


def load(text: str) -> list[tuple[int, str, dict[str, Any]]]:
    """Parse and validate a whole trace: ``(line number, op, record)`` for each op line.
    Raises :class:`TraceError` for the first bad line; nothing is executed."""
    lines = text.splitlines()
    out: list[tuple[int, str, dict[str, Any]]] = []
    header_seen = False
    defined: dict[str, str] = {}
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as e:
            raise TraceError(i, f"not valid JSON ({e.msg} at column {e.colno})") from None
        if not header_seen:
            if not isinstance(rec, dict) or rec.get("format") != FORMAT:
                raise TraceError(i, f'first line must be the header {{"format": "{FORMAT}", ...}}')
            version = rec.get("version")
            if version != TRACE_VERSION:
                raise TraceError(
                    i, f"unsupported trace version {version!r} (this reader knows {TRACE_VERSION})"
                )
            header_seen = True
            continue
        op, rec = _validate_line(i, rec, defined)
        out.append((i, op, rec))
    if not header_seen:
        raise TraceError(1, "empty trace (no header line)")
    return out


def validate(text: str) -> int:
    """Validate ``text`` without running it; returns the number of op lines."""
    return len(load(text))


@attrs.define(slots=True, eq=False)
class ReplayResult:
    """A successful replay: the session (model, events, checker) and the op count."""

    session: Session
    ops: int

    @property
    def events(self) -> list[Event]:
        return self.session.log.events

    @property
    def checker(self) -> LifetimeChecker:
        return self.session.checker


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
        if text_log:
            self.bus.subscribe(lambda e: self.text.append(format_event(e)))
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
            )
        except (KeyError, ValueError) as e:
            raise _Bad(f"cannot make device: {e}") from None
        self._define(r["id"], "dev", dev)
        self.checker.watch(dev)

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


def replay(
    text: str,
    *,
    check: bool = True,
    policies: dict[str, Any] | None = None,
    text_log: bool = False,
) -> ReplayResult:
    """Validate ``text`` whole, then replay it into a fresh :class:`Session`.

    Each recorded refusal must be refused again with the same errno, each success must
    succeed with the same result; otherwise :class:`TraceError` names the line.  On error
    the partly replayed model is dropped: nothing escapes but the exception.
    """
    ops = load(text)
    s = Session(check=check, policies=policies, text_log=text_log)
    for n, op, rec in ops:
        fields = {k: v for k, v in rec.items() if k not in _META}
        want_err = rec.get("error")
        try:
            result = s.do(op, **fields)
        except GpuvmError as e:
            if want_err is None:
                raise TraceError(
                    n, f"{op} was refused on replay ({e}) but succeeded when recorded"
                ) from None
            if e.errno_name != want_err:
                raise TraceError(
                    n, f"{op} refused with {e.errno_name} on replay, {want_err} when recorded"
                ) from None
            continue
        except _Bad as e:
            raise TraceError(n, f"{op}: {e}") from None
        except AssertionError as e:
            raise TraceError(n, f"{op} broke a model invariant on replay: {e}") from None
        if want_err is not None:
            raise TraceError(
                n, f"{op} succeeded on replay but was refused ({want_err}) when recorded"
            )
        if "result" in rec and rec["result"] != result:
            raise TraceError(
                n, f"{op} returned {result!r} on replay, {rec['result']!r} when recorded"
            )
    return ReplayResult(s, len(ops))


def format_event(event: Event) -> str:
    """One line for an event: its type and fields."""
    fields = ", ".join(f"{a.name}={getattr(event, a.name)!r}" for a in attrs.fields(type(event)))
    return f"{event.kind}({fields})"


def events_of(result: ReplayResult, kinds: Iterable[str] | None = None) -> Sequence[Event]:
    ks = None if kinds is None else set(kinds)
    return [e for e in result.events if ks is None or e.kind in ks]
