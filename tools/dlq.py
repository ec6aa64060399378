"""Dead letters: list them, show one, replay them onto their topic.

    python -m tools.dlq list
    python -m tools.dlq show <id>
    python -m tools.dlq replay <id>... | --all

It talks to the running stack's broker: ``--broker``, else ``KAFKA_BOOTSTRAP_SERVERS``,
else the address ``make run`` wrote to ``.run/stack.json``. A replay republishes the
original record to the topic it came from, under its key; consumers handle it as new
(a dead-lettered event was never marked handled). Replayed ids are remembered in
``<run-dir>/dlq-replayed.json`` and skipped by later replays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from shared.events import TOPICS, Envelope, dead_letter_topic
from shared.events import DeadLetter as DeadLetterEvent
from tools.devstack import RUN_DIR, STATE_FILE

REPLAYED_FILE = "dlq-replayed.json"


@dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter topic, read tolerantly (any field may be missing)."""

    id: str
    dlq_topic: str
    partition: int
    offset: int
    key: bytes | None
    occurred_at: str
    source_topic: str
    group: str
    reason: str
    original: str

    @property
    def original_type(self) -> str:
        """The original event's type, or ``?`` when it does not parse."""
        try:
            return str(json.loads(self.original).get("type", "?"))
        except (ValueError, AttributeError):
            return "?"

    def replay_key(self) -> bytes | None:
        """The key to publish the original under: its event's own key, else the dead
        letter's key (which the consumer copied from the original)."""
        try:
            return Envelope.from_bytes(self.original.encode()).event().key.encode()
        except Exception:  # an original that never parsed keeps the recorded key
            return self.key

    @classmethod
    def parse(
        cls, topic: str, partition: int, offset: int, key: bytes | None, value: bytes
    ) -> DeadLetter:
        """Read one dead-letter record as the ``DeadLetter`` event; a record that is not one
        (an older or foreign shape) is read field by field, missing fields tolerated."""
        try:
            document: dict[str, Any] = json.loads(value)
        except ValueError:
            document = {}
        raw = document.get("payload")
        payload: dict[str, Any] = raw if isinstance(raw, dict) else {}
        try:
            letter = DeadLetterEvent.model_validate(payload)
        except ValidationError:
            letter = None
        if letter is not None:
            payload = {
                "source_topic": letter.source_topic,
                "group": letter.group,
                "reason": letter.reason,
                "original": letter.original or "",
            }
        return cls(
            id=str(document.get("event_id") or f"{topic}:{partition}:{offset}"),
            dlq_topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            occurred_at=str(document.get("occurred_at", "")),
            source_topic=str(payload.get("source_topic") or topic.rsplit(".", 1)[0]),
            group=str(payload.get("group", "")),
            reason=str(payload.get("reason", "")),
            original=str(payload.get("original") or ""),
        )


def broker_address(run_dir: Path, explicit: str | None) -> str:
    """Where the running stack's broker listens."""
    if explicit:
        return explicit
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    state = run_dir / STATE_FILE
    if state.exists():
        broker = json.loads(state.read_text()).get("broker")
        if broker:
            return str(broker)
    raise SystemExit(f"no broker: start `make run`, or pass --broker (looked in {state})")


async def _dead_letter_partitions(
    consumer: AIOKafkaConsumer, topics: Sequence[str]
) -> list[TopicPartition]:
    """The partitions of the topics' dead-letter topics (metadata refreshed once if none)."""

    def known() -> list[TopicPartition]:
        return [
            TopicPartition(dead_letter_topic(topic), partition)
            for topic in topics
            for partition in sorted(consumer.partitions_for_topic(dead_letter_topic(topic)) or ())
        ]

    partitions = known()
    if not partitions:
        await consumer.topics()  # refresh metadata once
        partitions = known()
    return partitions


