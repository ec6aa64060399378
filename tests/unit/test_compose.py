"""The production stack's container files: docker-compose.yml validates against
the Compose Specification, and keeps the promises operators rely on (health
gates, scalable services, every topic created, no secrets in the repository, no
example password accepted, Grafana and Prometheus on this host only)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from services.notification.settings import NotificationSettings
from shared.events import TOPICS
from tools.devstack import DEFAULT_SERVICES

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = {spec.name: spec for spec in DEFAULT_SERVICES}
REQUIRED = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+):\?[^}]*\}$")
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|API_KEY|PRIVATE_KEY")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as Compose reads it, before ${VAR} interpolation."""
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any],
) -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose)
    ]
    assert errors == []


def test_the_schema_check_catches_a_broken_file(compose: dict[str, Any]) -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["dispatch"]["depends_on"]["redis"]["condition"] = "service_ready"
    broken["services"]["intake"]["healthcheck"]["intervall"] = "5s"
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(broken))) >= 2


def test_the_four_services_run_from_the_one_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(APP_SERVICES) <= set(services)
    for name, spec in APP_SERVICES.items():
        service = services[name]
        env = environment(service)
        assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}, name
        assert f"services.{env['SERVICE_MODULE']}.app" == spec.module, name
        assert importlib.util.find_spec(spec.module) is not None, name
        assert env["PORT"] == str(spec.port), name
        assert env["HOST"] == "0.0.0.0", name
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092", name
        assert env["REDIS_URL"].startswith("redis://redis:6379/"), name
        assert env["DATABASE_URL"].startswith("postgresql+asyncpg://"), name
        assert env["DATABASE_URL"].endswith("@postgres:5432/qrd"), name
        assert env["LOCATOR_URL"] == "http://volunteer-locator:8003", name
        assert "DISPATCH_PUBLIC_URL" in env, name


def test_services_start_only_after_what_they_need_is_healthy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in APP_SERVICES:
        service = services[name]
        assert service["healthcheck"]["test"] == [
            "CMD",
            "python",
            "-m",
            "tools.healthcheck",
            "/readyz",
        ], name
        conditions = {dep: v["condition"] for dep, v in service["depends_on"].items()}
        assert conditions == {
            "secrets-check": "service_completed_successfully",
            "kafka": "service_healthy",
            "kafka-init": "service_completed_successfully",
            "redis": "service_healthy",
            "postgres": "service_healthy",
            "migrate": "service_completed_successfully",
        }, name
    # Waiting on a service's health only works if that service has a healthcheck.
    for name, service in services.items():
        for dep, how in service.get("depends_on", {}).items():
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits on {dep}"


def test_every_service_can_scale_out(compose: dict[str, Any]) -> None:
    """`docker compose up --scale dispatch=3` needs no fixed host port or container name."""
    services = compose["services"]
    for name in APP_SERVICES:
        assert "ports" not in services[name], name
        assert "container_name" not in services[name], name
    # The gateway publishes the usual ports instead (tests/unit/test_gateway.py).
    gateway = services["gateway"]
    assert gateway["ports"] == ["8001-8004:8001-8004", "8080:8080"]  # 8080: the field apps
    assert "./deploy/gateway/Caddyfile:/etc/caddy/Caddyfile:ro" in gateway["volumes"]
    for name in APP_SERVICES:
        assert gateway["depends_on"][name]["condition"] == "service_healthy"


def test_kafka_runs_in_kraft_mode_and_every_topic_is_created(compose: dict[str, Any]) -> None:
    kafka = environment(compose["services"]["kafka"])
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    init = compose["services"]["kafka-init"]
    script = "\n".join(init["command"])
    loop = re.search(r"for topic in ([^;]+);", script)
    assert loop is not None
    assert loop.group(1).split() == list(TOPICS)
    assert '"$$topic.dlq"' in script
    assert "--partitions" in script
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_data_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    expected = {
        "kafka": "/var/lib/kafka/data",
        "redis": "/data",
        "postgres": "/var/lib/postgresql/data",
        "prometheus": "/prometheus",
        "grafana": "/var/lib/grafana",
    }
    for name, path in expected.items():
        mounts = [m.split(":") for m in compose["services"][name]["volumes"]]
        named = [source for source, target, *_ in mounts if target == path]
        assert named, name
        assert named[0] in compose["volumes"], name


def test_prometheus_and_grafana_are_provisioned_from_deploy(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]["volumes"]
    grafana = compose["services"]["grafana"]["volumes"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "./deploy/grafana/dashboards:/etc/grafana/dashboards:ro" in grafana
    for mount in [*prometheus, *grafana]:
        source = mount.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).is_dir(), source


def test_no_secret_is_written_in_the_compose_file(compose: dict[str, Any]) -> None:
    required: set[str] = set()
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                match = REQUIRED.match(value)
                assert match, f"{name}: {key} must come from .env as ${{{key}:?...}}"
                required.add(match.group("name"))
            if key == "DATABASE_URL":
                password = re.search(r"://[^:/@]+:([^@]*)@", value)
                assert password, f"{name}: DATABASE_URL needs the password from .env"
                assert REQUIRED.match(password.group(1)), name
                required.add("POSTGRES_PASSWORD")
    assert required == {
        "AUTH_SECRET",
        "POSTGRES_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "WEBHOOK_SIGNING_SECRET",
    }

    example = (ROOT / ".env.example").read_text()
    listed = dict(
        line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#")
    )
    assert set(listed) == required
    # Nothing usable: every secret is empty, which compose's ${VAR:?} refuses.
    assert all(value == "" for value in listed.values())
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored


