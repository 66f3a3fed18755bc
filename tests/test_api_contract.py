"""The type contract at the API boundary (gpuvm.core.args): every ill-formed call of the
issue's reproducers is refused with a library error (EINVAL where the kernel returns it)
and leaves the whole driver model unchanged (snapshot before == after)."""

from __future__ import annotations

import errno as E
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpuvm import POLICIES, ArgumentTypeError, GpuvmError, InvalidArgument, NoSuchObject
from gpuvm.core.errors import BadFd, InvalidValue
from gpuvm.drm import kms
from gpuvm.drm.device import MAX_PLANES, Device, snapshot
from gpuvm.drm.file import BindMap, BindUnmap, DrmFile
from gpuvm.observe.trace import TraceError, validate

SIZE = 1 << 20
ALL_POLICIES = sorted(POLICIES)


def setup(policy: str = "gpuvm_vma_ref", planes: int = 2) -> tuple[Device, DrmFile, int]:
    dev = Device("msm", policy, planes=planes)
    f = dev.open(name="a")
    h = f.create_bo(SIZE)
    return dev, f, h


def refused(
    dev: Device, call: Callable[[], object], err: type[GpuvmError], errno: int | None = E.EINVAL
) -> GpuvmError:
    before = snapshot(dev)
    with pytest.raises(err) as info:
        call()
    assert isinstance(info.value, GpuvmError)
    if errno is not None:
        assert info.value.errno == errno
    assert snapshot(dev) == before
    dev.check_invariants()
    return info.value


@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("handle", [True, 1.0, [1], "1", None])
def test_gem_close_ill_typed_handle_changes_nothing(policy: str, handle: object) -> None:
    dev, f, h = setup(policy)
    assert h == 1
    refused(dev, lambda: f.gem_close(handle), ArgumentTypeError)  # type: ignore[arg-type]
    assert f.bo(1) is not None  # the handle is still there
    f.gem_close(1)


@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("handle", [-1, 1 << 32])
def test_gem_close_out_of_range_handle(policy: str, handle: int) -> None:
    dev, f, _ = setup(policy)
    refused(dev, lambda: f.gem_close(handle), InvalidArgument)


BAD_HANDLES: list[object] = [True, 1.0, [1]]


@pytest.mark.parametrize("bad", BAD_HANDLES, ids=repr)
@pytest.mark.parametrize(
    "name,call",
    [
        ("add_fb", lambda f, b: f.add_fb(b)),
        ("get_iova", lambda f, b: f.get_iova(b)),
        ("set_iova", lambda f, b: f.set_iova(b, 0x100000)),
        ("submit", lambda f, b: f.submit([b])),
        ("prime_handle_to_fd", lambda f, b: f.prime_handle_to_fd(b)),
    ],
)
def test_ill_typed_handles_legacy(
    name: str, call: Callable[[DrmFile, Any], object], bad: object
) -> None:
    dev, f, _ = setup("legacy_pre_6_17" if "legacy_pre_6_17" in POLICIES else ALL_POLICIES[0])
    refused(dev, lambda: call(f, bad), ArgumentTypeError)


@pytest.mark.parametrize("bad", BAD_HANDLES, ids=repr)
def test_ill_typed_handle_vm_bind(bad: object) -> None:
    dev, f, _ = setup("gpuvm_vma_ref")
    f.set_param_vm_bind()
    refused(
        dev,
        lambda: f.vm_bind([BindMap(0x1_0000_0000, SIZE, bad, 0)]),  # type: ignore[arg-type]
        ArgumentTypeError,
    )
    refused(dev, lambda: f.vm_bind([BindUnmap(True, SIZE)]), ArgumentTypeError)
    refused(dev, lambda: f.vm_bind([1, 2]), ArgumentTypeError)  # type: ignore[list-item]
    refused(dev, lambda: f.vm_bind(None), ArgumentTypeError)  # type: ignore[arg-type]


def test_submit_handles_not_a_list() -> None:
    dev, f, h = setup()
    refused(dev, lambda: f.submit(h), ArgumentTypeError)  # type: ignore[arg-type]
    refused(dev, lambda: f.submit("1"), ArgumentTypeError)  # type: ignore[arg-type]


def test_add_fb_handles_not_ints() -> None:
    dev, f, h = setup()
    refused(dev, lambda: f.add_fb(*[h] * 5), InvalidValue)
    refused(dev, lambda: f.add_fb(), InvalidValue)
    refused(dev, lambda: kms.add_fb(f, h), ArgumentTypeError)  # type: ignore[arg-type]


@pytest.mark.parametrize("index", [2, 2**64, MAX_PLANES])
def test_plane_past_last_is_enoent(index: int) -> None:
    dev, _, _ = setup(planes=2)
    err = refused(
        dev, lambda: dev.plane(index), NoSuchObject if index < MAX_PLANES else InvalidArgument, None
    )
    assert err.errno in (E.ENOENT, E.EINVAL)


