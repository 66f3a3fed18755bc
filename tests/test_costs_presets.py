"""Cost presets: arithmetic, the acceptance figures, TOML round trip and malformed files."""

from __future__ import annotations

import errno
import math
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpuvm import GemObject, GpuVm
from gpuvm.core.errors import GpuvmError, InvalidValue
from gpuvm.core.events import EventBus, EventLog, Ioctl
from gpuvm.observe.costs import (
    RESOLUTIONS,
    CostCounters,
    CostPreset,
    Counts,
    PresetError,
    PresetFormatError,
    UnknownPreset,
    UnknownResolution,
    all_presets,
    budget_pct,
    builtin_presets,
    dumps_presets,
    frame_ms,
    get_preset,
    load_presets,
    loads_presets,
    resolution,
)

FHD_PAGES = 2025
FHD = RESOLUTIONS["1080p"].size


class KmsVm(GpuVm):
    tlb_kind = "per_page"


def eager_flips(vm_cls: type[GpuVm], frames: int, depth: int = 3) -> CostCounters:
    """A 1080p single-layer compositor whose display VM maps the new front buffer and
    unmaps the old one on every flip (the gpuvm_eager shape, driven on the core)."""
    bus = EventBus()
    vm = vm_cls(0, 1 << 40, name="kms", bus=bus)
    c = CostCounters(bus)
    fbs = [GemObject(FHD, name=f"fb{i}", bus=bus) for i in range(depth)]
    vm.map(0, FHD, fbs[0])
    for i in range(1, frames + 1):
        with c.frame():
            bus.emit(Ioctl("ATOMIC_COMMIT"))
            vm.map((i % depth) << 24, FHD, fbs[i % depth])
            vm.unmap(((i - 1) % depth) << 24, FHD)
    return c


def test_builtin_presets() -> None:
    presets = builtin_presets()
    assert list(presets) == [
        "default",
        "intel-tlb",
        "msm-kms",
        "msm-thread",
        "nvidia-cuda-vmm-h200",
        "per-process-flush",
        "sm8150-smmu-after",
        "sm8150-smmu-before",
        "vtd",
    ]
    for name, p in presets.items():
        assert p.name == name and p.source and p.description
        assert p.evidence in ("M", "D", "E")
    assert get_preset("msm-kms") is presets["msm-kms"]


def test_msm_kms_unmap_of_1080p_is_about_5_ms() -> None:
    kms = get_preset("msm-kms")
    unmap = kms.unmap_ms(FHD_PAGES, tlb_kind="per_page")  # on the display (KMS) VM
    assert unmap == pytest.approx(5.1, abs=0.2)
    assert unmap == pytest.approx((20 + FHD_PAGES * 0.0015 + FHD_PAGES * 2.5) / 1000)
    b = kms.breakdown(
        Counts(
            unmap_ops=1,
            pages_unmapped=FHD_PAGES,
            tlb_range_invalidations=1,
            tlb_range_pages=FHD_PAGES,
        )
    )
    assert b.tlb_ms == pytest.approx(5.0625) and b.map_ms == 0
    assert b.unmap_ms == pytest.approx(0.0230375)
    # a context VM (declared context_flush) pays one flush, not the display's per-page cost
    flush = kms.breakdown(
        Counts(unmap_ops=1, pages_unmapped=FHD_PAGES, tlb_flushes=1, tlb_flush_pages=FHD_PAGES)
    )
    assert flush.tlb_ms == pytest.approx(0.03)
    assert kms.unmap_ms(FHD_PAGES) == pytest.approx(0.0530375)
    # scales with pages: 4k is 4x the pages, and 64 KiB pages divide the per-page terms
    assert kms.unmap_ms(8100, tlb_kind="per_page") == pytest.approx(
        (20 + 8100 * 0.0015 + 8100 * 2.5) / 1000
    )
    assert kms.unmap_ms(127, tlb_kind="per_page") < unmap / 15


def test_msm_thread_map_and_unmap_of_1080p() -> None:
    t = get_preset("msm-thread")
    assert t.map_ms(FHD_PAGES) == pytest.approx(0.2, abs=1e-9)
    flip = Counts(map_ops=1, pages_mapped=FHD_PAGES, unmap_ops=1, pages_unmapped=FHD_PAGES)
    assert t.cost(flip) == pytest.approx(0.5, abs=1e-9)
    b = t.breakdown(attrs.evolve(flip, tlb_range_invalidations=1, tlb_range_pages=FHD_PAGES))
    assert b.map_ms == pytest.approx(0.2) and b.unmap_ms == pytest.approx(0.3)
    assert b.tlb_ms == pytest.approx(0.03)  # one invalidation, even on a per-page VM
    assert t.unmap_ms(FHD_PAGES, tlb_kind="per_page") == pytest.approx(0.33)
    # 4k scales per page: 20 us + 8100 x (200 - 20) / 2025 us
    assert t.map_ms(8100) == pytest.approx(0.74)