def test_the_image_runs_any_service_as_an_unprivileged_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "\nFROM python:3.11-slim\n" in dockerfile
    assert "pip install --no-compile -r requirements/main.txt" in dockerfile
    user = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert user, "the image must drop root"
    assert user[-1] not in ("root", "0")
    assert "services.${SERVICE_MODULE" in dockerfile
    assert ".app:create_app" in dockerfile
    assert re.search(r"HEALTHCHECK .*\n?.*tools\.healthcheck\", \"/healthz\"", dockerfile)
    # The console's Leaflet is installed in the image, not copied from the build host.
    assert "COPY --from=console /console/node_modules services/dispatch/console/node_modules" in (
        dockerfile
    )
    ignored = set((ROOT / ".dockerignore").read_text().splitlines())
    assert "**/node_modules" in ignored
    for copied in re.findall(r"^COPY (?!--)(\S+)", dockerfile, re.MULTILINE):
        assert (ROOT / copied).exists(), copied
        assert copied.rstrip("/") not in ignored, copied


def test_notification_gets_its_webhook_settings(compose: dict[str, Any]) -> None:
    env = environment(compose["services"]["notification"])
    fields = set(NotificationSettings.model_fields)
    assert {"WEBHOOK_SIGNING_SECRET", "DISPATCHER_WEBHOOK_URL", "DISPATCH_PUBLIC_URL"} <= set(env)
    assert {"webhook_signing_secret", "dispatcher_webhook_url", "dispatch_public_url"} <= fields


SECRETS = ("AUTH_SECRET", "WEBHOOK_SIGNING_SECRET", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD")


def strong_secrets() -> dict[str, str]:
    """Secrets an operator generated as .env.example says."""
    return {name: secrets.token_urlsafe(36) for name in SECRETS}


def run_secrets_check(compose: dict[str, Any], values: dict[str, str]) -> tuple[int, str]:
    """Run secrets-check's script with ``values`` as compose would pass them."""
    service = compose["services"]["secrets-check"]
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = service["command"]
    # Compose turns $$ into $ before the shell sees the script.
    script = script.replace("$$", "$")
    shell = shutil.which("sh")
    assert shell is not None
    result = subprocess.run(
        [shell, "-c", script],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **values},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return result.returncode, result.stderr


def test_nothing_starts_before_the_secrets_are_checked(compose: dict[str, Any]) -> None:
    services = compose["services"]
    check = services["secrets-check"]
    assert check["restart"] == "no"
    for name in SECRETS:
        assert REQUIRED.match(environment(check)[name]), name
    # Everything that takes a secret, and everything behind it, waits for the check.
    for name in [*APP_SERVICES, "migrate", "postgres", "grafana"]:
        condition = services[name]["depends_on"]["secrets-check"]["condition"]
        assert condition == "service_completed_successfully", name


def test_the_secrets_check_passes_generated_secrets(compose: dict[str, Any]) -> None:
    code, stderr = run_secrets_check(compose, strong_secrets())
    assert code == 0, stderr


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("AUTH_SECRET", "change-me", "example value"),
        ("POSTGRES_PASSWORD", "change-me", "example value"),
        ("GRAFANA_ADMIN_PASSWORD", "CHANGE-ME", "example value"),
        ("WEBHOOK_SIGNING_SECRET", "change-me-" + "x" * 40, "example value"),
        ("GRAFANA_ADMIN_PASSWORD", "admin", "example value"),
        ("POSTGRES_PASSWORD", "short-but-real", "shorter than 16"),
        ("AUTH_SECRET", "a" * 31, "shorter than 32"),
        ("AUTH_SECRET", "", "shorter than 32"),
    ],
)
def test_the_secrets_check_refuses_a_weak_or_example_secret(
    compose: dict[str, Any], name: str, value: str, reason: str
) -> None:
    values = strong_secrets() | {name: value}
    code, stderr = run_secrets_check(compose, values)
    assert code != 0
    assert f"refusing to start: {name}" in stderr
    assert reason in stderr


def test_the_secrets_check_refuses_one_secret_for_tokens_and_webhooks(
    compose: dict[str, Any],
) -> None:
    values = strong_secrets()
    values["WEBHOOK_SIGNING_SECRET"] = values["AUTH_SECRET"]
    code, stderr = run_secrets_check(compose, values)
    assert code != 0
    assert "WEBHOOK_SIGNING_SECRET is the same as AUTH_SECRET" in stderr


def test_the_example_env_file_does_not_start_the_stack(compose: dict[str, Any]) -> None:
    """Copied as it is, .env.example leaves every secret empty: compose stops on ${VAR:?},
    and the check would refuse every one of them even if it ran."""
    example = (ROOT / ".env.example").read_text()
    values = dict(
        line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#")
    )
    code, stderr = run_secrets_check(compose, values)
    assert code != 0
    for name in SECRETS:
        assert f"refusing to start: {name}" in stderr


def published(port: str) -> tuple[str, str]:
    """(host address, host port) of a short-syntax port with Compose's defaults applied."""
    resolved = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", port)
    host, host_port, _container = resolved.rsplit(":", 2)
    return host, host_port


def test_grafana_and_prometheus_listen_on_this_host_only(compose: dict[str, Any]) -> None:
    for name, port in (("grafana", "3000"), ("prometheus", "9090")):
        (mapping,) = compose["services"][name]["ports"]
        assert published(mapping) == ("127.0.0.1", port), name
