"""The per-file mode choice: every (flavour, state, call) against the errno tables of
msm ``adreno_set_param`` / ``msm_ioctl_vm_bind`` and nouveau ``nouveau_uvmm_ioctl_vm_init`` /
``nouveau_gem_ioctl_pushbuf`` / ``nouveau_exec_ioctl_exec``, written out here independently
of ``gpuvm.drm.modes``; a refused call
leaves the whole driver layer unchanged."""

from __future__ import annotations

import errno as E
from collections.abc import Callable

import pytest

from gpuvm.core.errors import ModeError
from gpuvm.drm.device import Device, snapshot
from gpuvm.drm.file import BindMap, DrmFile
from gpuvm.drm.modes import CALLS, MSM_RULES, NOUVEAU_RULES, ModeState

F, L, P, B = ModeState.FRESH, ModeState.LEGACY, ModeState.BIND_PENDING, ModeState.BIND
OK = None

# (state, call) -> (errno or OK, state after)
MSM_EXPECT: dict[tuple[ModeState, str], tuple[int | None, ModeState]] = {
    (F, "gem_new"): (OK, F),
    (F, "get_param"): (OK, L),
    (F, "en_vm_bind"): (OK, P),
    (F, "get_iova"): (OK, L),
    (F, "set_iova"): (OK, L),
    (F, "submit"): (OK, L),
    (F, "exec"): (E.EINVAL, F),
    (F, "vm_bind"): (E.EINVAL, F),
    (P, "gem_new"): (OK, P),
    (P, "get_param"): (OK, B),
    (P, "en_vm_bind"): (OK, P),
    (P, "get_iova"): (E.EINVAL, P),
    (P, "set_iova"): (E.EINVAL, P),
    (P, "submit"): (E.EINVAL, P),
    (P, "exec"): (OK, B),
    (P, "vm_bind"): (OK, B),
    (L, "gem_new"): (OK, L),
    (L, "get_param"): (OK, L),
    (L, "en_vm_bind"): (E.EBUSY, L),
    (L, "get_iova"): (OK, L),
    (L, "set_iova"): (OK, L),
    (L, "submit"): (OK, L),
    (L, "exec"): (E.EINVAL, L),
    (L, "vm_bind"): (E.EINVAL, L),
    (B, "gem_new"): (OK, B),
    (B, "get_param"): (OK, B),
    (B, "en_vm_bind"): (E.EBUSY, B),
    (B, "get_iova"): (E.EINVAL, B),
    (B, "set_iova"): (E.EINVAL, B),
    (B, "submit"): (E.EINVAL, B),
    (B, "exec"): (OK, B),
    (B, "vm_bind"): (OK, B),
}

NOUVEAU_EXPECT: dict[tuple[ModeState, str], tuple[int | None, ModeState]] = {
    (F, "gem_new"): (OK, L),
    (F, "channel_alloc"): (OK, L),
    (F, "vm_init"): (OK, B),
    (F, "submit"): (E.ENOENT, F),
    (F, "exec"): (E.ENOSYS, F),
    (F, "vm_bind"): (E.ENOSYS, F),
    (L, "gem_new"): (OK, L),
    (L, "channel_alloc"): (OK, L),
    (L, "vm_init"): (E.ENOSYS, L),
    (L, "submit"): (OK, L),
    (L, "exec"): (E.ENOSYS, L),
    (L, "vm_bind"): (E.ENOSYS, L),
    (B, "gem_new"): (OK, B),
    (B, "channel_alloc"): (OK, B),
    (B, "vm_init"): (E.EBUSY, B),
    (B, "submit"): (E.ENOSYS, B),
    (B, "exec"): (OK, B),
    (B, "vm_bind"): (OK, B),
}

STATES = {"msm": (F, P, L, B), "nouveau": (F, L, B)}
EXPECT = {"msm": MSM_EXPECT, "nouveau": NOUVEAU_EXPECT}

CTX = 0x1_0000_0000

