"""The embedded stack, driven over HTTP as the apps would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from shared.auth import Role
from tests.harness import eventually
from tools.devstack import ROOT, Stack


async def test_a_report_posted_over_http_shows_up_in_the_dispatch_queue(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        for name in ("intake", "dispatch", "volunteer-locator", "notification"):
            ready = await client.get(f"{stack.url(name)}/readyz")
            assert ready.status_code == 200, (name, ready.text)
        answer = await client.post(
            f"{stack.url('intake')}/v1/reports",
            json={"category": "dispute", "location": {"lat": 23.02, "lon": 113.75}},
        )
        assert answer.status_code == 202, answer.text
        headers = {"authorization": f"Bearer {stack.token(Role.DISPATCHER)}"}

        async def listed() -> bool:
            queue = await client.get(
                f"{stack.url('dispatch')}/v1/incidents",
                params={"status": "open"},
                headers=headers,
            )
            return any(i["category"] == "dispute" for i in queue.json())

        await eventually(listed, timeout=10)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_ctrl_c_on_make_run_leaves_no_process_behind(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "AUTH_SECRET": "e2e-secret-for-the-ctrl-c-test-0123456789",
        }
    )
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "DATABASE_URL"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.devstack", "--run-dir", str(tmp_path), "--free-ports"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            break
        if process.poll() is not None:
            break
    banner = "".join(lines)
    assert "All four services ready" in banner, banner
    children = _descendants(process.pid)
    assert len(children) >= 6  # broker, Redis and four services
    process.send_signal(signal.SIGINT)
    process.wait(60)
    assert process.returncode == 0
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
