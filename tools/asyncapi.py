"""The events as an AsyncAPI 3.0 document, generated from the models in ``shared/events.py``.

``python -m tools.asyncapi`` rewrites ``docs/asyncapi.json``; ``python -m tools.apidocs``
rewrites it together with every service's OpenAPI. Each topic is a channel; each
registered event type is a message whose payload is the envelope with that event's
schema in ``payload``. The partition key of each message is in its Kafka binding.
"""

from __future__ import annotations

import argparse
import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from shared.events import EVENT_TYPES, TOPICS, DeadLetter, Envelope, Event, dead_letter_topic

ROOT = Path(__file__).resolve().parent.parent
ASYNCAPI_PATH = ROOT / "docs" / "asyncapi.json"
REF = "#/components/schemas/{model}"
KAFKA_BINDING = "0.5.0"
TOPIC_SUMMARIES = {
    "reports": "Citizens' reports, from intake to dispatch.",
    "incidents": "Incidents, offers, units and the 1-3-5 milestones, from dispatch.",
    "responder-locations": "Responders' positions, from the volunteer-locator.",
    "responder-status": "Registration, duty and availability of responders.",
}


def _summary(model: type[Any]) -> str:
    """The first line of a model's docstring."""
    return (inspect.getdoc(model) or model.__name__).splitlines()[0]


def _channel_id(topic: str) -> str:
    """A channel id made of the topic's name (``responder-status`` → ``responderStatus``)."""
    if topic == DeadLetter.topic:
        return "deadLetters"
    head, *rest = topic.replace(".", "-").split("-")
    return head + "".join(part.capitalize() for part in rest)


def _dead_letter_channel(address: str, names: list[str]) -> dict[str, Any]:
    """The dead-letter topics, one per topic: ``{topic}.dlq``."""
    return {
        "address": address,
        "title": "dead letters",
        "summary": "What a consumer could never handle, or a delivery that failed for good.",
        "description": (
            "One dead-letter topic per topic, keyed as the original record was. "
            "`python -m tools.dlq` lists and replays them."
        ),
        "parameters": {
            "topic": {"enum": list(TOPICS), "description": "The topic the letter came from."}
        },
        "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
    }


def _topics() -> list[str]:
    """Every topic: the declared ones, then any other that a registered event names."""
    topics = list(TOPICS)
    for event_type in EVENT_TYPES.values():
        if event_type.topic not in topics:
            topics.append(event_type.topic)
    return topics


def _message(name: str, event_type: type[Event]) -> dict[str, Any]:
    """One message: the envelope around this event, keyed by the event's key field."""
    envelope = {"$ref": REF.format(model=Envelope.__name__)}
    this_event = {
        "type": "object",
        "properties": {
            "type": {"const": name},
            "version": {"const": event_type.version},
            "payload": {"$ref": REF.format(model=name)},
        },
    }
    return {
        "name": name,
        "title": name,
        "summary": _summary(event_type),
        "contentType": "application/json",
        "payload": {"allOf": [envelope, this_event]},
        "correlationId": {
            "description": "The incident or report the event is about.",
            "location": "$message.payload#/correlation_id",
        },
        "bindings": {
            "kafka": {
                "key": {
                    "type": "string",
                    "description": getattr(
                        event_type, "key_description", f"The event's {event_type.key_field}."
                    ),
                },
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }


def _schemas() -> dict[str, Any]:
    """JSON Schemas of the envelope, every event and the models they use."""
    models: list[type[Any]] = [Envelope, *EVENT_TYPES.values()]
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    schemas: dict[str, Any] = top.get("$defs", {})
    return dict(sorted(schemas.items()))


def build() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every topic and event."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in _topics():
        names = sorted(n for n, e in EVENT_TYPES.items() if e.topic == topic)
        key_fields = sorted({EVENT_TYPES[n].key_field for n in names})
        channel_id = _channel_id(topic)
        channels[channel_id] = (
            _dead_letter_channel(topic, names)
            if topic == DeadLetter.topic
            else {
                "address": topic,
                "title": topic,
                "summary": TOPIC_SUMMARIES.get(topic, f"The {topic} topic."),
                "description": (
                    f"Keyed by {', '.join(key_fields) or 'the entity id'}, so the events about "
                    f"one entity stay in order. What no consumer can handle goes to "
                    f"`{dead_letter_topic(topic)}`."
                ),
                "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
                "bindings": {"kafka": {"topic": topic, "bindingVersion": KAFKA_BINDING}},
            }
        )
        operations[f"consume{channel_id[0].upper()}{channel_id[1:]}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"A service's consumer group reads `{topic}`.",
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{n}"} for n in names],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Quick-response dispatch events",
            "version": "1.0.0",
            "description": (
                "The events the four services pass over Kafka. Generated from "
                "shared/events.py by `python -m tools.apidocs`; do not edit by hand. "
                "See docs/contract.md, section Events."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": {n: _message(n, e) for n, e in sorted(EVENT_TYPES.items())},
            "schemas": _schemas(),
        },
    }


def render(document: dict[str, Any]) -> str:
    """The document as committed: stable key order, two-space indent, final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write(path: Path = ASYNCAPI_PATH) -> Path:
    """Write the document to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(build()), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Write ``docs/asyncapi.json`` (or ``--out``)."""
    parser = argparse.ArgumentParser(prog="python -m tools.asyncapi", description=__doc__)
    parser.add_argument("--out", type=Path, default=ASYNCAPI_PATH)
    args = parser.parse_args(argv)
    print(f"wrote {write(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
