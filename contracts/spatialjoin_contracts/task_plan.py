"""From a job and its pool to the task messages: one per selected partition.

Pure: the operator calls it to queue a job, tests call it to feed workers.
"""

from __future__ import annotations

from datetime import datetime

from .models import ContractVersion, SpatialJoinJobSpec, WorkerPoolSpec
from .models.job import OutputSpec
from .partition_map import selected_partitions, task_bbox
from .result_schema import result_uri
from .task_message import TASK_MESSAGE_VERSION, JobIdentity, TaskMessage, TaskOutput


def plan_tasks(
    job: SpatialJoinJobSpec,
    pool: WorkerPoolSpec,
    identity: JobIdentity,
    *,
    enqueued_at: datetime,
    contract: ContractVersion | None = None,
    attempt: int = 1,
) -> list[TaskMessage]:
    """Tasks for the job's partitions, in partitionMap order.

    ``contract`` is the contract in force (the pool's status.activeContract after
    a rollback); absent, the job's output.contract.  Partitions whose bbox the
    job's extra bbox misses are left out: they have nothing to join.
    """
    trace_id = job.effective_trace_id(identity.uid)
    tasks = []
    for entry in selected_partitions(job, pool):
        bbox = task_bbox(entry, job)
        if bbox is None:
            continue
        tasks.append(
            TaskMessage(
                version=TASK_MESSAGE_VERSION,
                trace_id=trace_id,
                job=identity,
                partition_key=entry.name,
                kafka_partition=entry.kafka_partition,
                bbox=bbox,
                source=job.source,
                output=_output(job.output, trace_id, entry.name, contract),
                attempt=attempt,
                enqueued_at=enqueued_at,
            )
        )
    return tasks


def _output(
    spec: OutputSpec, trace_id: str, partition: str, contract: ContractVersion | None
) -> TaskOutput:
    return TaskOutput(
        uri=result_uri(spec.uri_prefix, trace_id, partition),
        contract=contract or spec.contract,
        compression=spec.compression,
    )
