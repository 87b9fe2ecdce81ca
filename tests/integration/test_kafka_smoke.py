"""The Kafka protocol part of the stack: librdkafka's mock cluster, for real.

Proves what the product relies on: idempotent acks=all produce to a
12-partition topic, a consumer group with manual commits, lag read back
exactly from committed offsets and high watermarks, and fault injection
(broker down, request errors, latency) through the control channel.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from spatialjoin_devstack import procs
from spatialjoin_devstack.components.base import Settings, StackContext
from spatialjoin_devstack.components.kafka import KafkaMockComponent
from spatialjoin_devstack.kafka_control import ApiKey, ErrorCode, KafkaControl, KafkaControlError
from spatialjoin_devstack.waiting import wait_for

pytestmark = pytest.mark.integration

QUIET = {"log_level": 0}  # faults make clients log connection errors on purpose


def _new_ctx(tmp_path_factory: pytest.TempPathFactory) -> StackContext:
    return StackContext(
        state_dir=tmp_path_factory.mktemp("kafka-stack"),
        cache_dir=tmp_path_factory.mktemp("kafka-cache"),
    )


@pytest.fixture(scope="module")
def kafka_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A mock cluster for this module, stopped by pid at the end."""
    ctx = _new_ctx(tmp_path_factory)
    component = KafkaMockComponent()
    component.install(ctx)
    settings = component.start(ctx)
    try:
        yield settings
    finally:
        component.stop(ctx)


@pytest.fixture
def control(kafka_settings: Settings) -> KafkaControl:
    return KafkaControl(kafka_settings["control"])


def _topic(control: KafkaControl, partitions: int) -> str:
    """A fresh topic per test, so tests never see each other's records or offsets."""
    name = f"smoke-{uuid.uuid4().hex[:10]}"
    control.create_topic(name, partitions)
    return name


def _produce(bootstrap: str, topic: str, count: int, **conf: Any) -> Counter[int]:
    """Produce ``count`` keyed records idempotently with acks=all; records per partition."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, **conf}
    )
    delivered: list[Message] = []
    errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error:
            errors.append(error)
        else:
            delivered.append(message)

    for i in range(count):
        producer.produce(topic, key=f"k{i}", value=f"v{i}", on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert errors == []
    assert len({(m.partition(), m.offset()) for m in delivered}) == count
    return Counter(_partition(m) for m in delivered)


def _partition(message: Message) -> int:
    partition = message.partition()
    assert partition is not None
    return partition


def _consume_and_commit(bootstrap: str, topic: str, group: str, expected: int) -> list[Message]:
    """Read ``expected`` records in a consumer group, then commit synchronously, by hand."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    received: list[Message] = []

    def drained() -> bool:
        batch = consumer.consume(num_messages=500, timeout=0.5)
        received.extend(m for m in batch if m.error() is None)
        return len(received) >= expected

    try:
        wait_for(drained, timeout=60, interval=0, what=f"{expected} records from {topic}")
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return received


def _group_lag(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """Per-partition lag = high watermark - committed offset (no commit counts from 0).

    Read with a consumer that never subscribes: on a consumer that is
    fetching, each watermark query waits behind the broker's Fetch long-poll
    (fetch.wait.max.ms, ~0.5 s per partition).
    """
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        committed = {tp.partition: tp.offset for tp in reader.committed(tps, timeout=10)}
        ends = {
            tp.partition: reader.get_watermark_offsets(tp, timeout=10, cached=False)[1]
            for tp in tps
        }
    finally:
        reader.close()
    return {p: ends[p] - max(committed[p], 0) for p in range(partitions)}


def test_lag_is_exact_after_manual_commit(kafka_settings: Settings, control: KafkaControl) -> None:
    bootstrap, partitions = kafka_settings["bootstrap"], kafka_settings["partitions"]
    topic, group = _topic(control, partitions), f"g-{uuid.uuid4().hex[:8]}"
    per_partition = _produce(bootstrap, topic, 1000, **{"linger.ms": 5})
    assert len(per_partition) == partitions  # keys spread over all 12 partitions

    received = _consume_and_commit(bootstrap, topic, group, expected=1000)
    assert len({(m.partition(), m.offset()) for m in received}) == 1000
    assert _group_lag(bootstrap, group, topic, partitions) == dict.fromkeys(range(partitions), 0)

    more = _produce(bootstrap, topic, 37)
    lag = _group_lag(bootstrap, group, topic, partitions)
    assert sum(lag.values()) == 37
    assert {p: n for p, n in lag.items() if n} == dict(more)


def test_task_topics_are_precreated(kafka_settings: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_settings["bootstrap"]})
    metadata = admin.list_topics(timeout=10)
    assert sorted(metadata.brokers) == [1, 2, 3]
    for name in (kafka_settings["topic"], kafka_settings["dlq_topic"]):
        partitions = metadata.topics[name].partitions
        assert len(partitions) == 12
        assert all(sorted(p.replicas) == [1, 2, 3] for p in partitions.values())