def test_eager_flip_acceptance_numbers() -> None:
    c = eager_flips(GpuVm, frames=20)
    steady = c.frames_sum(5)
    per = steady.per_frame()
    assert (per["map_ops"], per["unmap_ops"], per["tlb_invalidations"]) == (1.0, 1.0, 1.0)
    thread = get_preset("msm-thread")
    ms = thread.cost_per_frame(steady)
    assert ms == pytest.approx(0.2 + 0.3 + 0.03 + 0.002)
    # msm-kms prices by each VM's declared kind: per page on the display (KMS) VM ...
    kms_vm = eager_flips(KmsVm, frames=20).frames_sum(5)
    kms_ms = get_preset("msm-kms").cost_per_frame(kms_vm)
    assert kms_ms == pytest.approx(5.1, abs=0.2)
    assert budget_pct(kms_ms, 60) == pytest.approx(30.7, abs=1.0)
    # ... and one flush on a context VM (this VM declared nothing: context_flush)
    assert get_preset("msm-kms").cost_per_frame(steady) < 0.1
    # the default preset prices by declaration too
    assert get_preset("default").cost_per_frame(steady) < 0.1
    assert get_preset("default").cost_per_frame(kms_vm) == pytest.approx(kms_ms)


def test_tlb_kind_forcing() -> None:
    c = Counts(tlb_range_invalidations=2, tlb_range_pages=10, tlb_flushes=3, tlb_flush_pages=300)
    base = get_preset("default")
    declared = base.breakdown(c).tlb_ms
    per_page = attrs.evolve(base, tlb_kind="per_page").breakdown(c).tlb_ms
    flush = attrs.evolve(base, tlb_kind="context_flush").breakdown(c).tlb_ms
    assert declared == pytest.approx((10 * 2.5 + 3 * 30) / 1000)
    assert per_page == pytest.approx(310 * 2.5 / 1000)
    assert flush == pytest.approx(5 * 30 / 1000)
    assert get_preset("intel-tlb").breakdown(c).tlb_ms == pytest.approx(5 * 40 / 1000)
    assert get_preset("per-process-flush").unmap_ms(FHD_PAGES) == pytest.approx(0.053, abs=1e-3)


def test_ioctl_and_migration_and_vma_terms() -> None:
    p = attrs.evolve(get_preset("default"), vma_create_us=1.0, vma_destroy_us=3.0)
    c = Counts(
        ioctls=4,
        ioctls_by_name=(("DRM_IOCTL_MODE_ADDFB2", 1), ("GEM_CLOSE", 2), ("rmfb", 1)),
        migrations=1,
        bytes_migrated=FHD,
        vmas_created=2,
        vmas_destroyed=1,
    )
    b = p.breakdown(c)
    assert b.ioctl_ms == pytest.approx((10 + 2 * 2 + 10) / 1000)
    assert b.migrate_ms == pytest.approx(FHD / 25e9 * 1000)  # about 0.33 ms on Gen4 x16
    assert b.vma_ms == pytest.approx(0.005)
    assert b.total_ms == pytest.approx(p.cost(c))
    assert b.per_frame(2).total_ms == pytest.approx(b.total_ms / 2)
    with pytest.raises(PresetError):
        b.per_frame(0)
    with pytest.raises(PresetError):
        p.cost_per_frame(c)


def test_pricing_never_touches_the_model() -> None:
    bus = EventBus()
    log = EventLog()
    bus.subscribe(log)
    vm = GpuVm(0, 1 << 40, name="kms", bus=bus)
    c = CostCounters(bus)
    fb = GemObject(FHD, name="fb", bus=bus)
    vm.map(0, FHD, fb)
    vm.unmap(0, FHD)
    total, n_events, gen = c.total(), len(log.events), vm.generation
    costs = {name: p.cost(total) for name, p in builtin_presets().items()}
    assert (c.total(), len(log.events), vm.generation) == (total, n_events, gen)
    assert costs == {name: p.cost(total) for name, p in builtin_presets().items()}
    assert len(set(costs.values())) >= 3


# --- unknown names ------------------------------------------------------------------------


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(UnknownPreset) as info:
        get_preset("msm-fast")
    msg = str(info.value)
    assert "msm-fast" in msg and "msm-kms" in msg and "per-process-flush" in msg
    assert info.value.errno == errno.ENOENT and isinstance(info.value, GpuvmError)


