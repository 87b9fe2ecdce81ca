"""Kafka helpers for tests: publish tasks, read lag, read a topic back."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from spatialjoin_contracts.task_message import TaskMessage, encode


def publish(bootstrap: str, topic: str, tasks: Iterable[TaskMessage]) -> int:
    """Produce tasks with acks=all and the idempotent producer; return how many."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5})
    errors: list[str] = []
    count = 0
    for task in tasks:
        encoded = encode(task)
        producer.produce(topic, key=encoded.key, value=encoded.value,
                         partition=encoded.partition,
                         headers=list(encoded.headers),
                         on_delivery=lambda err, _m: errors.append(str(err)) if err else None)
        count += 1
    assert producer.flush(30) == 0
    assert not errors, errors
    return count


def publish_raw(bootstrap: str, topic: str, partition: int, value: bytes,
                headers: list[tuple[str, bytes]] | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(topic, value=value, partition=partition,
                     headers=list(headers or []))  # type: ignore[arg-type]
    assert producer.flush(30) == 0


def group_lag(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """Total lag of ``group``: high watermarks minus committed offsets (none committed = 0)."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                       "enable.auto.commit": False})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        committed = reader.committed(tps, timeout=10)
        lag = 0
        for tp in committed:
            _low, high = reader.get_watermark_offsets(TopicPartition(topic, tp.partition),
                                                      timeout=10, cached=False)
            start = tp.offset if tp.offset is not None and tp.offset >= 0 else 0
            lag += max(0, high - start)
        return lag
    finally:
        reader.close()


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 30
             ) -> list[dict[str, Any]]:
    """Read ``expected`` records from the start of ``topic`` (fails on a shortfall)."""
    import time

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            raw = message.headers() or []
            headers = dict(raw.items() if isinstance(raw, dict) else raw)
            records.append({"key": message.key(), "value": message.value(),
                            "headers": {k: (v.decode() if isinstance(v, bytes) else v)
                                        for k, v in headers.items()},
                            "partition": message.partition()})
    finally:
        consumer.close()
    assert len(records) >= expected, f"read {len(records)} of {expected} from {topic}"
    return records
