"""`make run` as a supervisor, with real processes: what crashes comes back while the
rest keeps serving, Redis keeps its data across a restart, and however the supervisor
ends (SIGTERM, or SIGKILL) it leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from tests.harness import AUTH_SECRET
from tools.devstack import ROOT, STATE_FILE, STOP_TIMEOUT_S


@dataclass
class Supervised:
    """A running ``python -m tools.devstack`` and what it wrote to ``stack.json``."""

    process: subprocess.Popen[str]
    state: dict[str, object]
    output: list[str]

    def url(self, service: str) -> str:
        services = self.state["services"]
        assert isinstance(services, dict)
        return str(services[service])

    def child(self, needle: str) -> psutil.Process:
        for child in psutil.Process(self.process.pid).children(recursive=True):
            if needle in " ".join(child.cmdline()):
                return child
        raise LookupError(needle)

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.state['metrics_port']}/metrics").text


def _start(run_dir: Path) -> Supervised:
    env = dict(os.environ, PYTHONPATH=str(ROOT), AUTH_SECRET=AUTH_SECRET)
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "DATABASE_URL"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.devstack", "--run-dir", str(run_dir), "--free-ports"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output: list[str] = []
    for line in process.stdout:
        output.append(line)
        if "Ctrl-C stops everything" in line or process.poll() is not None:
            break
    assert "All four services ready" in "".join(output), "".join(output)
    state = json.loads((run_dir / STATE_FILE).read_text())
    return Supervised(process, state, output)


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Supervised]:
    running = _start(tmp_path)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(check: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s}s")


def test_a_killed_service_and_redis_come_back_while_the_rest_keeps_serving_then_sigterm_stops_all(
    supervised: Supervised,
) -> None:
    redis_url = str(supervised.state["redis"])
    client = redis.Redis.from_url(redis_url)
    client.set("resilience:kept", "yes")

    dispatch = supervised.child("services.dispatch.app")
    dispatch.kill()
    intake_answers = []
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        intake_answers.append(_ready(supervised.url("intake")))
        restarted = 'devstack_restarts_total{component="dispatch"} 1.0' in supervised.metrics()
        if restarted and _ready(supervised.url("dispatch")):
            break
        time.sleep(0.3)
    assert _ready(supervised.url("dispatch")), "dispatch did not come back"
    assert all(intake_answers), "intake stopped serving while dispatch was down"
    assert 'devstack_restarts_total{component="dispatch"} 1.0' in supervised.metrics()

    supervised.child("redis-server").kill()
    _wait(lambda: 'devstack_restarts_total{component="redis"} 1.0' in supervised.metrics(), 30)
    assert redis.Redis.from_url(redis_url).get("resilience:kept") == b"yes"
    _wait(lambda: all(_ready(supervised.url(s)) for s in ("intake", "volunteer-locator")), 45)

    children = psutil.Process(supervised.process.pid).children(recursive=True)
    supervised.process.send_signal(signal.SIGTERM)
    # Every service gets STOP_TIMEOUT_S, all at once; then the broker and Redis.
    supervised.process.wait(STOP_TIMEOUT_S + 20)
    assert supervised.process.returncode == 0
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_sigkill_of_the_supervisor_takes_every_child_with_it(supervised: Supervised) -> None:
    children = psutil.Process(supervised.process.pid).children(recursive=True)
    assert len(children) >= 6  # broker, Redis and four services
    supervised.process.kill()
    supervised.process.wait(10)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not [c for c in alive if c.status() != psutil.STATUS_ZOMBIE]
