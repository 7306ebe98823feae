"""Waiting for observable state, with a deadline and a message naming what was awaited.

``wait_until(condition, what)`` asks ``condition()`` again and again (a little less often as
time goes by) and returns its first answer that is neither None nor False; after ``timeout``
seconds it fails with ``WaitTimedOut``: "gave up after 10 s waiting for <what>". ``what`` may
be a callable, asked only then, to put current state (a log, the last value) in the message.
An exception from ``condition`` ends the wait at once (a process that died, say).

``wait_until_async`` is the same for coroutines; its condition may be sync or async. Tests
wait with these rather than sleeping a fixed time: a fixed sleep is too short on a busy
machine and too long everywhere else, and does not say what it waits for.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

Description = str | Callable[[], str]

#: The first pause between two looks at the state; it doubles up to ``MAX_PAUSE``.
FIRST_PAUSE = 0.005
MAX_PAUSE = 0.1


class WaitTimedOut(AssertionError):
    """The awaited state did not come about before the deadline."""


def _gave_up(what: Description, timeout: float) -> WaitTimedOut:
    described = what() if callable(what) else what
    return WaitTimedOut(f"gave up after {timeout:g} s waiting for {described}")


def _arrived(value: object) -> bool:
    return value is not None and value is not False


def wait_until(
    condition: Callable[[], T | None],
    what: Description,
    *,
    timeout: float = 10.0,
    max_pause: float = MAX_PAUSE,
) -> T:
    """``condition()``'s first answer that is not None or False; WaitTimedOut naming ``what``
    once ``timeout`` seconds have passed without one."""
    deadline = time.monotonic() + timeout
    pause = min(FIRST_PAUSE, max_pause)
    while True:
        value = condition()
        if _arrived(value):
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise _gave_up(what, timeout)
        time.sleep(pause)  # between two looks at the state; the deadline bounds the wait
        pause = min(pause * 2, max_pause)


@overload
async def wait_until_async(
    condition: Callable[[], Awaitable[T | None]],
    what: Description,
    *,
    timeout: float = ...,
    max_pause: float = ...,
) -> T: ...


@overload
async def wait_until_async(
    condition: Callable[[], T | None],
    what: Description,
    *,
    timeout: float = ...,
    max_pause: float = ...,
) -> T: ...


async def wait_until_async(
    condition: Callable[[], Any],
    what: Description,
    *,
    timeout: float = 10.0,
    max_pause: float = MAX_PAUSE,
) -> Any:
    """``wait_until`` for a coroutine: the event loop runs on while it waits."""
    deadline = time.monotonic() + timeout
    pause = min(FIRST_PAUSE, max_pause)
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if _arrived(value):
            return value
        if time.monotonic() > deadline:
            raise _gave_up(what, timeout)
        await asyncio.sleep(pause)  # between two looks; the deadline bounds the wait
        pause = min(pause * 2, max_pause)