def test_broker_down_fails_produce_then_recovers(
    kafka_settings: Settings, control: KafkaControl
) -> None:
    bootstrap = kafka_settings["bootstrap"]
    topic = _topic(control, 1)
    admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    leader = admin.list_topics(topic, timeout=10).topics[topic].partitions[0].leader

    control.broker_down(leader)
    try:
        wait_for(
            lambda: leader not in admin.list_topics(timeout=5).brokers,
            timeout=10,
            what=f"broker {leader} to leave metadata",
        )
        errors = _produce_one(bootstrap, topic, **{"message.timeout.ms": 1500})
        assert [e.code() for e in errors] == [KafkaError._MSG_TIMED_OUT]
    finally:
        control.broker_up(leader)
    wait_for(lambda: leader in admin.list_topics(timeout=5).brokers, timeout=10, what="broker up")
    assert _produce(bootstrap, topic, 1) == {0: 1}


def _produce_one(bootstrap: str, topic: str, **conf: Any) -> list[KafkaError]:
    """Produce one record to partition 0 and return its delivery errors."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", **QUIET, **conf})
    errors: list[KafkaError] = []
    producer.produce(
        topic, value=b"x", partition=0, on_delivery=lambda e, _m: errors.append(e) if e else None
    )
    assert producer.flush(15) == 0
    return errors


def test_pushed_metadata_error_fails_list_topics(
    kafka_settings: Settings, control: KafkaControl
) -> None:
    topic = kafka_settings["topic"]
    admin = AdminClient({"bootstrap.servers": kafka_settings["bootstrap"], **QUIET})
    admin.list_topics(topic, timeout=10)  # warm: connections and bootstrap metadata done
    control.push_request_errors(ApiKey.METADATA, [ErrorCode.LEADER_NOT_AVAILABLE] * 2)
    try:
        with pytest.raises(KafkaException) as raised:
            admin.list_topics(topic, timeout=5)
        error = raised.value.args[0]
        assert isinstance(error, KafkaError)
        assert error.code() == KafkaError.LEADER_NOT_AVAILABLE
    finally:
        control.clear_request_errors(ApiKey.METADATA)
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 12


def test_rtt_delays_every_broker(kafka_settings: Settings, control: KafkaControl) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_settings["bootstrap"], **QUIET})
    admin.list_topics(timeout=10)
    control.set_rtt(-1, 400)  # -1: all brokers
    try:
        started = time.monotonic()
        admin.list_topics(timeout=10)
        assert time.monotonic() - started >= 0.35
    finally:
        control.set_rtt(-1, 0)


def test_control_channel_refusals(control: KafkaControl) -> None:
    topic = _topic(control, 2)
    with pytest.raises(KafkaControlError) as exists:
        control.create_topic(topic, 2)
    assert (exists.value.status, exists.value.code) == (409, ErrorCode.TOPIC_ALREADY_EXISTS)
    control.create_topic(topic, 2, exist_ok=True)
    with pytest.raises(KafkaControlError) as unknown:
        control.broker_down(42)
    assert unknown.value.status == 404
    assert control.health()["brokers"] == 3


def test_component_lifecycle(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A second stack: healthy after start, env published, and a clean exit on stop."""
    ctx = _new_ctx(tmp_path_factory)
    component = KafkaMockComponent()
    settings = component.start(ctx)
    pid = procs.read_pid(ctx.run_dir, "kafka")
    try:
        assert pid is not None
        assert component.healthy(ctx, settings)
        assert set(component.env(settings)) == {
            "SPATIALJOIN_KAFKA_BOOTSTRAP",
            "SPATIALJOIN_KAFKA_CONTROL",
        }
        assert all(host.startswith("127.0.0.1:") for host in settings["bootstrap"].split(","))
    finally:
        component.stop(ctx)
    assert pid is not None and not procs.pid_alive(pid)
    ports = [int(hostport.rsplit(":", 1)[1]) for hostport in settings["bootstrap"].split(",")]
    assert not any(procs.port_open(port) for port in ports)
    log = (ctx.run_dir / "kafka.log").read_text()
    assert "kafka mock stopped: cluster destroyed" in log
