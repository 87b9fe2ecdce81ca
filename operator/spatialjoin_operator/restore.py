"""Disaster recovery: rebuild spatial_join_results (and the done state) from the result objects.

``spatialjoin restore --from s3://bucket/prefix`` runs :func:`restore`:

1. pause the named WorkerPools (annotation :data:`PAUSE_ANNOTATION`, which the
   operator honours: no workers consume and no task is published while it is set);
2. recreate the bookkeeping tables if they are gone (the migration ledger
   still says they exist, so the idempotent DDL is run again);
3. for each object under the prefix: hash it (SHA-256 of the whole object, as
   the worker does), read its footer (traceId, partition, contract, rows),
   validate it, decide (restore_plan.decide) and write idempotently: the insert
   is ON CONFLICT (trace_id, partition_key) DO NOTHING, so a worker that wins
   a race, or a second restore, changes nothing;
4. report what was restored, skipped and inconsistent, and the partitions
   marked done whose result is nowhere (optionally re-queued);
5. resume the pools (remove the annotation), unless the restore failed: then
   they stay paused until someone looks.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final, cast

import psycopg
import pyarrow.parquet as pq
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pyarrow import fs

from spatialjoin_contracts import api
from spatialjoin_contracts.contract_validator import validate_metadata
from spatialjoin_contracts.ddl import JOBS_TABLE, RESULTS_TABLE, migrate, migration_statements
from spatialjoin_contracts.models import ContractVersion
from spatialjoin_contracts.result_schema import KEY_CONTRACT, decode_metadata

from .conditions import rfc3339
from .diagnose.kube import effective_trace_id
from .restore_plan import (
    Action,
    Decision,
    LostPartition,
    ObjectFacts,
    RecordedResult,
    RestoreReport,
    decide,
    key_parts,
    lost_partitions,
)

PAUSE_ANNOTATION: Final = api.PAUSED_FOR_RESTORE_ANNOTATION
"""On a WorkerPool: a restore is rebuilding the result tables; value ``RESTORE_ID at TIME
by HOST``. While set, the pool runs no workers and the job timers publish nothing."""
READ_CHUNK: Final = 4 << 20
READ_THREADS: Final = 4
KUBE_TIMEOUT_S: Final = 10

Conn = psycopg.Connection[Any]
Progress = Callable[[int, int], None]
"""Called with (objects decided, objects listed)."""
PoolRef = tuple[str, str]


# --- storage ----------------------------------------------------------------------------


def s3_filesystem(*, endpoint: str | None, access_key: str | None, secret_key: str | None,
                  region: str = "us-east-1", path_style: bool = True) -> fs.S3FileSystem:
    """An S3 client for an endpoint URL (http[s]://host:port) or AWS when None."""
    options: dict[str, Any] = {"access_key": access_key, "secret_key": secret_key,
                               "region": region, "connect_timeout": 5, "request_timeout": 60}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        options.update(endpoint_override=host.rstrip("/"), scheme=scheme or "https",
                       force_virtual_addressing=not path_style)
    return fs.S3FileSystem(**options)


def list_objects(filesystem: fs.FileSystem, source: str) -> list[tuple[str, int]]:
    """(s3:// URI, size) of every object under ``source``, in key order."""
    path = source.removeprefix("s3://").rstrip("/")
    infos = filesystem.get_file_info(fs.FileSelector(path, recursive=True, allow_not_found=True))
    return sorted((f"s3://{info.path}", int(info.size or 0)) for info in infos
                  if info.type == fs.FileType.File)


def read_object(filesystem: fs.FileSystem, uri: str, size: int) -> ObjectFacts:
    """Hash the whole object and read its footer; errors become ``ObjectFacts.error``."""
    if key_parts(uri) is None:
        return ObjectFacts(uri=uri, size=size)
    path = uri.removeprefix("s3://")
    try:
        digest = hashlib.sha256()
        with filesystem.open_input_stream(path) as stream:
            while chunk := stream.read(READ_CHUNK):
                digest.update(chunk)
        with filesystem.open_input_file(path) as handle:
            footer = pq.read_metadata(handle)
    except Exception as exc:  # a truncated or foreign object: pyarrow raises several kinds
        return ObjectFacts(uri=uri, size=size, error=f"{type(exc).__name__}: {exc}")
    metadata = decode_metadata(footer.metadata)
    deviations: tuple[str, ...] = ()
    try:
        contract = ContractVersion(metadata.get(KEY_CONTRACT, ""))
    except ValueError:
        pass  # decide() names the bad contract
    else:
        trace, partition = key_parts(uri) or (None, None)
        deviations = tuple(str(d) for d in validate_metadata(
            footer, contract, trace_id=trace, partition_key=partition))
    return ObjectFacts(uri=uri, size=size, sha256=digest.hexdigest(), metadata=metadata,
                       footer_rows=int(footer.num_rows), deviations=deviations)


# --- database ---------------------------------------------------------------------------


def ensure_tables(conn: Conn) -> list[str]:
    """Create the bookkeeping tables that are missing; return their names.

    ``ddl.migrate`` alone would not: its ledger still records the migration.
    Every DDL statement is idempotent (IF NOT EXISTS), so running them again
    under the migration lock recreates only what was lost.
    """
    # In the schema tables are created in (the first of search_path), not anywhere
    # on the path: a same-named table further along must not hide the loss.
    missing = [name for name in (JOBS_TABLE, RESULTS_TABLE) if conn.execute(
        "SELECT to_regclass(quote_ident(current_schema()) || '.' || %s)", (name,)
    ).fetchone() == (None,)]
    with conn.transaction(), conn.cursor() as cur:
        migrate(cur)
        if missing:
            for statement in migration_statements():
                cur.execute(statement)
    return missing


def _recorded(conn: Conn, keys: Sequence[tuple[str, str]]
              ) -> tuple[dict[tuple[str, str], RecordedResult], dict[tuple[str, str], str]]:
    if not keys:
        return {}, {}
    traces = sorted({t for t, _ in keys})
    results = {(r[0], r[1]): RecordedResult(r[2], r[3], int(r[4])) for r in conn.execute(
        f"SELECT trace_id, partition_key, result_uri, checksum_sha256, rows FROM {RESULTS_TABLE} "
        "WHERE trace_id = ANY(%s)", (traces,)).fetchall()}
    statuses = {(r[0], r[1]): str(r[2]) for r in conn.execute(
        f"SELECT trace_id, partition_key, status FROM {JOBS_TABLE} WHERE trace_id = ANY(%s)",
        (traces,)).fetchall()}
    return results, statuses


def apply(conn: Conn, decision: Decision, job_uid: str | None) -> Decision:
    """Write one decision in one transaction; a lost race turns into skip or inconsistent."""
    if decision.action not in (Action.RESTORE, Action.MARK_DONE):
        return decision
    key = (decision.trace_id, decision.partition)
    with conn.transaction():
        if decision.action is Action.RESTORE:
            inserted = conn.execute(
                f"INSERT INTO {RESULTS_TABLE} (trace_id, partition_key, result_uri, "
                "checksum_sha256, contract, rows, bytes) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (trace_id, partition_key) DO NOTHING",
                (*key, decision.uri, decision.sha256, decision.contract, decision.rows,
                 decision.bytes)).rowcount
            if inserted == 0:
                row = conn.execute(f"SELECT checksum_sha256 FROM {RESULTS_TABLE} WHERE "
                                   "trace_id = %s AND partition_key = %s", key).fetchone()
                if row is None or row[0] != decision.sha256:
                    return replace(decision, action=Action.INCONSISTENT,
                                   reason=f"a result row with checksum {row and row[0]} "
                                          "appeared meanwhile")
                decision = replace(decision, action=Action.SKIP,
                                   reason="recorded meanwhile (by a worker) with the same "
                                          "checksum")
        if decision.mark_done:
            _mark_done(conn, decision, job_uid)
    return decision


def _mark_done(conn: Conn, decision: Decision, job_uid: str | None) -> None:
    updated = conn.execute(
        f"UPDATE {JOBS_TABLE} SET status = 'done', rows = %s, bytes = %s, contract = %s, "
        "finished_at = coalesce(finished_at, now()), updated_at = now(), error_log = NULL, "
        "failure_kind = NULL WHERE trace_id = %s AND partition_key = %s "
        "AND status NOT IN ('done', 'cancelled')",
        (decision.rows, decision.bytes, decision.contract, decision.trace_id,
         decision.partition)).rowcount
    if updated == 0:
        # No row at all (the jobs table was lost too): register it as done. attempt 1:
        # the task was published once. job_id is the job's uid when Kubernetes knows it.
        conn.execute(
            f"INSERT INTO {JOBS_TABLE} (job_id, trace_id, partition_key, contract, status, "
            "attempt, rows, bytes, started_at, finished_at, updated_at) "
            "VALUES (%s, %s, %s, %s, 'done', 1, %s, %s, NULL, now(), now()) "
            "ON CONFLICT (trace_id, partition_key) DO NOTHING",
            (job_uid or "", decision.trace_id, decision.partition, decision.contract,
             decision.rows, decision.bytes))


def _done_without_result(conn: Conn, traces: Sequence[str]) -> list[tuple[str, str, str]]:
    return [(str(r[0]), str(r[1]), str(r[2])) for r in conn.execute(
        f"SELECT j.trace_id, j.partition_key, j.job_id FROM {JOBS_TABLE} AS j "
        f"LEFT JOIN {RESULTS_TABLE} AS r USING (trace_id, partition_key) "
        "WHERE j.status = 'done' AND r.trace_id IS NULL AND j.trace_id = ANY(%s) "
        "ORDER BY 1, 2", (list(traces),)).fetchall()]


def requeue(conn: Conn, lost: Sequence[LostPartition]) -> list[LostPartition]:
    """Move lost partitions back to (queued, attempt 0): the job timer publishes them again."""
    requeued = []
    for part in lost:
        moved = conn.execute(
            f"UPDATE {JOBS_TABLE} SET status = 'queued', attempt = 0, worker = NULL, "
            "started_at = NULL, finished_at = NULL, rows = NULL, bytes = NULL, "
            "updated_at = now(), error_log = concat_ws(E'\\n', error_log, "
            "'restore: result lost in storage and tables; re-queued') "
            "WHERE trace_id = %s AND partition_key = %s AND status = 'done'",
            (part.trace_id, part.partition)).rowcount
        if moved:
            requeued.append(part)
    return requeued


# --- the restore ------------------------------------------------------------------------


def restore(source: str, *, database_url: str, filesystem: fs.FileSystem,
            references: Mapping[tuple[str, str], Sequence[tuple[str, str]]] | None = None,
            job_uids: Mapping[str, str] | None = None, trace_ids: Sequence[str] = (),
            dry_run: bool = False, requeue_lost: bool = False,
            progress: Progress | None = None) -> RestoreReport:
    """Rebuild the result rows of every object under ``source``; see the module docstring.

    ``references``: checksums on record elsewhere per (trace, partition), as
    (where, sha256); ``job_uids``: traceId → SpatialJoinJob uid, for rows that
    must be registered anew; ``trace_ids``: restore only these.
    """
    report = RestoreReport(source=source, dry_run=dry_run)
    wanted = set(trace_ids)
    objects = [(uri, size) for uri, size in list_objects(filesystem, source)
               if not wanted or (key_parts(uri) or ("", ""))[0] in wanted]
    with psycopg.connect(database_url, autocommit=True,
                         application_name="spatialjoin-restore") as conn:
        if not dry_run:
            report.tables_recreated = ensure_tables(conn)
        if progress is not None:
            progress(0, len(objects))
        with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="sj-restore") as pool:
            facts = list(pool.map(lambda o: read_object(filesystem, *o), objects))
        keys = [parts for f in facts if (parts := key_parts(f.uri)) is not None]
        recorded, statuses = _recorded_or_empty(conn, keys)
        for obj in facts:
            parts = key_parts(obj.uri)
            decision = decide(obj, recorded.get(parts) if parts else None,
                              statuses.get(parts) if parts else None,
                              (references or {}).get(parts, ()) if parts else ())
            if not dry_run:
                decision = apply(conn, decision, (job_uids or {}).get(decision.trace_id or ""))
            report.decisions.append(decision)
            if progress is not None:
                progress(len(report.decisions), len(objects))
        traces = sorted(wanted or {t for t, _ in keys})
        restorable = {(d.trace_id or "", d.partition or "") for d in report.decisions
                      if d.action in (Action.RESTORE, Action.MARK_DONE, Action.SKIP)}
        done_rows = _done_rows_or_empty(conn, traces)
        report.lost = lost_partitions(done_rows, restorable)
        if requeue_lost and not dry_run:
            report.requeued = requeue(conn, report.lost)
    return report


