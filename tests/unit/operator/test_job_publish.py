"""Publishing reports exactly what the broker acknowledged; the job metrics count phases."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from spatialjoin_contracts import samples
from spatialjoin_contracts.models import SpatialJoinJobSpec, WorkerPoolSpec
from spatialjoin_contracts.models.job import JobPhase
from spatialjoin_contracts.task_message import JobIdentity, TaskMessage, decode
from spatialjoin_contracts.task_plan import plan_tasks
from spatialjoin_operator.job_metrics import JobMetrics
from spatialjoin_operator.job_publish import publish_tasks

pytestmark = pytest.mark.unit


class Message:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def key(self) -> bytes:
        return self._key


class FakeProducer:
    """Acknowledges, refuses, rejects or never answers, per partition key."""

    def __init__(self, *, refuse: Iterable[str] = (), reject: Iterable[str] = (),
                 silent: Iterable[str] = ()) -> None:
        self.refuse, self.reject, self.silent = set(refuse), set(reject), set(silent)
        self.sent: list[dict[str, Any]] = []
        self._pending: list[tuple[bytes, Any]] = []
        self.purged = False

    def produce(self, topic: str, value: bytes, key: bytes, partition: int, on_delivery: Any,
                headers: list[tuple[str, bytes]]) -> None:
        if key.decode() in self.refuse:
            raise BufferError("Local: Queue full")
        self.sent.append({"topic": topic, "key": key, "value": value, "partition": partition,
                          "headers": headers})
        self._pending.append((key, on_delivery))

    def flush(self, timeout: float = 0) -> int:
        waiting = []
        for key, callback in self._pending:
            if key.decode() in self.silent and not self.purged:
                waiting.append((key, callback))
            elif key.decode() in self.silent:
                callback("Local: Purged in queue", Message(key))
            elif key.decode() in self.reject:
                callback("Broker: Not enough in-sync replicas", Message(key))
            else:
                callback(None, Message(key))
        self._pending = waiting
        return len(waiting)

    def purge(self, in_queue: bool = True, in_flight: bool = True,
              blocking: bool = True) -> None:
        self.purged = True


def tasks(partitions: list[str] | None = None) -> list[TaskMessage]:
    job = SpatialJoinJobSpec.model_validate(samples.job_spec(partitions=partitions))
    pool = WorkerPoolSpec.model_validate(samples.pool_spec())
    return plan_tasks(job, pool, JobIdentity(namespace="ns", name="job", uid="uid-1"),
                      enqueued_at=datetime(2025, 1, 1, tzinfo=UTC))


def test_every_task_goes_to_its_domain_partition_and_is_reported() -> None:
    producer = FakeProducer()
    report = publish_tasks(cast(Producer, producer), "tasks", tasks())
    assert sorted(report.delivered) == [f"p{i:02d}" for i in range(12)]
    assert report.failed == {}
    assert [m["partition"] for m in producer.sent] == list(range(12))
    first = decode(producer.sent[0]["value"], producer.sent[0]["headers"])
    assert (first.partition_key, first.attempt, first.trace_id) == ("p00", 1, "uid-1")


@pytest.mark.parametrize(("producer", "failed", "purged"), [
    (FakeProducer(refuse={"p01"}), {"p01": "BufferError: Local: Queue full"}, False),
    (FakeProducer(reject={"p02"}), {"p02": "Broker: Not enough in-sync replicas"}, False),
    (FakeProducer(silent={"p00"}), {"p00": "Local: Purged in queue"}, True),
])
def test_what_the_broker_did_not_acknowledge_is_reported_failed(
        producer: FakeProducer, failed: dict[str, str], purged: bool) -> None:
    report = publish_tasks(cast(Producer, producer), "tasks", tasks(["p00", "p01", "p02"]),
                           timeout_s=0.01)
    assert report.failed == failed
    assert sorted(report.delivered) == sorted({"p00", "p01", "p02"} - set(failed))
    assert producer.purged is purged


def test_jobs_by_phase_gauge_follows_each_job() -> None:
    registry = CollectorRegistry()
    metrics = JobMetrics(registry)

    def count(phase: JobPhase) -> float | None:
        return registry.get_sample_value("spatialjoin_operator_jobs", {"phase": phase.value})

    metrics.job_phase("a", JobPhase.RUNNING)
    metrics.job_phase("b", JobPhase.RUNNING)
    assert count(JobPhase.RUNNING) == 2
    metrics.job_phase("a", JobPhase.SUCCEEDED)
    assert (count(JobPhase.RUNNING), count(JobPhase.SUCCEEDED)) == (1, 1)
    metrics.forget("b")
    assert count(JobPhase.RUNNING) == 0
    metrics.finished(JobPhase.SUCCEEDED, 42.0)
    assert registry.get_sample_value("spatialjoin_operator_job_duration_seconds_count",
                                     {"outcome": "Succeeded"}) == 1
    metrics.sla_breaches.inc()
    metrics.reconcile_errors.labels(handler="timer", reason="OperationalError").inc()
    assert registry.get_sample_value("spatialjoin_operator_job_sla_breaches_total") == 1
    assert registry.get_sample_value("spatialjoin_operator_job_reconcile_errors_total",
                                     {"handler": "timer", "reason": "OperationalError"}) == 1
