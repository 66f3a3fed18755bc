"""KMS on an xe device is refused (``NotModelled``) rather than answered with msm's display
semantics: xe's display is the i915 display code (GGTT pinning, its own fb rules), which the
model does not have.  Every refusal leaves the model unchanged."""

from __future__ import annotations

import pytest

from gpuvm import Device, GpuvmError, NotModelled, NotSupported
from gpuvm.drm.device import snapshot


@pytest.mark.parametrize("flavour", ["xe", "xe-64k"])
def test_xe_kms_ioctls_are_not_modelled(flavour: str) -> None:
    dev = Device(flavour=flavour)
    f = dev.open()
    h = f.create_bo(0x10000)
    before = snapshot(dev)
    with pytest.raises(NotModelled, match=r"ADDFB2 .*xe's display") as ei:
        f.add_fb(h)
    assert isinstance(ei.value, NotSupported) and isinstance(ei.value, GpuvmError)
    with pytest.raises(NotModelled, match="ATOMIC"):
        f.page_flip(dev.plane(0), None)
    with pytest.raises(NotModelled, match="ATOMIC"):
        f.atomic([(dev.plane(0), None)])
    assert snapshot(dev) == before


def test_msm_kms_still_works() -> None:
    dev = Device(flavour="msm")
    f = dev.open()
    fb = f.add_fb(f.create_bo(0x10000))
    f.page_flip(dev.plane(0), fb)
    assert dev.plane(0).fb is fb
