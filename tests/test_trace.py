"""Record and replay: a recorded session replays to the same trace (results, refusals,
verdict); every kind of malformed or inconsistent trace is rejected with its line number
and reason before or instead of a half-built model; ``gpuvm replay`` prints events and the
verdict, or one error line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuvm.core.errors import GpuvmError
from gpuvm.observe import trace
from gpuvm.observe.trace import Session, TraceError, load, replay, replayer
from gpuvm.study import cli

P = 4096
BASE = 1 << 32


def _session() -> Session:
    s = Session()
    d = s.do("device", flavour="msm", policy="gpuvm_vma_ref")
    g = s.do("device", flavour="nouveau", policy="gpuvm_vma_ref", display=False)
    p0, p1 = s.do("process"), s.do("process")
    comp, vk, prod = (
        s.do("open", device=d, fds=p0),
        s.do("open", device=d, fds=p0),
        s.do("open", device=g, fds=p1),
    )
    s.do("set_param_vm_bind", file=vk)
    h = s.do("create_bo", file=vk, size=8 * P)
    s.do("vm_bind", file=vk, ops=[["map", BASE, 8 * P, h, 0], ["unmap", BASE + P, P]])
    with pytest.raises(GpuvmError):
        s.do("vm_bind", file=vk, ops=[["map", BASE, 0, h, 0]])
    s.do("exec", file=vk)
    s.do("retire", device=d)
    fd = s.do("prime_handle_to_fd", file=prod, handle=s.do("create_bo", file=prod, size=P))
    fd2 = s.do("fd_send", table=p1, fd=fd, to=p0)
    ih = s.do("prime_fd_to_handle", file=comp, fd=fd2)
    fb = s.do("add_fb", file=comp, handles=[ih])
    s.do("page_flip", file=comp, plane=0, fb=fb)
    s.do("get_param", file=comp)
    own = s.do("create_bo", file=comp, size=2 * P)
    s.do("get_iova", file=comp, handle=own)
    s.do("submit", file=comp, handles=[own])
    s.do("gem_close", file=comp, handle=own)
    v = s.do("vm", start=0, range=64 * P)
    o = s.do("gem", size=4 * P)
    s.do("bind", vm=v, reqs=[["map", 0, 4 * P, o, 0], ["map", 8 * P, P, None, 0]])
    s.do("unmap", vm=v, addr=P, range=P)
    s.do("gem_put", obj=o)
    s.do("vm_close", vm=v)
    for f in (comp, vk, prod):
        s.do("close", file=f)
    for t in (p0, p1):
        for n in sorted(s.obj(t).fds):
            s.do("fd_close", table=t, fd=n)
    s.do("device_close", device=d)
    s.do("device_close", device=g)
    return s


def test_replay_is_deterministic() -> None:
    s = _session()
    text = s.dumps()
    assert s.checker.ok, s.checker.verdict()
    r = replay(text)
    assert r.session.dumps() == text
    assert r.ops == len(s.lines) == len(text.splitlines()) - 1
    assert [e.kind for e in r.events] == [e.kind for e in s.log.events]
    assert r.checker.ok
    assert any(line.get("error") == "EINVAL" for line in s.lines)


def _bad(text: str, line: int, reason: str) -> None:
    with pytest.raises(TraceError) as info:
        replay(text)
    assert info.value.line == line, str(info.value)
    assert reason in info.value.reason, info.value.reason
    assert "\n" not in str(info.value)


def _lines() -> list[str]:
    return _session().dumps().splitlines()


def _edit(n: int, **changes: object) -> str:
    lines = _lines()
    rec = json.loads(lines[n - 1])
    for k, v in changes.items():
        if v is ...:
            rec.pop(k)
        else:
            rec[k] = v
    lines[n - 1] = json.dumps(rec)
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("make", "line", "reason"),
    [
        (lambda: "", 1, "empty trace"),
        (lambda: '{"op": "process", "id": "p0"}', 1, "first line must be the header"),
        (lambda: '{"format": "gpuvm-trace", "version": 9}', 1, "unsupported trace version 9"),
        (lambda: "\n".join([*_lines()[:3], "{oops"]), 4, "not valid JSON"),
        (lambda: "\n".join([*_lines()[:3], "[1, 2]"]), 4, "not a JSON object"),
        (lambda: _edit(3, op="teleport"), 3, "unknown op 'teleport'"),
        (lambda: _edit(2, colour="red"), 2, "unknown field(s) colour"),
        (lambda: _edit(2, flavour=...), 2, "missing field 'flavour'"),
        (lambda: _edit(10, size="big"), 10, "size: expected an integer"),
        (lambda: _edit(6, device="d7"), 6, "device 'd7' is not defined by an earlier line"),
        (lambda: _edit(6, device="p0"), 6, "device 'p0' is a table, not a dev"),
        (lambda: _edit(5, id="p0"), 5, "id 'p0' already defined"),
        (lambda: _edit(11, ops=[["map", 1, 2]]), 11, "bad op"),
        (lambda: _edit(2, policy="nonsense"), 2, "cannot make device"),
        (lambda: _edit(10, result=5), 10, "create_bo returned 1 on replay, 5 when recorded"),
        (lambda: _edit(11, error="EINVAL"), 11, "succeeded on replay but was refused (EINVAL)"),
        (lambda: _edit(12, error="ENOENT"), 12, "refused with EINVAL on replay, ENOENT"),
        (lambda: _edit(13, file="f0"), 13, "was refused on replay"),
    ],
)
def test_bad_traces_are_rejected_with_line_and_reason(make: object, line: int, reason: str) -> None:
    _bad(make(), line, reason)  # type: ignore[operator]


def test_whole_trace_validated_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _lines()
    lines[-1] = '{"op": "device_close", "device": "nowhere"}'

    def no_model(*args: object, **kw: object) -> None:
        raise AssertionError("a model was built for an invalid trace")

    monkeypatch.setattr(replayer, "Session", no_model)  # the name replay() looks up
    with pytest.raises(TraceError) as info:
        replay("\n".join(lines))
    assert info.value.line == len(lines)
    assert "'nowhere' is not defined" in info.value.reason
    assert len(load("\n".join(_lines()))) == len(lines) - 1


def test_session_rejects_unknown_op() -> None:
    with pytest.raises(ValueError, match="unknown op"):
        Session().do("teleport")


def test_cli_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(_session().dumps())
    assert cli.main(["replay", str(good), "--events", "Mapped,Freed"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("Mapped(vm=GpuVm(f1.vm_bind), addr=4294967296")
    assert "ok: no lifetime violation" in out
    assert cli.main(["replay", str(good), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["version"] == trace.TRACE_VERSION and data["ops"] > 30


def test_cli_replay_verdict_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = Session()
    d = s.do("device", flavour="msm", policy="gpuvm_legacy_trigger")
    f = s.do("open", device=d, fds=s.do("process"))
    fb = s.do("add_fb", file=f, handles=[s.do("create_bo", file=f, size=P)])
    s.do("page_flip", file=f, plane=0, fb=fb)
    s.do("close", file=f)
    s.do("device_close", device=d)
    leaky = tmp_path / "leaky.jsonl"
    leaky.write_text(s.dumps())
    assert cli.main(["replay", str(leaky)]) == 1
    assert (
        "FAIL cycle: GEM d0.bo1 kept alive by cycle GEM d0.bo1 -> VMA(" in capsys.readouterr().out
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text(s.dumps().replace('"size": 4096', '"size": -1'))
    with pytest.raises(SystemExit) as info:
        cli.main(["replay", str(bad)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"gpuvm replay: error: {bad}:5: create_bo was refused on replay")


def test_documented_example_replays() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "trace-format.md").read_text()
    example = doc.split("## Example")[1].split("```json\n")[1].split("```")[0]
    r = replay(example)
    assert r.ops == 9 and r.checker.ok
    assert r.session.dumps() == example


def _dmabuf_session() -> tuple[Session, str]:
    """An amdgpu dGPU exporting to an xe iGPU (a dynamic importer) on the same root port
    without p2p, and to a bochs-like VRAM-only device: map, pin, exporter moves (with
    ``move_notify``), refusals, and a close of everything."""
    s = Session()
    dg = s.do(
        "device",
        flavour="nouveau",
        policy="gpuvm_vma_ref",
        display=False,
        caps="amdgpu_dgpu",
        pci_root="pci0",
        dmabuf_move_notify=True,  # CONFIG_DMABUF_MOVE_NOTIFY=y: the importer stays dynamic
    )
    ig = s.do("device", flavour="msm", policy="gpuvm_vma_ref", caps="xe_igpu")
    p0, p1 = s.do("process"), s.do("process")
    prod, comp = s.do("open", device=dg, fds=p0), s.do("open", device=ig, fds=p1)
    h = s.do("create_bo", file=prod, size=64 * P)
    efd = s.do("prime_handle_to_fd", file=prod, handle=h)
    fd = s.do("fd_send", table=p0, fd=efd, to=p1)
    ih = s.do("prime_fd_to_handle", file=comp, fd=fd)
    assert s.do("attachment_map", file=comp, handle=ih) == "TT"
    s.do("dmabuf_move", file=prod, handle=h, domain="VRAM")  # move_notify; the map is stale
    s.do("attachment_unmap", file=comp, handle=ih)
    s.do("attachment_pin", file=comp, handle=ih)
    with pytest.raises(GpuvmError):  # pinned: the exporter cannot move it
        s.do("dmabuf_move", file=prod, handle=h, domain="VRAM")
    s.do("exporter_use", file=prod, handle=h)
    s.do("attachment_unpin", file=comp, handle=ih)
    with pytest.raises(GpuvmError):  # no pin left
        s.do("attachment_unpin", file=comp, handle=ih)
    with pytest.raises(GpuvmError):  # the exporter's own buffer is not an import
        s.do("attachment_map", file=prod, handle=h)
    with pytest.raises(GpuvmError):  # an import is not the exported buffer
        s.do("dmabuf_move", file=comp, handle=ih, domain="TT")
    for f in (comp, prod):
        s.do("close", file=f)
    s.do("fd_close", table=p1, fd=fd)
    s.do("fd_close", table=p0, fd=efd)
    for d in (ig, dg):
        s.do("device_close", device=d)
    return s, s.dumps()


def test_dmabuf_ops_record_and_replay() -> None:
    s, text = _dmabuf_session()
    assert s.checker.ok, s.checker.verdict()
    kinds = [e.kind for e in s.log.events]
    assert "AttachmentMapped" in kinds and "MoveNotified" in kinds
    again = replay(text)
    assert again.session.dumps() == text and again.checker.ok
    assert [e.kind for e in again.events] == kinds
    errors = [json.loads(line).get("error") for line in text.splitlines()[1:]]
    assert errors.count(None) == len(errors) - 4 and "EINVAL" in errors


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            '{"op": "device", "id": "d0", "flavour": "msm", "policy": "gpuvm_vma_ref", '
            '"caps": "voodoo"}',
            "unknown caps 'voodoo'",
        ),
        (
            '{"op": "device", "id": "d0", "flavour": "msm", "policy": "gpuvm_vma_ref", '
            '"pci_root": "pci0"}',
            "pci_root without caps",
        ),
    ],
)
def test_bad_caps_are_trace_errors(line: str, reason: str) -> None:
    text = '{"format": "gpuvm-trace", "version": 1}\n' + line + "\n"
    with pytest.raises(TraceError) as info:
        replay(text)
    assert info.value.line == 2 and reason in info.value.reason


def test_unknown_domain_is_a_trace_error() -> None:
    _s, text = _dmabuf_session()
    bad = text.replace('"domain": "VRAM"', '"domain": "HBM"', 1)
    with pytest.raises(TraceError) as info:
        replay(bad)
    assert "unknown domain 'HBM'" in info.value.reason


def test_refused_dmabuf_ops_change_nothing() -> None:
    from gpuvm.drm.device import snapshot

    s = Session()
    dg = s.do(
        "device",
        flavour="nouveau",
        policy="gpuvm_vma_ref",
        display=False,
        caps="amdgpu_dgpu",
        pci_root="pci0",
        dmabuf_move_notify=True,  # CONFIG_DMABUF_MOVE_NOTIFY=y: the importer stays dynamic
    )
    ig = s.do("device", flavour="msm", policy="gpuvm_vma_ref", caps="xe_igpu")
    plain = s.do("device", flavour="msm", policy="gpuvm_vma_ref", display=False)
    p0, p1 = s.do("process"), s.do("process")
    prod, comp, other = (
        s.do("open", device=dg, fds=p0),
        s.do("open", device=ig, fds=p1),
        s.do("open", device=plain, fds=p1),
    )
    h = s.do("create_bo", file=prod, size=16 * P)
    efd = s.do("prime_handle_to_fd", file=prod, handle=h)
    fd = s.do("fd_send", table=p0, fd=efd, to=p1)
    ih = s.do("prime_fd_to_handle", file=comp, fd=fd)
    sh = s.do("prime_fd_to_handle", file=other, fd=fd)  # a static attachment
    oh = s.do("create_bo", file=other, size=P)
    s.do("prime_handle_to_fd", file=other, handle=oh)  # exported, without placement
    s.do("attachment_map", file=comp, handle=ih)
    s.do("attachment_pin", file=comp, handle=ih)
    devs = [s.obj(d) for d in (dg, ig, plain)]
    refused = [
        ("attachment_map", {"file": prod, "handle": h}),  # not an import
        ("attachment_unmap", {"file": comp, "handle": 99}),  # no such handle
        ("attachment_pin", {"file": other, "handle": sh}),  # static attachment
        ("attachment_unpin", {"file": other, "handle": sh}),  # holds no pin
        ("dmabuf_move", {"file": comp, "handle": ih, "domain": "TT"}),  # not the export
        ("dmabuf_move", {"file": prod, "handle": h, "domain": "VRAM"}),  # pinned
        ("dmabuf_move", {"file": other, "handle": oh, "domain": "TT"}),  # no placement
        ("exporter_use", {"file": other, "handle": oh}),  # no placement
    ]
    for op, fields in refused:
        before = snapshot(*devs)
        with pytest.raises(GpuvmError) as info:
            s.do(op, **fields)
        assert info.value.errno is not None, op
        assert snapshot(*devs) == before, op


def test_trace_and_ingest_errors_are_library_errors_with_einval() -> None:
    """A malformed trace or log is refused with the library's base error (EINVAL), so one
    ``except GpuvmError`` catches every refusal; the message stays the line and reason."""
    import errno

    from gpuvm.core.errors import GpuvmError
    from gpuvm.observe.trace import TraceError
    from gpuvm.study.ingest import IngestError

    e = TraceError(3, "unknown op 'x'")
    assert isinstance(e, GpuvmError) and e.errno == errno.EINVAL
    assert str(e) == "line 3: unknown op 'x'"
    assert issubclass(IngestError, GpuvmError)