def _recorded_or_empty(conn: Conn, keys: Sequence[tuple[str, str]]
                       ) -> tuple[dict[tuple[str, str], RecordedResult],
                                  dict[tuple[str, str], str]]:
    """In a dry run the tables may be missing: then nothing is on record."""
    try:
        return _recorded(conn, keys)
    except psycopg.errors.UndefinedTable:
        return {}, {}


def _done_rows_or_empty(conn: Conn, traces: Sequence[str]) -> list[tuple[str, str, str]]:
    try:
        return _done_without_result(conn, traces)
    except psycopg.errors.UndefinedTable:
        return []


# --- Kubernetes: checksums on record, and pausing the pools -----------------------------


def job_records(kube_api: client.ApiClient
                ) -> tuple[dict[tuple[str, str], list[tuple[str, str]]], dict[str, str]]:
    """status.results[].sha256 of every SpatialJoinJob, and traceId → uid."""
    listing = cast(Mapping[str, Any], client.CustomObjectsApi(kube_api).list_cluster_custom_object(
        api.GROUP, api.VERSION, api.JOB_PLURAL, _request_timeout=KUBE_TIMEOUT_S))
    references: dict[tuple[str, str], list[tuple[str, str]]] = {}
    uids: dict[str, str] = {}
    for item in listing.get("items", []):
        meta, status = item["metadata"], item.get("status") or {}
        trace = effective_trace_id(item)
        uids[trace] = str(meta["uid"])
        where = f"SpatialJoinJob {meta['namespace']}/{meta['name']} status.results"
        for result in status.get("results") or []:
            if result.get("partition") and result.get("sha256"):
                references.setdefault((trace, str(result["partition"])), []).append(
                    (where, str(result["sha256"])))
    return references, uids


