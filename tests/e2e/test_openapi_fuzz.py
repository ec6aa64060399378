"""Schemathesis fuzzes every service's OpenAPI against the running embedded stack.

Each operation is called with a valid token for the role that owns it (and with real
ids where a path names the caller), with positive and negative data. The run fails on
any server error, any status the OpenAPI does not document and any answer whose body
breaks its documented schema. The four runs together are bounded to two minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from shared.auth import Role
from tools.devstack import ROOT, Stack

# Each service's budget; the four run side by side, well inside two minutes.
FUZZ_SECONDS_PER_SERVICE = 45
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
)


@dataclass(frozen=True)
class Caller:
    """Who calls the operations whose path matches ``path_regex`` (first match wins)."""

    path_regex: str
    token: str | None
    parameters: dict[str, str] = field(default_factory=dict)


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def fuzz_config(callers: list[Caller]) -> str:
    """A schemathesis.toml that gives each group of operations its caller's token."""
    lines = [
        f"max-time = {FUZZ_SECONDS_PER_SERVICE}",
        "request-timeout = 5",
        "max-stream-events = 1",
        "",
        "[generation]",
        'mode = "all"',
        "",
        "[phases.stateful]",
        "enabled = false",
    ]
    for caller in callers:
        if not caller.token and not caller.parameters:
            continue  # schemathesis refuses an operation block that changes nothing
        lines += ["", "[[operations]]", f"include-path-regex = {_toml_string(caller.path_regex)}"]
        if caller.token:
            lines.append(
                f"headers = {{ Authorization = {_toml_string('Bearer ' + caller.token)} }}"
            )
        if caller.parameters:
            pairs = ", ".join(
                f"{_toml_string(k)} = {_toml_string(v)}" for k, v in caller.parameters.items()
            )
            lines.append(f"parameters = {{ {pairs} }}")
    return "\n".join(lines) + "\n"


def _start_fuzz(
    stack: Stack, service: str, callers: list[Caller], work: Path
) -> subprocess.Popen[str]:
    config = work / f"{service}.toml"
    config.write_text(fuzz_config(callers))
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "st"),
            "--config-file",
            str(config),
            "run",
            f"{stack.url(service)}/openapi.json",
            "--checks",
            CHECKS,
            "--seed",
            "20240611",
            "--no-color",
            "--report-dir",
            str(work / service),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )


def _ends(output: str, keep: int = 6000) -> str:
    """The head (which operation failed, and how) and the tail (the summary) of a run."""
    return output if len(output) <= 2 * keep else f"{output[:keep]}\n…\n{output[-keep:]}"


def _real_ids(stack: Stack) -> tuple[str, str, str]:
    """A real report (id, tracking token) and a real responder id to aim the fuzzer at."""
    dispatcher = {"authorization": f"Bearer {stack.token(Role.DISPATCHER)}"}
    with httpx.Client(timeout=10) as client:
        report = client.post(
            f"{stack.url('intake')}/v1/reports",
            json={"category": "theft", "location": {"lat": 23.02, "lon": 113.75}},
        )
        assert report.status_code == 202, report.text
        responder = client.post(
            f"{stack.url('volunteer-locator')}/v1/responders",
            json={"name": "Fuzz Target", "kind": "volunteer", "travel_mode": "foot"},
            headers=dispatcher,
        )
        assert responder.status_code == 201, responder.text
    accepted = report.json()
    return accepted["report_id"], accepted["tracking_token"], responder.json()["responder_id"]


@pytest.mark.timeout(300)  # the stack's start plus four bounded runs
def test_every_openapi_matches_what_the_services_answer(stack: Stack, tmp_path: Path) -> None:
    report_id, tracking, responder_id = _real_ids(stack)
    dispatcher = stack.token(Role.DISPATCHER)
    operator = stack.token(Role.OPERATOR)
    responder = stack.token(Role.RESPONDER, responder_id)
    service = stack.token(Role.SERVICE, "dispatch")
    plan: dict[str, list[Caller]] = {
        "intake": [
            Caller(r"^/v1/reports/\{report_id\}", tracking, {"path.report_id": report_id}),
        ],
        "dispatch": [
            Caller(r"^/v1/offers/|/units/", responder, {"path.responder_id": responder_id}),
            Caller(r"^/", dispatcher),
        ],
        "volunteer-locator": [
            Caller(r"^/v1/(locations/batch|claims)", service),
            Caller(
                r"^/v1/responders/\{responder_id\}", responder, {"path.responder_id": responder_id}
            ),
            Caller(r"^/", dispatcher),
        ],
        "notification": [
            Caller(r"^/v1/responders/", responder, {"path.responder_id": responder_id}),
            Caller(r"^/v1/webhooks", tracking),
            Caller(r"^/v1/deliveries", operator),
            Caller(r"^/", dispatcher),
        ],
    }
    # The four runs go at once, so the whole fuzzing takes one budget of wall time.
    runs = {name: _start_fuzz(stack, name, callers, tmp_path) for name, callers in plan.items()}
    failures = []
    for name, run in runs.items():
        output, _ = run.communicate(timeout=FUZZ_SECONDS_PER_SERVICE + 90)
        if run.returncode != 0:
            failures.append(f"--- {name} (exit {run.returncode})\n{_ends(output)}")
    assert not failures, "\n".join(failures)
