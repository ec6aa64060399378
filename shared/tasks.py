"""Stopping background tasks, the same way everywhere."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has stopped."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def finish(task: asyncio.Task[Any] | None, *, timeout_s: float) -> None:
    """Wait for a task that was told to stop; cancel it if it takes over ``timeout_s``."""
    if task is None:
        return
    # wait_for cancels the task, and waits for it, when the time runs out.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(task, timeout_s)


async def wait_until_set(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for ``event`` at most ``timeout_s``; True if it was set.

    For the wait at the top of a background loop: on Python 3.11, ``asyncio.wait_for``
    swallows a cancellation that arrives just as the event is set, and such a loop then
    never stops. ``asyncio.timeout`` always lets the cancellation through.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True