# --- TOML ---------------------------------------------------------------------------------

USER = """
[preset.my-soc]
description = "a display SMMU that invalidates by ASID"
source = "bench on my board"
evidence = "M"
tlb_kind = "context_flush"
map_fixed_us = 10
map_page_ns = 3
unmap_fixed_us = 12.5
unmap_page_ns = 2
tlb_page_us = 1
tlb_flush_us = 15

[preset.slow-kms]
extends = "msm-kms"
tlb_page_us = 3.0

[preset.slower-kms]
extends = "slow-kms"
unmap_fixed_us = 100.0
"""


def test_user_presets_and_extends(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(USER)
    got = load_presets(path)
    assert list(got) == ["my-soc", "slow-kms", "slower-kms"]
    soc = got["my-soc"]
    assert soc.map_fixed_us == 10.0 and isinstance(soc.map_fixed_us, float)
    assert soc.ioctl_us == 2.0 and soc.migrate_gb_per_s == 25.0
    slow = got["slow-kms"]
    kms = get_preset("msm-kms")
    assert slow.tlb_page_us == 3.0 and slow.tlb_kind == "declared"
    assert slow.ioctl_us_by_name == kms.ioctl_us_by_name
    assert slow.evidence == "E" and "extends msm-kms" in slow.source
    assert got["slower-kms"].tlb_page_us == 3.0 and got["slower-kms"].unmap_fixed_us == 100.0
    everything = all_presets(path)
    assert get_preset("slow-kms", everything) is everything["slow-kms"]
    assert set(builtin_presets()) < set(everything)


def test_round_trip_of_the_builtins() -> None:
    text = dumps_presets(builtin_presets().values())
    again = loads_presets(text, base={})
    assert again == dict(builtin_presets())
    assert dumps_presets(again.values()) == text


names = st.from_regex(r"[a-z][a-z0-9_-]{0,12}", fullmatch=True)
num = st.floats(0, 1e6, allow_nan=False, allow_infinity=False)
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)


@given(
    name=names,
    description=text,
    nums=st.lists(num, min_size=10, max_size=10),
    gbps=st.floats(0.001, 1e3),
    kind=st.sampled_from(["declared", "per_page", "context_flush"]),
    ev=st.sampled_from("MDE"),
    ioctls=st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True), num),
)
def test_round_trip_of_any_preset(
    name: str,
    description: str,
    nums: list[float],
    gbps: float,
    kind: str,
    ev: str,
    ioctls: dict[str, float],
) -> None:
    keys = (
        "ioctl_us",
        "map_fixed_us",
        "map_page_ns",
        "unmap_fixed_us",
        "unmap_page_ns",
        "tlb_page_us",
        "tlb_flush_us",
        "vma_create_us",
        "vma_destroy_us",
        "migrate_fixed_us",
    )
    p = CostPreset(
        name=name,
        description=description,
        source=description[::-1],
        evidence=ev,
        tlb_kind=kind,
        ioctl_us_by_name=ioctls,
        migrate_gb_per_s=gbps,
        **dict(zip(keys, nums, strict=True)),
    )
    assert loads_presets(dumps_presets([p]), base={}) == {name: p}


