"""gpuvm-model: an executable model of Linux DRM GPU VA management.

The core (``gpuvm.core``: ``vm``, ``va``, ``vmbo``, ``gem``, ``ops``, ``splitmerge``,
``vatree``, ``refs``, ``events``, ``errors``) models ``drivers/gpu/drm/drm_gpuvm.c`` op for
op; the legacy path (``legacy``), the driver layer (``gpuvm.drm``), the observers
(``gpuvm.observe``) and the studies (``gpuvm.study``) build on it, in that order.
"""

from gpuvm.core.compiled import compiled
from gpuvm.core.errors import (
    AlreadyInserted,
    ArgumentTypeError,
    ContextUnusable,
    FenceSignallingViolation,
    GpuvmError,
    ImmediateModeMismatch,
    InitOverflow,
    InjectedFault,
    InvalidArgument,
    InvalidRange,
    InvalidValue,
    LeakError,
    LinkError,
    LockMisuse,
    LockNotHeld,
    NoObject,
    NoSuchObject,
    NotImmediateMode,
    NotInserted,
    NotModelled,
    NotSupported,
    OutOfBounds,
    RefcountUnderflow,
    StaleOps,
    UseAfterFree,
    VaExists,
    VaInUse,
    ZeroRange,
)
from gpuvm.core.events import EventBus, EventLog
from gpuvm.core.gem import GemObject, Lock, Resv, locked
from gpuvm.core.ops import (
    MapOp,
    MapRequest,
    OpList,
    Piece,
    PrefetchOp,
    RemapOp,
    UnmapOp,
    UnmapRequest,
)
from gpuvm.core.refs import CALLER, OWNER, Holder, explain
from gpuvm.core.va import Va
from gpuvm.core.vatree import RefDirection, VaIndex
from gpuvm.core.vm import GpuVm, GpuVmFlags
from gpuvm.core.vmbo import VmBo, gem_evict
from gpuvm.drm.atomic import atomic_commit
from gpuvm.drm.bind_faults import vm_bind_fault
from gpuvm.drm.device import Device, snapshot
from gpuvm.drm.file import BindMap, BindUnmap, DrmFile
from gpuvm.drm.kernels import KERNELS, KernelProfile
from gpuvm.drm.modes import ModeState
from gpuvm.drm.policies import POLICIES, TeardownPolicy, make_policy
from gpuvm.drm.xe import BindUnmapAll
from gpuvm.observe.costs import (
    CostBreakdown,
    CostCounters,
    CostPreset,
    Counts,
    FrameScope,
    FrameScopeError,
    PresetError,
    PresetFormatError,
    UnknownPreset,
    budget_pct,
    builtin_presets,
    frame_ms,
    get_preset,
    load_presets,
)

__version__ = "0.2.0"

__all__ = [
    "CALLER",
    "KERNELS",
    "OWNER",
    "POLICIES",
    "AlreadyInserted",
    "ArgumentTypeError",
    "BindMap",
    "BindUnmap",
    "BindUnmapAll",
    "ContextUnusable",
    "CostBreakdown",
    "CostCounters",
    "CostPreset",
    "Counts",
    "Device",
    "DrmFile",
    "EventBus",
    "EventLog",
    "FenceSignallingViolation",
    "FrameScope",
    "FrameScopeError",
    "GemObject",
    "GpuVm",
    "GpuVmFlags",
    "GpuvmError",
    "Holder",
    "ImmediateModeMismatch",
    "InitOverflow",
    "InjectedFault",
    "InvalidArgument",
    "InvalidRange",
    "InvalidValue",
    "KernelProfile",
    "LeakError",
    "LinkError",
    "Lock",
    "LockMisuse",
    "LockNotHeld",
    "MapOp",
    "MapRequest",
    "ModeState",
    "NoObject",
    "NoSuchObject",
    "NotImmediateMode",
    "NotInserted",
    "NotModelled",
    "NotSupported",
    "OpList",
    "OutOfBounds",
    "Piece",
    "PrefetchOp",
    "PresetError",
    "PresetFormatError",
    "RefDirection",
    "RefcountUnderflow",
    "RemapOp",
    "Resv",
    "StaleOps",
    "TeardownPolicy",
    "UnknownPreset",
    "UnmapOp",
    "UnmapRequest",
    "UseAfterFree",
    "Va",
    "VaExists",
    "VaInUse",
    "VaIndex",
    "VmBo",
    "ZeroRange",
    "atomic_commit",
    "budget_pct",
    "builtin_presets",
    "compiled",
    "explain",
    "frame_ms",
    "gem_evict",
    "get_preset",
    "load_presets",
    "locked",
    "make_policy",
    "snapshot",
    "vm_bind_fault",
]