CALL: dict[str, Callable[[DrmFile, int], object]] = {
    "gem_new": lambda f, h: f.create_bo(4096),
    "get_param": lambda f, h: f.get_param(),
    "en_vm_bind": lambda f, h: f.set_param_vm_bind(),
    "vm_init": lambda f, h: f.vm_init(),
    "channel_alloc": lambda f, h: f.channel_alloc(),
    "get_iova": lambda f, h: f.get_iova(h),
    "set_iova": lambda f, h: f.set_iova(h, CTX + 0x100000),
    "submit": lambda f, h: f.submit([h]),
    "exec": lambda f, h: f.exec(),
    "vm_bind": lambda f, h: f.vm_bind([BindMap(CTX, 8192, h)]),
}


def file_in(flavour: str, state: ModeState) -> tuple[Device, DrmFile, int]:
    """A file of a fresh device in ``state``, holding one handle that it got without
    choosing a mode (a PRIME import from another file)."""
    dev = Device(flavour, "gpuvm_vma_ref")
    other = dev.open(name="other")
    f = dev.open(name="subject")
    fd = other.fds.send(other.prime_handle_to_fd(other.create_bo(8192)), f.fds)
    h = f.prime_fd_to_handle(fd)
    assert f.state is F
    if flavour == "msm":
        if state in (P, B):
            f.set_param_vm_bind()
        if state in (L, B):
            f.get_param()
    elif state is L:
        f.channel_alloc()
    elif state is B:
        f.vm_init()
    assert f.state is state
    return dev, f, h


CASES = [
    (flavour, state, call)
    for flavour, states in STATES.items()
    for state in states
    for call in CALLS
]


@pytest.mark.parametrize(("flavour", "state", "call"), CASES)
def test_mode_table(flavour: str, state: ModeState, call: str) -> None:
    dev, f, h = file_in(flavour, state)
    errno, after = EXPECT[flavour].get((state, call), (E.ENOTTY, state))
    before = snapshot(dev)
    if errno is None:
        CALL[call](f, h)
        dev.check_invariants()
    else:
        with pytest.raises(ModeError) as ei:
            CALL[call](f, h)
        assert ei.value.errno == errno, ei.value
        assert snapshot(dev) == before
    assert f.state is after
    assert (f.vm is None) == (after in (F, P))


def test_tables_cover_exactly_the_expected_cases() -> None:
    assert {k: (r.errno, r.to or k[0]) for k, r in MSM_RULES.items()} == MSM_EXPECT
    assert {k: (r.errno, r.to or k[0]) for k, r in NOUVEAU_RULES.items()} == NOUVEAU_EXPECT


def test_choice_is_fixed_once_the_vm_exists() -> None:
    dev = Device("msm", "gpuvm_vma_ref")
    f = dev.open()
    h = f.create_bo(4096)
    assert f.state is F  # GEM_NEW does not create the msm context VM
    f.get_iova(h)
    vm = f.vm
    assert f.state is L and vm is not None
    for call in ("en_vm_bind", "vm_bind", "exec"):
        with pytest.raises(ModeError):
            CALL[call](f, h)
    assert f.vm is vm and f.mode == "legacy"


def test_no_vm_bind_before_6_17_or_without_per_process_pgtables() -> None:
    dev = Device("msm", "legacy_pre_6_17")
    f = dev.open()
    before = snapshot(dev)
    with pytest.raises(ModeError) as ei:
        f.set_param_vm_bind()
    assert ei.value.errno == E.EINVAL and snapshot(dev) == before
    dev2 = Device("msm", "gpuvm_vma_ref", per_process_pgtables=False)
    g = dev2.open()
    with pytest.raises(ModeError) as ei:
        g.set_param_vm_bind()
    assert ei.value.errno == E.EINVAL and g.state is F


def test_vm_types_follow_the_mode() -> None:
    from gpuvm.drm.driver import DriverVm, ManagedVm
    from legacy import AddressSpace

    for policy, legacy_type in (("legacy_pre_6_17", AddressSpace), ("gpuvm_vma_ref", ManagedVm)):
        dev = Device("msm", policy)
        f = dev.open()
        f.get_param()
        assert isinstance(f.vm, legacy_type)
        assert f.vm.tlb_kind == "context_flush"
    dev = Device("msm", "gpuvm_vma_ref")
    g = dev.open()
    g.set_param_vm_bind()
    g.get_param()
    assert type(g.vm) is DriverVm and g.vm.tlb_kind == "context_flush"
    assert dev.display_vm is not None and dev.display_vm.tlb_kind == "per_page"
