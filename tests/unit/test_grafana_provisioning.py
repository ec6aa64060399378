"""Grafana starts with its Prometheus datasource and dashboard folder provisioned,
pointing at the addresses docker-compose.yml gives them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def test_the_prometheus_datasource_is_the_default_and_reachable() -> None:
    (datasource,) = load(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    compose = load(ROOT / "docker-compose.yml")
    assert datasource["type"] == "prometheus"
    assert datasource["uid"] == "prometheus"
    assert datasource["isDefault"] is True
    assert datasource["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
    scrape_interval = load(ROOT / "deploy" / "prometheus" / "prometheus.yml")["global"][
        "scrape_interval"
    ]
    assert datasource["jsonData"]["timeInterval"] == scrape_interval


def test_dashboards_load_from_the_mounted_directory() -> None:
    (provider,) = load(PROVISIONING / "dashboards" / "dashboards.yml")["providers"]
    grafana = load(ROOT / "docker-compose.yml")["services"]["grafana"]
    mounts = dict(m.rsplit(":", 2)[:2] for m in grafana["volumes"] if m.startswith("./"))
    assert provider["type"] == "file"
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert provider["allowUiUpdates"] is False
