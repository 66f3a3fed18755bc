"""u64 arithmetic as the kernel does it: values are exact integers in ``[0, 2**64)``."""

from __future__ import annotations

from gpuvm.core.errors import ArgumentTypeError, InvalidArgument

U64_MAX = (1 << 64) - 1
MASK = U64_MAX


def check_u64(name: str, value: object) -> int:
    """Return ``value`` if it is an int (not a bool) in ``[0, 2**64)``; else raise
    :class:`~gpuvm.core.errors.ArgumentTypeError` (wrong type) or
    :class:`~gpuvm.core.errors.InvalidArgument` (out of range), both
    :class:`~gpuvm.core.errors.InvalidValue`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be an integer, got {value!r}")
    if value < 0 or value > U64_MAX:
        raise InvalidArgument(f"{name}={value} is not a u64")
    return int(value)


def add_overflows(a: int, b: int) -> bool:
    """``check_add_overflow`` for u64: True when ``a + b`` does not fit."""
    return a + b > U64_MAX


def wrap(value: int) -> int:
    """Reduce modulo 2**64, as u64 addition in C does."""
    return value & MASK
