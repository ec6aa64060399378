"""Baseline: the raw broker produce-to-consume round trip, with the same client
settings the services use. Every end-to-end figure is read against this."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import summary_ms


async def round_trips(
    bootstrap: str, *, count: int = 500, fetch_max_wait_ms: int = 10
) -> list[float]:
    """Produce one message at a time and time until a group consumer has it."""
    topic = f"bench-rtt-{int(time.time() * 1000)}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{topic}-g",
        enable_auto_commit=False,
        auto_offset_reset="latest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        session_timeout_ms=3000,
        heartbeat_interval_ms=500,
    )
    await producer.start()
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=50)
        await consumer.seek_to_end()
        samples: list[float] = []
        for i in range(count):
            started = time.perf_counter()
            await producer.send_and_wait(topic, str(i).encode())
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                if any(r.value == str(i).encode() for rs in batch.values() for r in rs):
                    break
            samples.append(time.perf_counter() - started)
        return samples
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    """Run the baseline against a fresh embedded broker and print it."""
    from tools.embedded import free_port, start_broker

    broker = start_broker(free_port(), log_dir=Path(tempfile.mkdtemp(prefix="qrd-bench-")))
    try:
        print(summary_ms(asyncio.run(round_trips(broker.url))))
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