async def read_dead_letters(
    bootstrap_servers: str, topics: Sequence[str] = TOPICS
) -> list[DeadLetter]:
    """Every dead letter currently on the dead-letter topics, oldest first per partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await _dead_letter_partitions(consumer, topics)
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > 0}
        found: list[DeadLetter] = []
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    found.append(
                        DeadLetter.parse(
                            tp.topic, tp.partition, record.offset, record.key, record.value or b""
                        )
                    )
                    if record.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
            if not batches:
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        return found
    finally:
        await consumer.stop()


def _load_replayed(run_dir: Path) -> set[str]:
    path = run_dir / REPLAYED_FILE
    if not path.exists():
        return set()
    return set(json.loads(path.read_text()))


def _save_replayed(run_dir: Path, ids: set[str]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / REPLAYED_FILE).write_text(json.dumps(sorted(ids), indent=0))


def _find(letters: Sequence[DeadLetter], wanted: str) -> DeadLetter:
    matches = [d for d in letters if d.id == wanted or d.id.startswith(wanted)]
    if len(matches) != 1:
        raise SystemExit(f"{len(matches)} dead letters match {wanted!r}")
    return matches[0]


async def replay(
    bootstrap_servers: str, letters: Sequence[DeadLetter], *, run_dir: Path
) -> tuple[list[DeadLetter], list[DeadLetter]]:
    """Republish each original to its topic under its key; returns (replayed, skipped)."""
    done = _load_replayed(run_dir)
    todo = [d for d in letters if d.id not in done]
    skipped = [d for d in letters if d.id in done]
    if todo:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=False
        )
        await producer.start()
        try:
            for letter in todo:
                await producer.send_and_wait(
                    letter.source_topic, letter.original.encode(), key=letter.replay_key()
                )
                done.add(letter.id)
                _save_replayed(run_dir, done)
        finally:
            await producer.stop()
    return todo, skipped


def main(argv: list[str] | None = None) -> int:
    """List, show or replay dead letters."""
    parser = argparse.ArgumentParser(prog="python -m tools.dlq", description=__doc__.split("\n")[0])
    parser.add_argument("--broker", help="bootstrap servers (default: the running stack's)")
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="one line per dead letter")
    show = commands.add_parser("show", help="one dead letter in full")
    show.add_argument("id", help="its id, or the start of it")
    again = commands.add_parser("replay", help="republish originals onto their topics")
    again.add_argument("ids", nargs="*", help="ids, or starts of ids")
    again.add_argument("--all", action="store_true", help="every dead letter not yet replayed")
    args = parser.parse_args(argv)

    broker = broker_address(args.run_dir, args.broker)
    letters = asyncio.run(read_dead_letters(broker))
    replayed = _load_replayed(args.run_dir)
    if args.command == "list":
        if not letters:
            print("no dead letters")
        for d in letters:
            mark = "replayed" if d.id in replayed else "-"
            print(
                f"{d.id[:8]}  {d.occurred_at[:19]}  {d.source_topic:<18} "
                f"{d.original_type:<20} {mark:<8}  {d.reason[:80]}"
            )
        return 0
    if args.command == "show":
        d = _find(letters, args.id)
        try:
            original: Any = json.loads(d.original)
        except ValueError:
            original = d.original
        print(
            json.dumps(
                {
                    "id": d.id,
                    "at": d.occurred_at,
                    "dead_letter_topic": f"{d.dlq_topic}[{d.partition}]@{d.offset}",
                    "source_topic": d.source_topic,
                    "group": d.group,
                    "reason": d.reason,
                    "replayed": d.id in replayed,
                    "original": original,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    if not args.all and not args.ids:
        parser.error("replay needs ids or --all")
    chosen = letters if args.all else [_find(letters, i) for i in args.ids]
    done, skipped = asyncio.run(replay(broker, chosen, run_dir=args.run_dir))
    for d in done:
        print(f"replayed {d.id[:8]} onto {d.source_topic}")
    for d in skipped:
        print(f"skipped {d.id[:8]}: already replayed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
