"""FastAPI dependency aliases shared by the services' routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shared.clock import Clock
from shared.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    """The service instance's open connections."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_clock(request: Request) -> Clock:
    """The injected clock."""
    clock: Clock = request.app.state.clock
    return clock


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ClockDep = Annotated[Clock, Depends(get_clock)]
