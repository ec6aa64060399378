"""The whole system as `make run` starts it, on free ports, for the e2e suites."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import AUTH_SECRET, E2E_ENV
from tools.devstack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """All four services as subprocesses, on an embedded broker and Redis."""
    run_dir: Path = tmp_path_factory.mktemp("stack")
    running = Stack.on_free_ports(run_dir, extra_env=E2E_ENV)
    running.secret = AUTH_SECRET
    try:
        running.start(timeout=90)
        yield running
    finally:
        running.stop()
