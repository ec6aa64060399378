"""FastAPI dependency aliases shared by the services' routes.

Every dependency is `async def`: FastAPI runs a plain `def` dependency in its thread pool,
a thread round trip on every request (tests/unit/test_route_dependencies.py holds this).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shared.clock import Clock
from shared.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    """The service instance's open connections."""
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_clock(request: Request) -> Clock:
    """The injected clock."""
    clock: Clock = request.app.state.clock
    return clock


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ClockDep = Annotated[Clock, Depends(get_clock)]