def test_plane_negative_is_not_from_the_end() -> None:
    dev, _, _ = setup(planes=2)
    refused(dev, lambda: dev.plane(-1), InvalidArgument)
    refused(dev, lambda: dev.plane(True), ArgumentTypeError)
    assert dev.plane(1) is dev.planes[1]


@pytest.mark.parametrize("bad", [None, 1, "fb", object()], ids=repr)
def test_rm_fb_close_fb_of_non_framebuffer(bad: object) -> None:
    dev, f, _ = setup()
    refused(dev, lambda: f.rm_fb(bad), ArgumentTypeError)  # type: ignore[arg-type]
    refused(dev, lambda: f.close_fb(bad), ArgumentTypeError)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [None, 0, "plane"], ids=repr)
def test_page_flip_with_non_plane(bad: object) -> None:
    dev, f, h = setup()
    fb = f.add_fb(h)
    refused(dev, lambda: f.page_flip(bad, fb), ArgumentTypeError)  # type: ignore[arg-type]
    refused(dev, lambda: f.page_flip(dev.plane(0), h), ArgumentTypeError)  # type: ignore[arg-type]


@pytest.mark.parametrize("flags", [None, 1.0, True, -1, 1 << 32], ids=repr)
def test_prime_flags_ill_formed(flags: object) -> None:
    dev, f, h = setup()
    err = (
        ArgumentTypeError
        if not isinstance(flags, int) or isinstance(flags, bool)
        else InvalidArgument
    )
    refused(dev, lambda: f.prime_handle_to_fd(h, flags), err)  # type: ignore[arg-type]
    fd = f.prime_handle_to_fd(h)
    refused(dev, lambda: f.prime_fd_to_handle(fd, flags), err)  # type: ignore[arg-type]


@pytest.mark.parametrize("fd", [True, 1.0, None, [3]], ids=repr)
def test_prime_fd_ill_typed(fd: object) -> None:
    dev, f, _ = setup()
    refused(dev, lambda: f.prime_fd_to_handle(fd), ArgumentTypeError)  # type: ignore[arg-type]


@pytest.mark.parametrize("fd", [-1, 1 << 31])
def test_prime_fd_out_of_range_is_ebadf(fd: int) -> None:
    dev, f, _ = setup()
    refused(dev, lambda: f.prime_fd_to_handle(fd), BadFd, E.EBADF)


@pytest.mark.parametrize("method", ["evict", "purge", "wait_idle", "retire"])
@pytest.mark.parametrize("bad", [None, 1, "bo"], ids=repr)
def test_device_entry_points_refuse_non_objects(method: str, bad: object) -> None:
    dev, _, _ = setup()
    if method == "retire" and bad is None:
        assert dev.retire(None) is None  # None means "the oldest job": well-formed
        return
    refused(dev, lambda: getattr(dev, method)(bad), ArgumentTypeError)


@pytest.mark.parametrize(
    "kwargs,err",
    [
        ({"planes": 2**64}, InvalidArgument),
        ({"planes": MAX_PLANES + 1}, InvalidArgument),
        ({"planes": -1}, InvalidArgument),
        ({"planes": True}, ArgumentTypeError),
        ({"planes": 1.0}, ArgumentTypeError),
        ({"display": 1}, ArgumentTypeError),
        ({"name": 3}, ArgumentTypeError),
        ({"display_window": (0, 2**64)}, InvalidArgument),
    ],
)
def test_device_constructor_contract(kwargs: dict[str, Any], err: type[GpuvmError]) -> None:
    with pytest.raises(err) as info:
        Device("msm", "gpuvm_vma_ref", **kwargs)
    assert info.value.errno == E.EINVAL


def test_device_max_planes_is_accepted() -> None:
    dev = Device("msm", "gpuvm_vma_ref", planes=MAX_PLANES)
    assert len(dev.planes) == MAX_PLANES


def _planes_trace(planes: int) -> str:
    return (
        json.dumps({"format": "gpuvm-trace", "version": 1})
        + "\n"
        + json.dumps(
            {
                "op": "device",
                "id": "d1",
                "flavour": "msm",
                "policy": "gpuvm_vma_ref",
                "planes": planes,
            }
        )
        + "\n"
    )


def test_planes_trace_refused_at_validation() -> None:
    """Validation refuses the huge plane count, so replay never builds a device."""
    with pytest.raises(TraceError) as info:
        validate(_planes_trace(2**64))
    assert info.value.line == 2 and "planes" in info.value.reason
    assert validate(_planes_trace(MAX_PLANES)) == 1


def test_planes_trace_replay_one_line_exit_2(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text(_planes_trace(2**64))
    out = subprocess.run(
        [sys.executable, "-m", "gpuvm", "replay", str(trace)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "planes" in lines[0] and ":2:" in lines[0]
