"""Background-task helpers: a wait at the top of a loop never loses a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from shared.tasks import wait_until_set


async def test_a_cancellation_that_arrives_as_the_event_is_set_still_cancels() -> None:
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_until_set(event, 10))
    await asyncio.sleep(0)  # it is waiting now
    event.set()
    waiting.cancel()  # in the same turn of the loop (asyncio.wait_for on 3.11 returns here)
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_it_tells_a_set_event_from_a_timeout() -> None:
    event = asyncio.Event()
    assert await wait_until_set(event, 0.01) is False
    event.set()
    assert await wait_until_set(event, 0.01) is True
