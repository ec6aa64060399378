"""Prometheus (Debian's binary) scrapes the four running services with our rules
loaded, and evaluates every dashboard query and every rule expression without
error. Without the binary this test fails: `make system-deps` installs it."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness import Infra, RunningApp, eventually
from tests.integration.all_services import all_services, post_a_report
from tests.metrics_catalogue import RULES, rule_groups
from tools.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
JOBS = {"intake", "dispatch", "volunteer-locator", "notification"}
# What Grafana puts in place of its variables before sending a query.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$grid": ".*",
    "$category": ".*",
}


def dashboard_queries() -> Iterator[tuple[str, str]]:
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                yield f"{path.name}: {panel['title']} / {target['refId']}", expr


def fast_rule_files(tmp_path: Path) -> list[str]:
    """Our rule files, with every group evaluated each second instead of its own
    interval (the slow groups would otherwise first run minutes into the test)."""
    (tmp_path / "rules").mkdir()
    paths: list[str] = []
    for path in sorted(RULES.glob("*.yml")):
        rules = yaml.safe_load(path.read_text())
        for group in rules["groups"]:
            group.pop("interval", None)
        copy = tmp_path / "rules" / path.name
        copy.write_text(yaml.safe_dump(rules))
        paths.append(str(copy))
    return paths


def start_prometheus(
    binary: str, tmp_path: Path, config: dict[str, Any], port: int
) -> subprocess.Popen[bytes]:
    """Start Prometheus with ``config`` on ``port``, logging to prometheus.log."""
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    with (tmp_path / "prometheus.log").open("w") as log:
        return subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


@asynccontextmanager
async def prometheus(
    tmp_path: Path, services: dict[str, RunningApp]
) -> AsyncIterator[httpx.AsyncClient]:
    """A local Prometheus scraping ``services`` every second, with our rule files."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run `make system-deps` (Debian package)")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": fast_rule_files(tmp_path),
        "scrape_configs": [
            {
                "job_name": name,
                "static_configs": [{"targets": [app.base_url.removeprefix("http://")]}],
            }
            for name, app in services.items()
        ],
    }
    port = free_port()
    process = start_prometheus(binary, tmp_path, config, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

            async def ready() -> bool:
                if process.poll() is not None:
                    log = (tmp_path / "prometheus.log").read_text()
                    raise AssertionError(f"prometheus exited: {log}")
                try:
                    return (await client.get("/-/ready")).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(ready, timeout=30, interval=0.1)
            yield client
    finally:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()


async def query(client: httpx.AsyncClient, expr: str) -> dict[str, Any]:
    answer = await client.get("/api/v1/query", params={"query": expr})
    body: dict[str, Any] = answer.json()
    return body


async def test_prometheus_evaluates_every_dashboard_query_and_rule(
    infra: Infra, tmp_path: Path
) -> None:
    async with all_services(infra) as services, prometheus(tmp_path, services) as client:
        await post_a_report(services)

        async def every_service_scraped_twice() -> bool:
            # Two scrapes give rate() and increase() two samples to work with.
            body = await query(client, "count_over_time(up[1m]) >= 2 and up == 1")
            return {r["metric"]["job"] for r in body["data"]["result"]} == JOBS

        await eventually(every_service_scraped_twice, timeout=30, interval=0.2)

        async def rules_evaluated() -> bool:
            groups = (await client.get("/api/v1/rules")).json()["data"]["groups"]
            return bool(groups) and all(g["lastEvaluation"][:4] != "0001" for g in groups)

        await eventually(rules_evaluated, timeout=30, interval=0.2)
        rules = (await client.get("/api/v1/rules")).json()["data"]["groups"]

        problems: list[str] = []
        for where, expr in dashboard_queries():
            body = await query(client, expr)
            if body["status"] != "success":
                problems.append(f"{where}: {body.get('error')}\n    {expr}")
        for group in rules:
            for rule in group["rules"]:
                if rule["health"] != "ok":
                    problems.append(f"rule {rule['name']}: {rule.get('lastError')}")
        assert not problems, "\n".join(problems)

        # The queries reached real series: the services' and the recording rules'.
        opened = await query(client, "sum(dispatch_incidents_opened_total)")
        assert opened["data"]["result"], opened
        loaded = {rule["name"] for group in rules for rule in group["rules"]}
        expected = {
            rule.get("record") or rule["alert"]
            for group in rule_groups()
            for rule in group["rules"]
        }
        assert loaded == expected
