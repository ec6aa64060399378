"""The embedded stack holds its services still while it recreates the broker's topics."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psutil

from tools.devstack import Stack


def _settles_to(pid: int, *, stopped: bool) -> bool:
    """Whether the process is (or within a second becomes) stopped, or not stopped."""
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if (psutil.Process(pid).status() == psutil.STATUS_STOPPED) == stopped:
            return True
        time.sleep(0.01)
    return False


def test_services_are_stopped_inside_the_block_and_running_after(tmp_path: Path) -> None:
    stack = Stack(run_dir=tmp_path)
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    stack.processes["dispatch"] = sleeper
    try:
        with stack.services_paused():
            assert _settles_to(sleeper.pid, stopped=True)
        assert _settles_to(sleeper.pid, stopped=False)
    finally:
        sleeper.kill()
        sleeper.wait(5)


def test_a_service_that_already_exited_is_left_alone(tmp_path: Path) -> None:
    stack = Stack(run_dir=tmp_path)
    done = subprocess.Popen(["true"], start_new_session=True)
    done.wait(5)
    stack.processes["intake"] = done
    with stack.services_paused():
        pass
    assert done.returncode == 0
