"""deploy/prometheus/ passes promtool, and scrapes every instance of every service
at the address docker-compose.yml gives it.

promtool comes from Debian's `prometheus` package (`make system-deps`). Without
it these tests fail: a config nobody checked must not look green.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.devstack import DEFAULT_SERVICES

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run promtool, failing the test loudly when it is not installed."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: run `make system-deps` (Debian package prometheus)")
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    return loaded


def test_promtool_accepts_the_config() -> None:
    result = promtool("check", "config", "prometheus.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_would_catch_a_broken_config(tmp_path: Path, config: dict[str, Any]) -> None:
    config["scrape_configs"][0]["scrape_interval"] = "every now and then"
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode != 0


def test_every_service_is_scraped_on_every_instance(config: dict[str, Any]) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for spec in DEFAULT_SERVICES:
        job = jobs[spec.name]
        assert job["metrics_path"] == "/metrics"
        # DNS discovery returns one address per instance, so scaled services are all scraped.
        (discovery,) = job["dns_sd_configs"]
        assert discovery["names"] == [spec.name]
        assert discovery["type"] == "A"
        assert discovery["port"] == spec.port
        assert spec.name in compose["services"]
        assert compose["services"][spec.name]["expose"] == [str(spec.port)]


def test_rule_files_are_loaded_from_the_mounted_directory(config: dict[str, Any]) -> None:
    assert config["rule_files"] == ["rules/*.yml"]
    result = promtool("check", "config", "prometheus.yml", cwd=PROMETHEUS)
    rule_files = sorted(p.name for p in (PROMETHEUS / "rules").glob("*.yml"))
    assert rule_files
    assert f"SUCCESS: {len(rule_files)} rule files found" in result.stdout + result.stderr


def test_promtool_accepts_the_rules() -> None:
    rule_files = sorted(str(p.relative_to(PROMETHEUS)) for p in PROMETHEUS.glob("rules/*.yml"))
    result = promtool("check", "rules", *rule_files, cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests() -> None:
    """The rule tests in deploy/prometheus/tests/ (fire when, and with what text)."""
    test_files = sorted(str(p.relative_to(PROMETHEUS)) for p in PROMETHEUS.glob("tests/*.yml"))
    assert test_files
    result = promtool("test", "rules", *test_files, cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
