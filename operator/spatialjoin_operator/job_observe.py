"""Read-only gathering for a job: its WorkerPool and the pool's Secrets from the apiserver,
its partitions from spatial_async_jobs and spatial_join_results.

The rows come from one statement (a full join of the two tables on the job's
traceId), so that a partition the worker marked 'done' and its result row are
seen together: the worker writes both in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from psycopg_pool import ConnectionPool

from spatialjoin_contracts import api
from spatialjoin_contracts.ddl import JOBS_TABLE, RESULTS_TABLE, TaskStatus
from spatialjoin_contracts.models import ContractVersion, WorkerPoolSpec
from spatialjoin_contracts.models.pool import SecretKeySelector
from spatialjoin_contracts.validation import check_pool_spec

from .connections import kube_api_client, read_secret_key
from .job_facts import Blocked, Blocker, Observation, PartitionRow, ResultRow

DB_TIMEOUT_S: Final = 10.0
KUBE_TIMEOUT_S: Final = 10


def custom_api() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api_client())


def core_api() -> client.CoreV1Api:
    return client.CoreV1Api(kube_api_client())


@dataclass(frozen=True)
class PoolContext:
    """The parts of a WorkerPool a job needs: its spec and its contract in force."""

    spec: WorkerPoolSpec
    active_contract: ContractVersion | None


def resolve_pool(namespace: str, name: str) -> PoolContext | Blocked:
    """The job's WorkerPool, or why the job has to wait for it."""
    try:
        obj = cast(Mapping[str, Any], custom_api().get_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.POOL_PLURAL, name,
            _request_timeout=KUBE_TIMEOUT_S))
    except ApiException as exc:
        if exc.status == 404:
            return Blocked(Blocker.WORKER_POOL_NOT_FOUND,
                           f"WorkerPool {name!r} not found in namespace {namespace!r}; "
                           "waiting for it")
        raise
    spec, errors = check_pool_spec(obj.get("spec") or {})
    if spec is None or errors:
        return Blocked(Blocker.WORKER_POOL_INVALID, f"WorkerPool {name!r} is invalid: "
                       + "; ".join(e.message for e in errors))
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if annotations.get(api.PAUSED_FOR_RESTORE_ANNOTATION):
        return Blocked(Blocker.POOL_PAUSED_FOR_RESTORE,
                       f"WorkerPool {name!r} is paused while its results are restored "
                       f"({annotations[api.PAUSED_FOR_RESTORE_ANNOTATION]}); waiting")
    contract = (obj.get("status") or {}).get("activeContract")
    return PoolContext(spec, ContractVersion(contract) if contract else None)


def database_url(pool: WorkerPoolSpec, namespace: str) -> str:
    """The pool's database URL from its Secret; SecretMissing when it is not there (yet)."""
    return read_secret_key(core_api(), namespace, pool.database.url_secret_ref)


def storage_keys(pool: WorkerPoolSpec, namespace: str) -> tuple[str, str]:
    """(access key id, secret access key) from the pool's storage Secret."""
    name, core = pool.storage.secret_ref.name, core_api()
    return (read_secret_key(core, namespace,
                            SecretKeySelector(name=name, key="AWS_ACCESS_KEY_ID")),
            read_secret_key(core, namespace,
                            SecretKeySelector(name=name, key="AWS_SECRET_ACCESS_KEY")))

_QUERY: Final = f"""
SELECT coalesce(j.partition_key, r.partition_key), j.status, j.attempt, j.job_id, j.worker,
       j.queued_at, j.started_at, j.finished_at, j.updated_at, j.rows, j.bytes,
       j.failure_kind, j.error_log,
       r.result_uri, r.checksum_sha256, r.rows, r.bytes, r.contract
FROM (SELECT * FROM {JOBS_TABLE} WHERE trace_id = %(trace)s) AS j
FULL JOIN (SELECT * FROM {RESULTS_TABLE} WHERE trace_id = %(trace)s) AS r
    ON r.partition_key = j.partition_key
"""


def observe(db: ConnectionPool, trace_id: str) -> Observation:
    """Every row and result of ``trace_id``, keyed by partition name."""
    with db.connection(timeout=DB_TIMEOUT_S) as conn:
        records = conn.execute(_QUERY, {"trace": trace_id}).fetchall()
    rows: dict[str, PartitionRow] = {}
    results: dict[str, ResultRow] = {}
    for record in records:
        name = str(record[0])
        if record[1] is not None:
            rows[name] = _partition_row(name, record)
        if record[14] is not None:
            results[name] = ResultRow(partition=name, uri=record[13], sha256=str(record[14]),
                                      rows=int(record[15]), bytes=int(record[16]),
                                      contract=str(record[17]))
    return Observation(rows=rows, results=results)


def _partition_row(name: str, record: tuple[Any, ...]) -> PartitionRow:
    return PartitionRow(
        partition=name, status=TaskStatus(record[1]), attempt=int(record[2]),
        job_id=str(record[3]), worker=record[4], queued_at=record[5], started_at=record[6],
        finished_at=record[7], updated_at=record[8], rows=record[9], bytes=record[10],
        failure_kind=record[11], error=record[12])
