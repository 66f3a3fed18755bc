"""The multi-GPU dma-buf scenarios S1-S7, the VRAM-only import (V) and late attachers (L),
with their numbers pinned, and the ``gpuvm dmabuf`` CLI."""

from __future__ import annotations

import json

import pytest

from gpuvm.core.errors import InvalidValue
from gpuvm.drm.placement import MIB
from gpuvm.study.cli import main
from gpuvm.study.dmabuf_scenarios import (
    FRAME_BYTES,
    SCENARIOS,
    ScenarioResult,
    format_result,
    l_late_attach,
    run,
    s1_self_import,
    s2_plain_igpu_import,
    s3_no_move_probe,
    s4_no_move_after_eviction,
    s5_ping_pong,
    s6_access_query,
    s7_igpu_client_dgpu_display,
    v_vram_only_import,
)

MS_PER_BUFFER_24 = 1.38  # 33,177,600 B at 24 GB/s


def test_frame_geometry() -> None:
    assert FRAME_BYTES == 33_177_600
    assert FRAME_BYTES // 4096 == 8100


def test_s1_self_import_no_copies() -> None:
    r = s1_self_import()
    assert r.fact("self_import") is True
    assert r.fact("attachments") == 0
    assert (r.moves, r.link_bytes, r.maps, r.unmaps, r.notifies) == (0, 0, 0, 0, 0)
    assert r.pins == 1 and r.pinned_vram_bytes == FRAME_BYTES  # direct scanout pin in VRAM
    assert r.errors == ()
    assert r.frame_copy_ms == 0.0


def test_s2_plain_import_pins_in_gtt() -> None:
    r = s2_plain_igpu_import()
    assert r.fact("static_import") is True
    assert r.moves == 3 and r.link_bytes == 3 * FRAME_BYTES
    assert round(r.fact("per_buffer_ms"), 2) == MS_PER_BUFFER_24  # type: ignore[call-overload]
    assert round(r.migration_ms, 2) == 4.15
    assert r.pins == 3
    assert r.pinned_tt_bytes == 3 * FRAME_BYTES
    assert round(r.pinned_tt_bytes / MIB, 1) == 94.9
    assert r.maps == 3 and r.unmaps == 0 and r.notifies == 0
    assert r.pte_writes == 3 * 8100
    assert r.errors == (("dGPU scanout pin in VRAM", "EINVAL"),)
    # steady state: nothing moves any more; one cross-GPU copy per frame
    assert r.frame_moves == 0
    assert round(r.frame_copy_ms, 2) == 1.38
    assert r.fact("client_renders_over_pcie_bytes_per_frame") == FRAME_BYTES


def test_s2_at_pcie3() -> None:
    r = s2_plain_igpu_import(12.0)
    assert round(r.fact("per_buffer_ms"), 2) == 2.76  # type: ignore[call-overload]
    assert round(r.migration_ms, 2) == 8.29


def test_s3_no_move_probe_refused_then_self_import() -> None:
    r = s3_no_move_probe()
    assert r.rfc is not None and "NO_MOVE" in r.rfc  # issue 14: labelled as an RFC
    assert "[RFC: " in format_result(r).splitlines()[0]
    assert r.errors == (("NO_MOVE import on iGPU", "EINVAL"),) * 3
    assert (r.moves, r.link_bytes, r.maps, r.notifies) == (0, 0, 0, 0)
    assert r.fact("dgpu_self_import") is True
    assert r.pins == 1 and r.pinned_vram_bytes == FRAME_BYTES and r.pinned_tt_bytes == 0


def test_s4_evicted_buffer_passes_probe_and_stays_in_gtt() -> None:
    r = s4_no_move_after_eviction()
    assert r.rfc is not None and r.as_dict()["rfc"] == r.rfc
    assert r.fact("placement_before_pressure") == "VRAM"
    assert r.fact("evicted_buffers") == 1
    assert r.fact("no_move_probe_ok") is True
    # objection 1: the probe sees the current placement, the optimal one is out of reach
    assert r.fact("query_current_ok") is True
    assert r.fact("query_optimal_ok") is False
    assert r.moves == 1 and r.link_bytes == FRAME_BYTES  # the copy was paid by the eviction
    assert round(r.migration_ms, 2) == 1.38
    assert r.pins == 1 and r.pinned_tt_bytes == FRAME_BYTES
    assert r.fact("final_domain") == "TT"
    assert r.frame_moves == 0 and round(r.frame_copy_ms, 2) == 1.38  # S2's steady state
    assert r.errors == (("dGPU scanout pin in VRAM", "EINVAL"),)


