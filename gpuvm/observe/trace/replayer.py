"""Replay: validate a whole trace with :func:`~gpuvm.observe.trace.schema.load`, then
re-run it in a fresh :class:`~gpuvm.observe.trace.session.Session`, requiring each
recorded refusal (the errno a kernel ioctl such as ``drm_gem_prime_fd_to_handle`` or
``drm_gpuvm_sm_map`` returned) and each result to repeat.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from gpuvm.core.errors import GpuvmError
from gpuvm.core.events import Event, EventBus
from gpuvm.observe.checker import LifetimeChecker
from gpuvm.observe.trace.schema import _META, TraceError, load
from gpuvm.observe.trace.session import Session, _Bad

__all__ = [
    "ReplayResult",
    "events_of",
    "replay",
]


@attrs.define(slots=True, eq=False)
class ReplayResult:
    """A successful replay: the session (model, events, checker) and the op count."""

    session: Session
    ops: int

    @property
    def events(self) -> list[Event]:
        return self.session.log.events

    @property
    def checker(self) -> LifetimeChecker:
        return self.session.checker


def replay(
    text: str,
    *,
    check: bool = True,
    policies: dict[str, Any] | None = None,
    text_log: bool = False,
    bus: EventBus | None = None,
    on_op: Callable[[str], None] | None = None,
) -> ReplayResult:
    """Validate ``text`` whole, then replay it into a fresh :class:`Session`.

    Each recorded refusal must be refused again with the same errno, each success must
    succeed with the same result; otherwise :class:`TraceError` names the line.  On error
    the partly replayed model is dropped: nothing escapes but the exception.  ``bus``:
    the session's event bus (to attach cost counters); ``on_op``: called with each op's
    name after it ran (``gpuvm replay --preset`` closes a frame at each ``frame`` op).
    """
    ops = load(text)
    s = Session(check=check, policies=policies, text_log=text_log, bus=bus)
    for n, op, rec in ops:
        fields = {k: v for k, v in rec.items() if k not in _META}
        want_err = rec.get("error")
        try:
            result = s.do(op, **fields)
        except GpuvmError as e:
            if want_err is None:
                raise TraceError(
                    n, f"{op} was refused on replay ({e}) but succeeded when recorded"
                ) from None
            if e.errno_name != want_err:
                raise TraceError(
                    n, f"{op} refused with {e.errno_name} on replay, {want_err} when recorded"
                ) from None
            if on_op is not None:
                on_op(op)
            continue
        except _Bad as e:
            raise TraceError(n, f"{op}: {e}") from None
        except AssertionError as e:
            raise TraceError(n, f"{op} broke a model invariant on replay: {e}") from None
        if want_err is not None:
            raise TraceError(
                n, f"{op} succeeded on replay but was refused ({want_err}) when recorded"
            )
        if "result" in rec and rec["result"] != result:
            raise TraceError(
                n, f"{op} returned {result!r} on replay, {rec['result']!r} when recorded"
            )
        if on_op is not None:
            on_op(op)
    return ReplayResult(s, len(ops))


def events_of(result: ReplayResult, kinds: Iterable[str] | None = None) -> Sequence[Event]:
    ks = None if kinds is None else set(kinds)
    return [e for e in result.events if ks is None or e.kind in ks]
