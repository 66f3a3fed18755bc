"""The sweep behind ``gpuvm study``: rows identical in-process and on a 2-worker Dask
LocalCluster (built-in and user policies), streamed study.json / study.csv, the CLI's
spec / --out / --events / failure handling.  Dask tests share one small cluster."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuvm.observe.costs import builtin_presets
from gpuvm.study.cli import main
from gpuvm.study.spec import StudySpec, loads_spec
from gpuvm.study.sweep import DaskExecutor, RowSink, Serial, iter_rows, read_rows

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def user_module() -> Iterator[None]:
    sys.path.insert(0, str(DATA))
    try:
        yield
    finally:
        sys.path.remove(str(DATA))


def small(*policies: str) -> StudySpec:
    return StudySpec.default().override(
        policies=list(policies),
        presets=["msm-kms", "default"],
        resolutions=["1080p", "4k"],
        layers=[1, 2],
        frames=[12],
        workloads=["pageflip"],
        sources=["swapchain", "client"],
        patterns=["own", "weston"],
    )


@pytest.fixture(scope="module")
def cluster(user_module: None) -> Iterator[DaskExecutor]:
    pytest.importorskip("dask.distributed")
    ex = DaskExecutor(workers=2)
    try:
        yield ex
    finally:
        ex.close()


def rows_of(spec: StudySpec, ex: object) -> list[dict[str, object]]:
    return list(iter_rows(spec.runs(), spec.preset_table, executor=ex, batch=3))  # type: ignore[arg-type]


def test_serial_and_two_workers_give_identical_rows(cluster: DaskExecutor) -> None:
    spec = small("gpuvm_eager", "legacy_pre_6_17", "gpuvm_legacy_trigger")
    serial = rows_of(spec, Serial())
    assert len(serial) == spec.count()[1] > 20
    assert rows_of(spec, cluster) == serial


def test_user_policy_module_serial_and_two_workers(cluster: DaskExecutor) -> None:
    spec = small("mypolicies:LruDisplayCache", "gpuvm_eager")
    serial = rows_of(spec, Serial())
    assert {r["policy"] for r in serial} == {"mypolicies:LruDisplayCache", "gpuvm_eager"}
    mine = [r for r in serial if r["policy"] == "mypolicies:LruDisplayCache"]
    assert mine and all(r["status"] == "ok" for r in mine)
    assert rows_of(spec, cluster) == serial


def test_cli_user_policy_serial_and_workers_2_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("dask.distributed")
    (tmp_path / "mypolicies.py").write_text((DATA / "mypolicies.py").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["study", "--policy", "mypolicies:LruDisplayCache", "--preset", "msm-kms",
            "--frames", "10", "--workload", "pageflip", "--no-charts"]  # fmt: skip
    assert main([*args, "--out", "serial"]) == 0
    assert main([*args, "--out", "dask", "--workers", "2"]) == 0
    a = list(read_rows(tmp_path / "serial" / "study.json"))
    b = list(read_rows(tmp_path / "dask" / "study.json"))
    assert a == b and len(a) == 9
    prov = json.loads((tmp_path / "dask" / "study.json").read_text())["provenance"]
    assert prov["spec"]["policies"] == ["mypolicies:LruDisplayCache"]
    assert "msm-kms" in prov["presets"] and prov["presets"]["msm-kms"]["source"]
    assert prov["version"] and prov["date"]
    with (tmp_path / "serial" / "study.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(a)


def test_cli_scheduler_submits_to_a_running_cluster_same_rows(
    tmp_path: Path, cluster: DaskExecutor
) -> None:
    """``--scheduler ADDRESS``: the sweep runs on a cluster someone else started, with the
    same rows as in-process."""
    address = cluster.client.scheduler.address
    args = ["study", "--policy", "gpuvm_eager", "--preset", "msm-kms", "--frames", "10",
            "--workload", "pageflip", "--no-charts"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "serial")]) == 0
    assert main([*args, "--out", str(tmp_path / "remote"), "--scheduler", address]) == 0
    a = list(read_rows(tmp_path / "serial" / "study.json"))
    b = list(read_rows(tmp_path / "remote" / "study.json"))
    assert a == b and a
    prov = json.loads((tmp_path / "remote" / "study.json").read_text())["provenance"]
    assert address in json.dumps(prov)


def test_exhaustion_is_a_row_and_a_report_section(tmp_path: Path) -> None:
    out = tmp_path / "r"
    code = main(["study", "--policy", "gpuvm_legacy_trigger", "--preset", "msm-kms",
                 "--resolution", "4k", "--layers", "2", "--frames", "80",
                 "--workload", "pageflip", "--out", str(out), "--no-charts"])  # fmt: skip
    assert code == 0
    rows = list(read_rows(out / "study.json"))
    ex = [r for r in rows if r["status"] == "exhausted"]
    assert ex and ex[0]["errno"] == "ENOSPC" and isinstance(ex[0]["failed_at_frame"], int)
    md = (out / "report.md").read_text()
    assert "## Runs that failed" in md and f"exhausted @{ex[0]['failed_at_frame']}" in md


def test_out_not_writable_is_one_line_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as e:
        main(["study", "--out", str(tmp_path / "file" / "sub"), "--frames", "5"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--out" in err


def test_spec_schema_error_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "study.toml"
    bad.write_text('[study]\npolicies = ["gpuvm_eager"]\nlayers = [0]\n')
    with pytest.raises(SystemExit) as e:
        main(["study", "--spec", str(bad), "--json"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "study.layers" in err


def test_spec_file_and_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = loads_spec(
        '[study]\npolicies = ["gpuvm_eager"]\npresets = ["msm-kms"]\nframes = 10\n'
        'workloads = ["pageflip"]\nsources = ["swapchain"]\npage_size = ["4K", "64K"]\n'
        'resolutions = ["2560x1080"]\n'
    )
    rows = rows_of(spec, Serial())
    assert {r["page_size"] for r in rows} == {4096, 65536}
    assert {r["resolution"] for r in rows} == {"2560x1080"}


def test_interrupt_keeps_rows_written(tmp_path: Path) -> None:
    sink = RowSink(tmp_path, {"version": "x"})
    spec = small("gpuvm_eager")
    for i, row in enumerate(iter_rows(spec.runs(), spec.preset_table)):
        sink.write(row)
        if i == 2:
            break
    sink.close()
    assert len(list(read_rows(tmp_path / "study.json"))) == 3
    assert not list(tmp_path.glob("*.partial"))


def test_ctrl_c_exits_130_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import gpuvm.study.sweep as sweep

    real = sweep.record
    calls = {"n": 0}

    def interrupted(*a: object) -> object:
        calls["n"] += 1
        if calls["n"] == sweep.BATCH_RUNS + 2:  # in the second batch
            raise KeyboardInterrupt
        return real(*a)  # type: ignore[arg-type]

    monkeypatch.setattr(sweep, "record", interrupted)
    out = tmp_path / "r"
    code = main(["study", "--policy", "gpuvm_eager", "--frames", "8", "--out", str(out),
                 "--resolution", "1080p,4k", "--no-charts"])  # fmt: skip
    assert code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted" in err[0]
    kept = list(read_rows(out / "study.json"))
    assert kept and len(kept) % len(builtin_presets()) == 0  # whole batches, every preset


def test_rerun_leaves_no_stale_charts(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "r"
    base = ["study", "--policy", "gpuvm_eager", "--preset", "msm-kms", "--frames", "8",
            "--workload", "pageflip", "--out", str(out)]  # fmt: skip
    assert main([*base, "--resolution", "1080p,4k"]) == 0
    assert any("4k" in p.name for p in out.glob("*.png"))
    assert main(base) == 0
    assert not any("4k" in p.name for p in out.glob("*.png"))
    assert list(out.glob("*.png"))


def test_trace_and_flip_name_a_user_policy(
    user_module: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from gpuvm.observe.trace import replay

    trace = (
        '{"format": "gpuvm-trace", "version": 1}\n'
        '{"op": "device", "flavour": "msm", "policy": "mypolicies:LruDisplayCache", "id": "d0"}\n'
        '{"op": "device_close", "device": "d0"}\n'
    )
    result = replay(trace)
    assert result.checker.ok
    assert main(["flip", "--policy", "mypolicies:LruDisplayCache", "--frames", "8"]) == 0
    assert "LruDisplayCache" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["flip", "--policy", "mypolicies:Nope", "--frames", "8"])
    assert e.value.code == 2
