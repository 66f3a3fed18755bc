"""Argument checks at the API boundary: the type contract of every ioctl-level and core
entry point.

The kernel copies an ioctl's argument struct from user space and checks its fields before
it looks anything up (``drm_ioctl`` then the handler's own ``-EINVAL`` checks); a field
can only hold what its C type holds.  The model's entry points take Python values, so
each one first calls these checks: an integer field must be an ``int`` and not a ``bool``
(``True == 1`` would otherwise find handle 1), within its uAPI width (``__u32`` handles
and flags, ``__u64`` addresses, ``__s32`` fds), and an object argument must be of its
class.  Each check is O(1) and allocates nothing, so a huge count is refused before any
object is built.  Wrong types raise :class:`~gpuvm.core.errors.ArgumentTypeError` (a
``TypeError`` too), out-of-range values :class:`~gpuvm.core.errors.InvalidArgument`; both
carry ``EINVAL`` and both leave the model unchanged, because nothing has happened yet.
"""

from __future__ import annotations

from typing import TypeVar, cast

from gpuvm.core.errors import ArgumentTypeError, BadFd, InvalidArgument

__all__ = [
    "S32_MAX",
    "U32_MAX",
    "U64_MAX",
    "check_bool",
    "check_fd",
    "check_handle",
    "check_instance",
    "check_int",
    "check_optional",
    "check_sequence",
    "check_u32",
    "check_u64",
]

U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1
S32_MAX = (1 << 31) - 1

T = TypeVar("T")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: object, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an ``int`` (not a ``bool``) in ``[lo, hi]`` (either bound optional)."""
    if not _is_int(value):
        raise ArgumentTypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    v = int(cast(int, value))
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        lo_s = "-inf" if lo is None else f"{lo:#x}" if lo > 9 else str(lo)
        hi_s = "inf" if hi is None else f"{hi:#x}" if hi > 9 else str(hi)
        raise InvalidArgument(f"{name}={v} is outside [{lo_s}, {hi_s}]")
    return v


def check_u32(name: str, value: object) -> int:
    """A ``__u32`` field (handles, flags, counts)."""
    return check_int(name, value, 0, U32_MAX)


def check_u64(name: str, value: object) -> int:
    """A ``__u64`` field (addresses, ranges, offsets, sizes)."""
    return check_int(name, value, 0, U64_MAX)


def check_handle(name: str, value: object) -> int:
    """A GEM handle (``__u32``).  Handle 0 is well-formed but never allocated
    (``drm_gem_handle_create_tail`` starts its idr at 1), so its lookup fails ``-ENOENT``
    as the kernel's does; only the width and the type are checked here."""
    return check_u32(name, value)


def check_fd(name: str, value: object) -> int:
    """A file descriptor (``__s32``): negative or too wide is ``-EBADF`` (``fget`` finds
    nothing), a non-integer is an :class:`ArgumentTypeError`."""
    if not _is_int(value):
        raise ArgumentTypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    v = int(cast(int, value))
    if not 0 <= v <= S32_MAX:
        raise BadFd(f"{name}={v} is not a file descriptor")
    return v


def check_bool(name: str, value: object) -> bool:
    """A flag that must be a real ``bool`` (``1`` or ``"yes"`` are refused)."""
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_instance(name: str, value: object, cls: type[T]) -> T:
    """``value`` if it is an instance of ``cls``."""
    if not isinstance(value, cls):
        raise ArgumentTypeError(
            f"{name} must be a {cls.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def check_optional(name: str, value: object, cls: type[T]) -> T | None:
    """``None`` or an instance of ``cls``."""
    if value is None:
        return None
    return check_instance(name, value, cls)


def check_sequence(name: str, value: object, max_len: int | None = None) -> tuple[object, ...]:
    """A list or tuple (not a string, set or generator: they have no order or no length to
    check before use) of at most ``max_len`` items, as a tuple."""
    if not isinstance(value, list | tuple):
        raise ArgumentTypeError(
            f"{name} must be a list or tuple, got {type(value).__name__} {value!r}"
        )
    if max_len is not None and len(value) > max_len:
        raise InvalidArgument(f"{name} has {len(value)} items, more than {max_len}")
    return tuple(value)