REQ = """map_fixed_us = 1
map_page_ns = 1
unmap_fixed_us = 1
unmap_page_ns = 1
tlb_page_us = 1
tlb_flush_us = 1
"""


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ("[preset.x\n", "not valid TOML"),
        ("title = 'x'\n", "'title'"),
        ("", "no presets"),
        ("[preset]\n", "no presets"),
        ("preset = 3\n", "no presets"),
        ("[preset]\nx = 3\n", "[preset.x]"),
        ("[preset.x]\n" + REQ + "map_us = 3\n", "'map_us'"),
        ("[preset.x]\nmap_fixed_us = 1\n", "'map_page_ns'"),
        ("[preset.x]\n" + REQ.replace("tlb_flush_us = 1", "tlb_flush_us = '30us'"), "tlb_flush_us"),
        ("[preset.x]\n" + REQ.replace("tlb_page_us = 1", "tlb_page_us = -1"), "tlb_page_us"),
        ("[preset.x]\n" + REQ.replace("tlb_page_us = 1", "tlb_page_us = nan"), "tlb_page_us"),
        ("[preset.x]\n" + REQ.replace("tlb_page_us = 1", "tlb_page_us = true"), "tlb_page_us"),
        ("[preset.x]\n" + REQ + "migrate_gb_per_s = 0\n", "migrate_gb_per_s"),
        ("[preset.x]\n" + REQ + "evidence = 'measured'\n", "'evidence'"),
        ("[preset.x]\n" + REQ + "tlb_kind = 'range'\n", "'tlb_kind'"),
        ("[preset.x]\n" + REQ + "description = 3\n", "'description'"),
        ("[preset.x]\n" + REQ + "ioctl_us_by_name = 3\n", "'ioctl_us_by_name'"),
        ("[preset.x]\n" + REQ + "[preset.x.ioctl_us_by_name]\nADDFB2 = 'a'\n", "ADDFB2"),
        ("[preset.x]\nextends = 'nope'\n", "'nope'"),
        ("[preset.x]\nextends = 3\n", "'extends'"),
        ("[preset.x]\nextends = 'y'\n[preset.y]\nextends = 'x'\n", "cycle"),
        ("[preset.'bad name']\n" + REQ, "bad name"),
    ],
)
def test_malformed_files_are_rejected_with_the_key(tmp_path: Path, doc: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(doc)
    with pytest.raises(PresetFormatError) as info:
        load_presets(path)
    msg = str(info.value)
    assert needle in msg and str(path) in msg and "\n" not in msg.strip()
    assert info.value.errno == errno.EINVAL and isinstance(info.value, GpuvmError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PresetError) as info:
        load_presets(tmp_path / "nope.toml")
    assert info.value.errno == errno.ENOENT and "nope.toml" in str(info.value)


def test_python_construction_is_validated() -> None:
    base = get_preset("default")
    with pytest.raises(PresetFormatError, match="'map_page_ns'"):
        attrs.evolve(base, map_page_ns=-1.0)
    with pytest.raises(PresetFormatError, match="preset name"):
        attrs.evolve(base, name="has space")
    with pytest.raises(PresetFormatError, match="'tlb_kind'"):
        attrs.evolve(base, tlb_kind="sometimes")
    with pytest.raises(PresetError):
        base.unmap_ms(10, tlb_kind="declared")


# --- budgets and resolutions --------------------------------------------------------------


def test_frame_budgets() -> None:
    assert frame_ms(60) == pytest.approx(16.667, abs=1e-3)
    assert [round(frame_ms(hz), 2) for hz in (90, 120, 144, 165, 240)] == [
        11.11,
        8.33,
        6.94,
        6.06,
        4.17,
    ]
    assert budget_pct(5.0, 60) == pytest.approx(30.0)
    assert budget_pct(5.0, 144) == pytest.approx(72.0)
    for bad in (0, -60, math.inf, math.nan, "60"):
        with pytest.raises(InvalidValue):
            frame_ms(bad)  # type: ignore[arg-type]


def test_resolution_table() -> None:
    table = {
        "1080p": (8_294_400, 2025, 127, 4),
        "1440p": (14_745_600, 3600, 225, 8),
        "4k": (33_177_600, 8100, 507, 16),
    }
    for name, (size, p4k, p64k, p2m) in table.items():
        r = resolution(name)
        assert (r.size, r.pages(), r.pages(65536), r.pages(2 << 20)) == (size, p4k, p64k, p2m)
    assert resolution("2160P") is RESOLUTIONS["4k"]
    assert resolution(RESOLUTIONS["1440p"]) is RESOLUTIONS["1440p"]
    assert RESOLUTIONS["1080p"].mib == pytest.approx(7.91, abs=0.01)
    with pytest.raises(UnknownResolution, match="1080p, 1440p, 4k") as info:
        resolution("8k")
    assert isinstance(info.value, InvalidValue)
    with pytest.raises(InvalidValue):
        RESOLUTIONS["4k"].pages(0)


# --- docs/costs.md stays true -------------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "costs.md"


def _blocks(lang: str) -> list[str]:
    parts = DOC.read_text(encoding="utf-8").split("```")
    return [p[len(lang) + 1 :] for p in parts[1::2] if p.startswith(lang + "\n")]


def test_docs_python_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = _blocks("python")
    assert blocks
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {})
    assert "msm-kms: 5.1" in capsys.readouterr().out


def test_docs_toml_example_loads() -> None:
    (block,) = _blocks("toml")
    got = loads_presets(block, origin="docs/costs.md")
    assert list(got) == ["my-soc", "slow-kms"]
    assert got["slow-kms"].tlb_page_us == 3.0 and got["slow-kms"].tlb_kind == "declared"


def test_docs_builtin_table_matches_the_presets() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name, p in builtin_presets().items():
        m, uf = p.map_ms(FHD_PAGES), p.unmap_ms(FHD_PAGES)
        up = p.unmap_ms(FHD_PAGES, tlb_kind="per_page")
        row = f"| `{name}` | {p.evidence} | {p.tlb_kind} | {m:.3f} | {uf:.3f} | {up:.3f} |"
        assert row in text, row
