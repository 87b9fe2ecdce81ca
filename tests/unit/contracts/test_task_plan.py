"""plan_tasks: one task per selected partition, with the right envelope, URI and contract."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from spatialjoin_contracts import samples
from spatialjoin_contracts.models import ContractVersion, SpatialJoinJobSpec, WorkerPoolSpec
from spatialjoin_contracts.task_message import JobIdentity, decode, encode
from spatialjoin_contracts.task_plan import plan_tasks

pytestmark = pytest.mark.unit

POOL = WorkerPoolSpec.model_validate(samples.pool_spec())
IDENTITY = JobIdentity(namespace="ns", name="job-a", uid="uid-1")
NOW = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def _plan(**job: Any) -> list[Any]:
    spec = SpatialJoinJobSpec.model_validate(samples.job_spec(**job))
    return plan_tasks(spec, POOL, IDENTITY, enqueued_at=NOW)


def test_all_partitions_by_default_each_on_its_kafka_partition() -> None:
    tasks = _plan()
    assert [t.partition_key for t in tasks] == [f"p{i:02d}" for i in range(12)]
    assert [t.kafka_partition for t in tasks] == list(range(12))
    assert {t.trace_id for t in tasks} == {"uid-1"}  # traceId defaults to the uid
    assert tasks[3].output.uri == "s3://spatialjoin-results/jobs/uid-1/p03.parquet"
    assert all(t.attempt == 1 and t.enqueued_at == NOW for t in tasks)


def test_selected_partitions_trace_id_and_bbox_cut() -> None:
    tasks = _plan(
        traceId="run-9",
        partitions=["p05", "p00", "p11"],
        bbox={"minLon": -120, "minLat": 30, "maxLon": -100, "maxLat": 40},
    )
    # p11 (north-east) misses the bbox: nothing to join there.
    assert [t.partition_key for t in tasks] == ["p00", "p05"]
    assert tasks[0].bbox.as_tuple() == (-120.0, 30.0, -110.0, 33.0)
    assert tasks[1].bbox.as_tuple() == (-110.0, 33.0, -100.0, 40.0)
    assert tasks[1].output.uri.endswith("/run-9/p05.parquet")


def test_contract_in_force_overrides_the_requested_one() -> None:
    spec = SpatialJoinJobSpec.model_validate(samples.job_spec())
    tasks = plan_tasks(
        spec, POOL, IDENTITY, enqueued_at=NOW, contract=ContractVersion.V2_0, attempt=2
    )
    assert {t.output.contract for t in tasks} == {ContractVersion.V2_0}
    assert {t.attempt for t in tasks} == {2}


def test_planned_tasks_survive_the_wire() -> None:
    for task in _plan():
        encoded = encode(task)
        assert decode(encoded.value, encoded.headers) == task


def test_naive_enqueue_times_are_refused() -> None:
    spec = SpatialJoinJobSpec.model_validate(samples.job_spec())
    with pytest.raises(ValidationError):
        plan_tasks(spec, POOL, IDENTITY, enqueued_at=datetime(2024, 5, 1))