def all_pools(kube_api: client.ApiClient) -> list[PoolRef]:
    listing = cast(Mapping[str, Any], client.CustomObjectsApi(kube_api).list_cluster_custom_object(
        api.GROUP, api.VERSION, api.POOL_PLURAL, _request_timeout=KUBE_TIMEOUT_S))
    return sorted((i["metadata"]["namespace"], i["metadata"]["name"])
                  for i in listing.get("items", []))


def pause_value(restore_id: str, now: datetime) -> str:
    return f"{restore_id} at {rfc3339(now)} by {socket.gethostname()}"


def _annotate(kube_api: client.ApiClient, pool: PoolRef, value: str | None) -> None:
    client.CustomObjectsApi(kube_api).patch_namespaced_custom_object(
        api.GROUP, api.VERSION, pool[0], api.POOL_PLURAL, pool[1],
        {"metadata": {"annotations": {PAUSE_ANNOTATION: value}}},
        _request_timeout=KUBE_TIMEOUT_S)


def pause(kube_api: client.ApiClient, pools: Sequence[PoolRef], restore_id: str,
          now: datetime | None = None) -> None:
    value = pause_value(restore_id, now or datetime.now(UTC))
    for pool in pools:
        _annotate(kube_api, pool, value)


def resume(kube_api: client.ApiClient, pools: Sequence[PoolRef], restore_id: str) -> list[str]:
    """Remove the annotation where it is still ours; return the pools left paused by another."""
    others = []
    custom = client.CustomObjectsApi(kube_api)
    for pool in pools:
        try:
            body = cast(Mapping[str, Any], custom.get_namespaced_custom_object(
                api.GROUP, api.VERSION, pool[0], api.POOL_PLURAL, pool[1],
                _request_timeout=KUBE_TIMEOUT_S))
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise
        value = ((body["metadata"].get("annotations") or {}).get(PAUSE_ANNOTATION) or "")
        if value and not value.startswith(f"{restore_id} "):
            others.append(f"{pool[0]}/{pool[1]}")
            continue
        _annotate(kube_api, pool, None)
    return others


@contextmanager
def pools_paused(kube_api: client.ApiClient | None, pools: Sequence[PoolRef], restore_id: str,
                 *, keep_paused: bool = False) -> Iterator[list[str]]:
    """Pause ``pools`` for the block; resume them after it unless it raised (or asked)."""
    if kube_api is None or not pools:
        yield []
        return
    pause(kube_api, pools, restore_id)
    yield [f"{ns}/{name}" for ns, name in pools]
    if not keep_paused:
        resume(kube_api, pools, restore_id)
