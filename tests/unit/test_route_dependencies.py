"""Every dependency of every route is a coroutine: FastAPI runs a plain ``def``
dependency in its thread pool, a thread round trip on every request."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from tools.apidocs import APPS


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def _api_routes(routes: list[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # an included router
        if included is not None:
            yield from _api_routes(included.routes)


def _is_coroutine(call: Callable[..., Any]) -> bool:
    method = getattr(call, "__call__", None)  # noqa: B004 - a class instance such as HTTPBearer
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(method)


@pytest.mark.parametrize("service", sorted(APPS))
def test_no_route_depends_on_a_plain_function(service: str) -> None:
    app = APPS[service]()
    routes = list(_api_routes(app.routes))
    assert routes
    plain = {
        f"{route.path}: {getattr(call, '__qualname__', repr(call))}"
        for route in routes
        for call in _calls(route.dependant)
        if not _is_coroutine(call)
    }
    assert not plain, sorted(plain)
