"""Which failures can clear by themselves and which will recur.

The consume loop retries a *transient* failure (a database failover, Redis
restarting, a timeout, a peer answering 503) with backoff and never dead-letters
it; only a *permanent* failure (a payload that does not validate, an unknown
event version, a handler that says so) goes to the dead-letter topic.
"""

from __future__ import annotations

import enum

import httpx
import pydantic
from redis import exceptions as redis_errors
from sqlalchemy import exc as sa_errors


class TransientError(Exception):
    """A failure that may clear if the same work is tried again later."""


class PermanentError(Exception):
    """A failure that will recur however often the same work is tried."""


class Fault(enum.Enum):
    """How a failure is treated."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"
    UNKNOWN = "unknown"


_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    TransientError,
    TimeoutError,  # asyncio.TimeoutError is this since 3.11
    ConnectionError,  # refused, reset, broken pipe
    sa_errors.OperationalError,  # server gone, failover, "database is locked"
    sa_errors.InterfaceError,
    sa_errors.DisconnectionError,
    sa_errors.TimeoutError,  # pool exhausted
    redis_errors.ConnectionError,  # includes BusyLoadingError
    redis_errors.TimeoutError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
    redis_errors.ReadOnlyError,  # a replica during failover
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)

_PERMANENT_TYPES: tuple[type[BaseException], ...] = (
    PermanentError,
    pydantic.ValidationError,
)


def _classify_one(exc: BaseException) -> Fault:
    if isinstance(exc, _PERMANENT_TYPES):
        return Fault.PERMANENT
    if isinstance(exc, _TRANSIENT_TYPES):
        return Fault.TRANSIENT
    if isinstance(exc, sa_errors.DBAPIError) and exc.connection_invalidated:
        return Fault.TRANSIENT
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return Fault.TRANSIENT if status >= 500 or status == 429 else Fault.PERMANENT
    return Fault.UNKNOWN


def classify(exc: BaseException) -> Fault:
    """Classify ``exc``, looking through what it was raised from (``raise X from Y``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        fault = _classify_one(current)
        if fault is not Fault.UNKNOWN:
            return fault
        current = current.__cause__ or current.__context__
    return Fault.UNKNOWN


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` may clear if the same work is tried again later."""
    return classify(exc) is Fault.TRANSIENT