def test_s5_ping_pong_numbers() -> None:
    r = s5_ping_pong()
    assert r.fact("dynamic_import") is True and r.fact("peer2peer") is False
    assert r.frames == 60
    assert r.frame_moves == 2
    assert r.frame_link_bytes == 2 * FRAME_BYTES
    assert round(r.frame_copy_ms, 2) == 2.76
    assert round(r.link_gbps, 2) == 3.98
    assert r.frame_pte == 2 * 8100
    assert r.pins == 0
    # per frame: one map, one unmap (of the stale mapping), two move_notify calls
    assert r.maps == 61 and r.unmaps == 60 and r.notifies == 121


def test_s5_settles_with_no_repromote_rule() -> None:
    r = s5_ping_pong(repromote=False)
    assert r.moves == 1 and r.link_bytes == FRAME_BYTES
    assert r.frame_moves == 0 and r.frame_link_bytes == 0 and r.frame_pte == 0
    assert r.fact("final_domain") == "TT"


def test_s6_query_answers() -> None:
    r = s6_access_query()
    assert r.fact("igpu") is False
    assert r.fact("dgpu-self") is True and r.fact("dgpu-self.path") == "self"
    assert r.fact("dgpu2-p2p") is True and r.fact("dgpu2-p2p.path") == "p2p"
    assert r.fact("dgpu2-p2p.read_gbps") == 24.0
    assert r.fact("soc-display") is True and r.fact("soc-display.path") == "system"
    assert r.fact("exporter_domain") == "VRAM"
    assert (r.moves, r.maps, r.pins) == (0, 0, 0)


def test_s7_igpu_client_dgpu_display() -> None:
    r = s7_igpu_client_dgpu_display()
    assert r.fact("dynamic_import") is True and r.fact("peer2peer") is False
    assert r.fact("import_domain") == "SYSTEM"
    assert r.fact("exporter_pinned_at_attach") is True  # i915 exporter
    assert r.link_bytes == 0  # the client's pages never cross the link by migration
    assert r.errors == (("dGPU scanout pin of the import in VRAM", "EINVAL"),)
    assert round(r.frame_copy_ms, 2) == 1.38


def test_vram_only_import_refused_and_copy_priced() -> None:
    r = v_vram_only_import()
    assert r.errors == (("bochs import of a system-memory dma-buf", "EINVAL"),)
    assert r.fact("copy_target") == "VRAM"
    assert round(r.frame_copy_ms, 2) == 1.38
    assert round(v_vram_only_import(12.0).frame_copy_ms, 2) == 2.76


def test_late_attach() -> None:
    r = l_late_attach()
    assert r.fact("early_first_map_domain") == "TT" and r.fact("early_moves") == 0
    assert r.fact("late_first_map_domain") == "VRAM"
    assert r.fact("late_after_static_map") == "TT"
    assert r.fact("late_notifies") == 1
    assert r.moves == 1 and r.link_bytes == FRAME_BYTES
    assert r.fact("pinned_domain") == "VRAM"
    # issue 14: the late attach succeeds, the refusal is at its first map
    assert r.errors == (("first map of a late static attacher to a VRAM-pinned buffer", "EBUSY"),)


def test_run_and_format() -> None:
    assert [r.key for r in run("S5")] == ["S5", "S5-settled"]
    with pytest.raises(InvalidValue):
        run("S9")
    with pytest.raises(InvalidValue):
        run("S1", 0.0)
    text = format_result(run("S2")[0])
    assert "4.15 ms" in text and "EINVAL" in text and "94.9 MiB" in text


def test_results_are_frozen_values() -> None:
    r = SCENARIOS["S1"](24.0)
    assert isinstance(r, ScenarioResult)
    with pytest.raises(AttributeError):
        r.moves = 5  # type: ignore[misc]
    assert r == SCENARIOS["S1"](24.0)


def test_cli_dmabuf_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dmabuf", "--scenario", "S5"]) == 0
    out = capsys.readouterr().out
    assert "2.76 ms of copies" in out and "3.98 GB/s" in out and "16200 PTE" in out


def test_cli_dmabuf_json_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dmabuf", "--json", "--bandwidth", "12"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["key"] for r in rows] == list(SCENARIOS)
    s2 = next(r for r in rows if r["key"] == "S2")
    assert s2["gbps"] == 12.0 and round(s2["migration_ms"], 2) == 8.29
    assert s2["errors"] == [["dGPU scanout pin in VRAM", "EINVAL"]]


@pytest.mark.parametrize("argv", [["--scenario", "S9"], ["--bandwidth", "0"]])
def test_cli_dmabuf_bad_args(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["dmabuf", *argv])
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err
