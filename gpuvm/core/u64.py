"""u64 arithmetic as the kernel does it: values are exact integers in ``[0, 2**64)``."""

from __future__ import annotations

from gpuvm.core.errors import InvalidValue

U64_MAX = (1 << 64) - 1
MASK = U64_MAX


def check_u64(name: str, value: object) -> int:
    """Return ``value`` if it is an int in ``[0, 2**64)``, else raise :class:`InvalidValue`."""
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidValue(f"{name} must be an integer, got {value!r}")
    if value < 0 or value > U64_MAX:
        raise InvalidValue(f"{name}={value} is not a u64")
    return int(value)


def add_overflows(a: int, b: int) -> bool:
    """``check_add_overflow`` for u64: True when ``a + b`` does not fit."""
    return a + b > U64_MAX


def wrap(value: int) -> int:
    """Reduce modulo 2**64, as u64 addition in C does."""
    return value & MASK
