"""The committed API documents match the code, and the AsyncAPI document is whole."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from shared.events import (
    EVENT_TYPES,
    TOPICS,
    Envelope,
    GeoPoint,
    IncidentOpened,
    ReportReceived,
    StageTarget,
)
from tools.apidocs import COMMAND, OPENAPI, ROOT, openapi_path, render_json
from tools.asyncapi import ASYNCAPI_PATH, build, render

FIX = f"run `{COMMAND}` (or `make docs`) and commit the result"


def _committed(path: Path) -> str:
    assert path.exists(), f"{path.relative_to(ROOT)} is missing: {FIX}"
    return path.read_text(encoding="utf-8")


def test_the_committed_asyncapi_document_is_current() -> None:
    assert _committed(ASYNCAPI_PATH) == render(build()), (
        f"{ASYNCAPI_PATH.relative_to(ROOT)} differs from the event models: {FIX}"
    )


@pytest.mark.parametrize("service", sorted(OPENAPI))
def test_the_committed_openapi_of_each_service_is_current(service: str) -> None:
    path = openapi_path(service)
    assert _committed(path) == render_json(OPENAPI[service]()), (
        f"{path.relative_to(ROOT)} differs from {service}'s routes: {FIX}"
    )


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} points outside the document"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), f"{ref} does not resolve"
        assert part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def test_the_asyncapi_document_names_every_topic_and_event_and_every_ref_resolves() -> None:
    document = build()

    assert document["asyncapi"] == "3.0.0"
    addresses = {c["address"]: c for c in document["channels"].values()}
    assert set(TOPICS) <= set(addresses)
    assert set(EVENT_TYPES) == set(document["components"]["messages"])
    for name, event_type in EVENT_TYPES.items():
        channel = addresses[event_type.topic]
        assert name in channel["messages"], f"{name} is not on the {event_type.topic} channel"
    for operation in document["operations"].values():
        assert operation["action"] in ("send", "receive")
    for ref in _refs(document):
        _resolve(document, ref)


def _validator(document: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    payload = document["components"]["messages"][name]["payload"]
    schema = {**payload, "components": document["components"]}
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_a_real_envelope_fits_its_message_schema_and_a_mislabelled_one_does_not() -> None:
    document = build()
    now = datetime.now(UTC)
    report = ReportReceived(
        report_id=uuid.uuid4(),
        category="theft",
        location=GeoPoint(lat=23.02, lon=113.75),
        received_at=now,
    )
    opened = IncidentOpened(
        incident_id=uuid.uuid4(),
        report_id=report.report_id,
        category="theft",
        priority=2,
        location=report.location,
        received_at=now,
        targets=(StageTarget(stage="T1", label="respond", target_s=60),),
    )
    for event in (report, opened):
        wire = Envelope.wrap(event).model_dump(mode="json")
        _validator(document, type(event).__name__).validate(wire)

    wrong = Envelope.wrap(report).model_dump(mode="json")
    assert not _validator(document, "IncidentOpened").is_valid(wrong)
    del wrong["payload"]["received_at"]
    assert not _validator(document, "ReportReceived").is_valid(wrong)


@pytest.mark.parametrize("service", sorted(OPENAPI))
def test_every_operation_that_takes_a_body_documents_413(service: str) -> None:
    # Every service caps request bodies (413 before the route runs), so an operation
    # with a body can answer 413 whatever its own checks are.
    document = OPENAPI[service]()
    missing = [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation and "413" not in operation.get("responses", {})
    ]
    assert missing == []
